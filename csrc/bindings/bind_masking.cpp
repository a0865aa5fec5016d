#include <vector>

#include "buffers.hpp"
#include "securefl/masking.hpp"

namespace securefl::bindings {
namespace {

template <class T>
void accumulate(py::array& acc, const py::array& keys, const py::array& signs,
                unsigned bits, unsigned threads, aes::Backend backend) {
  auto* a = static_cast<T*>(acc.mutable_data());
  const auto len = static_cast<std::size_t>(acc.size());
  const auto* k = static_cast<const std::uint8_t*>(keys.data());
  const auto* s = static_cast<const std::int8_t*>(signs.data());
  const auto nkeys = static_cast<std::size_t>(signs.size());
  py::gil_scoped_release release;
  masking::masked_accumulate<T>(a, len, k, s, nkeys, bits, threads, backend);
}

template <class T>
void sum_inputs(const std::vector<py::array>& inputs, py::array& out, unsigned bits,
                unsigned threads) {
  std::vector<const T*> ptrs;
  for (const auto& a : inputs) ptrs.push_back(static_cast<const T*>(a.data()));
  auto* o = static_cast<T*>(out.mutable_data());
  const auto len = static_cast<std::size_t>(out.size());
  py::gil_scoped_release release;
  masking::sum_mod<T>(ptrs.data(), ptrs.size(), len, o, bits, threads);
}


template <class T>
py::bytes pack(const py::array& in, unsigned bits) {
  const auto* data = static_cast<const T*>(in.data());
  const auto n = static_cast<std::size_t>(in.size());
  masking::check_bits<T>(bits);
  std::string out(masking::packed_size(n, bits), '\0');
  {
    py::gil_scoped_release release;
    masking::pack_bits<T>(data, n, bits, reinterpret_cast<std::uint8_t*>(out.data()));
  }
  return py::bytes(out);
}

template <class T>
py::array unpack(const py::buffer_info& info, std::size_t n, unsigned bits) {
  masking::check_bits<T>(bits);
  if (static_cast<std::size_t>(info.size * info.itemsize) != masking::packed_size(n, bits))
    throw py::value_error("packed vector of " + std::to_string(n) + " elements of " +
                          std::to_string(bits) + " bits needs " +
                          std::to_string(masking::packed_size(n, bits)) + " bytes, got " +
                          std::to_string(info.size * info.itemsize));
  py::array_t<T> out(static_cast<py::ssize_t>(n));
  const auto* src = static_cast<const std::uint8_t*>(info.ptr);
  T* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    masking::unpack_bits<T>(src, n, bits, dst);
  }
  return std::move(out);
}

}  // namespace

void bind_masking(py::module_& m) {
  m.def(
      "pack_bits",
      [](const py::handle& in_obj, unsigned bits) {
        const py::array in = require_array(in_obj, "words");
        require_c_contiguous(in, "words");
        if (has_dtype<std::uint32_t>(in)) return pack<std::uint32_t>(in, bits);
        if (has_dtype<std::uint64_t>(in)) return pack<std::uint64_t>(in, bits);
        throw py::type_error("words must have dtype uint32 or uint64, got " + dtype_str(in));
      },
      py::arg("words"), py::arg("bits"),
      "Pack ring elements into ceil(n * bits / 8) bytes, least significant bit first.");
  m.def(
      "unpack_bits",
      [](const py::buffer& data, std::size_t count, unsigned bits) -> py::array {
        const py::buffer_info info = data.request();
        if (info.ndim > 1 || (info.ndim == 1 && info.strides[0] != info.itemsize))
          throw py::value_error("packed data must be contiguous bytes");
        if (bits <= 32) return unpack<std::uint32_t>(info, count, bits);
        return unpack<std::uint64_t>(info, count, bits);
      },
      py::arg("data"), py::arg("count"), py::arg("bits"),
      "Inverse of pack_bits: uint32 elements for bits <= 32, uint64 above.");

  m.def(
      "masked_accumulate",
      [](const py::handle& acc_obj, const py::handle& keys_obj, const py::handle& signs_obj,
         unsigned bits, unsigned threads, const std::string& backend_name) {
        py::array acc = require_array(acc_obj, "acc");
        const py::array keys = require_array(keys_obj, "keys");
        const py::array signs = require_array(signs_obj, "signs");
        require_c_contiguous(acc, "acc");
        require_writeable(acc, "acc");
        if (!has_dtype<std::uint8_t>(keys) || keys.ndim() != 2 || keys.shape(1) != 16)
          throw py::type_error("keys must be a uint8 array of shape (k, 16)");
        require_c_contiguous(keys, "keys");
        if (!has_dtype<std::int8_t>(signs) || signs.ndim() != 1)
          throw py::type_error("signs must be a 1-D int8 array");
        require_c_contiguous(signs, "signs");
        if (signs.shape(0) != keys.shape(0))
          throw py::value_error("got " + std::to_string(keys.shape(0)) + " keys but " +
                                std::to_string(signs.shape(0)) + " signs");
        const aes::Backend backend = parse_backend(backend_name);
        if (has_dtype<std::uint32_t>(acc))
          accumulate<std::uint32_t>(acc, keys, signs, bits, threads, backend);
        else if (has_dtype<std::uint64_t>(acc))
          accumulate<std::uint64_t>(acc, keys, signs, bits, threads, backend);
        else
          throw py::type_error("acc must have dtype uint32 or uint64, got " + dtype_str(acc));
      },
      py::arg("acc"), py::arg("keys"), py::arg("signs"), py::kw_only(), py::arg("bits"),
      py::arg("threads") = 0, py::arg("backend") = "auto",
      "acc = (acc + sum_j signs[j] * mask(keys[j])) mod 2^bits, in place.");

  m.def(
      "sum_mod",
      [](const py::list& input_objs, const py::handle& out_obj, unsigned bits, unsigned threads) {
        py::array out = require_array(out_obj, "out");
        require_c_contiguous(out, "out");
        require_writeable(out, "out");
        if (input_objs.empty()) throw py::value_error("sum_mod needs at least one input");
        std::vector<py::array> inputs;
        for (std::size_t j = 0; j < input_objs.size(); ++j) {
          const std::string name = "inputs[" + std::to_string(j) + "]";
          py::array a = require_array(input_objs[j], name.c_str());
          if (!a.dtype().equal(out.dtype()))
            throw py::type_error(name + " has dtype " + dtype_str(a) + " but out has " +
                                 dtype_str(out));
          if (a.size() != out.size())
            throw py::value_error(name + " has " + std::to_string(a.size()) +
                                  " elements but out has " + std::to_string(out.size()));
          require_c_contiguous(a, name.c_str());
          inputs.push_back(std::move(a));
        }
        if (has_dtype<std::uint32_t>(out))
          sum_inputs<std::uint32_t>(inputs, out, bits, threads);
        else if (has_dtype<std::uint64_t>(out))
          sum_inputs<std::uint64_t>(inputs, out, bits, threads);
        else
          throw py::type_error("out must have dtype uint32 or uint64, got " + dtype_str(out));
      },
      py::arg("inputs"), py::arg("out"), py::kw_only(), py::arg("bits"), py::arg("threads") = 0,
      "out = (inputs[0] + ... + inputs[n-1]) mod 2^bits; out may be one of the inputs.");
}

}  // namespace securefl::bindings
