// securefl._core: the private native module. Only securefl.primitives imports it.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace securefl::bindings {
void bind_dp(py::module_& m);
void bind_keystream(py::module_& m);
void bind_masking(py::module_& m);
void bind_quantize(py::module_& m);
void bind_rns(py::module_& m);
void bind_shamir(py::module_& m);
}  // namespace securefl::bindings

PYBIND11_MODULE(_core, m) {
  m.doc() = "securefl native core: AES-CTR keystream, masking, quantization, Shamir, RNS sums";
  securefl::bindings::bind_dp(m);
  securefl::bindings::bind_keystream(m);
  securefl::bindings::bind_masking(m);
  securefl::bindings::bind_quantize(m);
  securefl::bindings::bind_rns(m);
  securefl::bindings::bind_shamir(m);
}
