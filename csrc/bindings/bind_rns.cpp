#include <vector>

#include "buffers.hpp"
#include "securefl/rns.hpp"

namespace securefl::bindings {

void bind_rns(py::module_& m) {
  m.def(
      "rns_sum",
      [](const py::list& input_objs, const py::handle& moduli_obj, const py::handle& out_obj,
         unsigned threads) {
        py::array out = require_array(out_obj, "out");
        const py::array moduli = require_array(moduli_obj, "moduli");
        if (!has_dtype<std::uint64_t>(out) || out.ndim() != 3)
          throw py::type_error("out must be a 3-D uint64 array [size][L][N]");
        require_c_contiguous(out, "out");
        require_writeable(out, "out");
        if (!has_dtype<std::uint64_t>(moduli) || moduli.ndim() != 1)
          throw py::type_error("moduli must be a 1-D uint64 array");
        require_c_contiguous(moduli, "moduli");
        const rns::Shape shape{static_cast<std::size_t>(out.shape(0)),
                               static_cast<std::size_t>(out.shape(1)),
                               static_cast<std::size_t>(out.shape(2))};
        if (static_cast<std::size_t>(moduli.shape(0)) != shape.limbs)
          throw py::value_error("got " + std::to_string(moduli.shape(0)) + " moduli for " +
                                std::to_string(shape.limbs) + " limbs");
        if (input_objs.empty()) throw py::value_error("rns_sum needs at least one input");
        std::vector<py::array> inputs;
        std::vector<const std::uint64_t*> ptrs;
        for (std::size_t j = 0; j < input_objs.size(); ++j) {
          const std::string name = "inputs[" + std::to_string(j) + "]";
          py::array a = require_array(input_objs[j], name.c_str());
          if (!has_dtype<std::uint64_t>(a))
            throw py::type_error(name + " must have dtype uint64, got " + dtype_str(a));
          if (a.ndim() != 3 || a.shape(0) != out.shape(0) || a.shape(1) != out.shape(1) ||
              a.shape(2) != out.shape(2))
            throw py::value_error(name + " does not have the shape of out");
          require_c_contiguous(a, name.c_str());
          ptrs.push_back(static_cast<const std::uint64_t*>(a.data()));
          inputs.push_back(std::move(a));
        }
        const auto* q = static_cast<const std::uint64_t*>(moduli.data());
        auto* o = static_cast<std::uint64_t*>(out.mutable_data());
        py::gil_scoped_release release;
        rns::sum(ptrs.data(), ptrs.size(), shape, q, o, threads);
      },
      py::arg("inputs"), py::arg("moduli"), py::arg("out"), py::kw_only(),
      py::arg("threads") = 0,
      "out[s][l][k] = sum_j inputs[j][s][l][k] mod moduli[l]; inputs checked < moduli.");
}

}  // namespace securefl::bindings
