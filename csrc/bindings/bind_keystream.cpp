#include <cstring>
#include <vector>

#include "buffers.hpp"
#include "securefl/parallel.hpp"

namespace securefl::bindings {

void bind_keystream(py::module_& m) {
  m.def(
      "keystream_into",
      [](const py::handle& out_obj, const py::handle& key_obj, const py::handle& counter_obj,
         const std::string& backend_name) {
        py::array out = require_array(out_obj, "out");
        if (!has_dtype<std::uint8_t>(out))
          throw py::type_error("out must have dtype uint8, got " + dtype_str(out));
        require_c_contiguous(out, "out");
        require_writeable(out, "out");
        auto key = require_key(key_obj, "key");
        const auto counter = require_key(counter_obj, "counter_block");
        const aes::Backend backend = aes::resolve_backend(parse_backend(backend_name));
        const aes::RoundKeys rk = aes::expand_key(key.data());
        secure_zero(key.data(), key.size());
        auto* data = static_cast<std::uint8_t*>(out.mutable_data());
        const auto nbytes = static_cast<std::size_t>(out.nbytes());
        py::gil_scoped_release release;
        aes::ctr_keystream(rk, counter.data(), 0, data, nbytes, backend);
      },
      py::arg("out"), py::arg("key"), py::arg("counter_block"), py::arg("backend") = "auto",
      "Fill uint8 array `out` with the AES-128-CTR keystream of `key` starting at the "
      "16-byte big-endian `counter_block`.");

  m.def(
      "available_backends",
      [] {
        std::vector<std::string> names;
        for (aes::Backend b : {aes::Backend::kPortable, aes::Backend::kAesNi,
                               aes::Backend::kVaes256, aes::Backend::kVaes512})
          if (aes::backend_available(b)) names.emplace_back(aes::backend_name(b));
        return names;
      },
      "Names of the AES backends this CPU supports.");
  m.def(
      "default_backend", [] { return aes::backend_name(aes::resolve_backend(aes::Backend::kAuto)); },
      "The backend 'auto' resolves to on this CPU.");
  m.def("available_cores", &available_cores, "Cores in this process's CPU affinity mask.");
}

}  // namespace securefl::bindings
