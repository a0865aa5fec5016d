// Argument checks shared by the bindings: every buffer is validated here, with the
// GIL held, before any kernel touches its memory.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>

#include "securefl/aes.hpp"

namespace securefl::bindings {

namespace py = pybind11;

// Only real numpy arrays: converting a list would make in-place results vanish.
inline py::array require_array(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  return py::reinterpret_borrow<py::array>(obj);
}

template <class T>
bool has_dtype(const py::array& a) {
  // equal() (PyArray_EquivTypes), not is(): an unpickled array has its own dtype object.
  return a.dtype().equal(py::dtype::of<T>());
}

inline std::string dtype_str(const py::array& a) { return std::string(py::str(a.dtype())); }

inline void require_c_contiguous(const py::array& a, const char* name) {
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous");
  // Kernels load whole words: a misaligned view (np.frombuffer at an odd offset) is
  // undefined behaviour in C++ even where the CPU would tolerate it.
  if (a.itemsize() > 1 && reinterpret_cast<std::uintptr_t>(a.data()) % a.itemsize() != 0)
    throw py::value_error(std::string(name) + " must be aligned to its " +
                          std::to_string(a.itemsize()) + "-byte elements");
}

inline void require_writeable(const py::array& a, const char* name) {
  if (!a.writeable()) throw py::value_error(std::string(name) + " must be writeable");
}

// A 16-byte key from any bytes-like object.
inline std::array<std::uint8_t, aes::kKeyBytes> require_key(const py::handle& obj,
                                                           const char* name) {
  if (!PyObject_CheckBuffer(obj.ptr()))
    throw py::type_error(std::string(name) + " must be bytes-like");
  const py::buffer_info info = py::reinterpret_borrow<py::buffer>(obj).request();
  const bool contiguous = info.ndim == 0 || (info.ndim == 1 && info.strides[0] == info.itemsize);
  if (!contiguous || info.size * info.itemsize != static_cast<py::ssize_t>(aes::kKeyBytes))
    throw py::value_error(std::string(name) + " must be exactly 16 bytes, got " +
                          std::to_string(info.size * info.itemsize));
  std::array<std::uint8_t, aes::kKeyBytes> key{};
  std::memcpy(key.data(), info.ptr, aes::kKeyBytes);
  return key;
}

inline aes::Backend parse_backend(const std::string& name) {
  for (aes::Backend b : {aes::Backend::kAuto, aes::Backend::kPortable, aes::Backend::kAesNi,
                         aes::Backend::kVaes256, aes::Backend::kVaes512})
    if (name == aes::backend_name(b)) return b;
  throw py::value_error("unknown AES backend '" + name +
                        "'; expected auto, portable, aesni, vaes256 or vaes512");
}

}  // namespace securefl::bindings
