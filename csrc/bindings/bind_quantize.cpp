#include "buffers.hpp"
#include "securefl/quantize.hpp"

namespace securefl::bindings {
namespace {

quantize::FixedPoint make_config(double clip, unsigned frac_bits, unsigned bits,
                                 std::uint64_t max_summands) {
  return quantize::FixedPoint{clip, frac_bits, bits, max_summands};
}

template <class F, class T>
void run_quantize(const py::array& x, py::array& out, const quantize::FixedPoint& fp,
                  double weight, const std::uint8_t* key, unsigned threads, aes::Backend backend) {
  const auto* xs = static_cast<const F*>(x.data());
  auto* o = static_cast<T*>(out.mutable_data());
  const auto len = static_cast<std::size_t>(x.size());
  py::gil_scoped_release release;
  quantize::quantize<F, T>(xs, len, o, fp, weight, key, threads, backend);
}

template <class F>
void quantize_from(const py::array& x, py::array& out, const quantize::FixedPoint& fp,
                   double weight, const std::uint8_t* key, unsigned threads,
                   aes::Backend backend) {
  if (has_dtype<std::uint32_t>(out))
    run_quantize<F, std::uint32_t>(x, out, fp, weight, key, threads, backend);
  else if (has_dtype<std::uint64_t>(out))
    run_quantize<F, std::uint64_t>(x, out, fp, weight, key, threads, backend);
  else
    throw py::type_error("out must have dtype uint32 or uint64, got " + dtype_str(out));
}

template <class T>
void run_dequantize(const py::array& sum, py::array& out, const quantize::FixedPoint& fp,
                    std::uint64_t summands, unsigned threads) {
  const auto* s = static_cast<const T*>(sum.data());
  auto* o = static_cast<double*>(out.mutable_data());
  const auto len = static_cast<std::size_t>(sum.size());
  py::gil_scoped_release release;
  quantize::dequantize<T>(s, len, o, fp, summands, threads);
}

}  // namespace

void bind_quantize(py::module_& m) {
  m.def(
      "fixed_point_max_level",
      [](double clip, unsigned frac_bits, unsigned bits, std::uint64_t max_summands) {
        return quantize::max_level(make_config(clip, frac_bits, bits, max_summands));
      },
      py::arg("clip"), py::arg("frac_bits"), py::arg("bits"), py::arg("max_summands"),
      "Largest encoding of one value, ceil(2 c 2^p); raises ValueError if n of them can "
      "wrap Z_{2^b}.");

  m.def(
      "quantize_into",
      [](const py::handle& x_obj, const py::handle& out_obj, const py::handle& key_obj,
         double clip, unsigned frac_bits, unsigned bits, std::uint64_t max_summands,
         double weight, unsigned threads, const std::string& backend_name) {
        const py::array x = require_array(x_obj, "x");
        py::array out = require_array(out_obj, "out");
        require_c_contiguous(x, "x");
        require_c_contiguous(out, "out");
        require_writeable(out, "out");
        if (x.size() != out.size())
          throw py::value_error("x has " + std::to_string(x.size()) + " elements but out has " +
                                std::to_string(out.size()));
        auto key = require_key(key_obj, "key");
        const auto fp = make_config(clip, frac_bits, bits, max_summands);
        const aes::Backend backend = parse_backend(backend_name);
        if (has_dtype<float>(x))
          quantize_from<float>(x, out, fp, weight, key.data(), threads, backend);
        else if (has_dtype<double>(x))
          quantize_from<double>(x, out, fp, weight, key.data(), threads, backend);
        else
          throw py::type_error("x must have dtype float32 or float64, got " + dtype_str(x));
        secure_zero(key.data(), key.size());
      },
      py::arg("x"), py::arg("out"), py::arg("key"), py::kw_only(), py::arg("clip"),
      py::arg("frac_bits"), py::arg("bits"), py::arg("max_summands"), py::arg("weight") = 1.0,
      py::arg("threads") = 0, py::arg("backend") = "auto",
      "Fixed-point encode clip(x) * weight into out with stochastic rounding driven by key's "
      "keystream.");

  m.def(
      "dequantize_into",
      [](const py::handle& sum_obj, const py::handle& out_obj, double clip, unsigned frac_bits,
         unsigned bits, std::uint64_t max_summands, std::uint64_t summands, unsigned threads) {
        const py::array sum = require_array(sum_obj, "sum");
        py::array out = require_array(out_obj, "out");
        require_c_contiguous(sum, "sum");
        require_c_contiguous(out, "out");
        require_writeable(out, "out");
        if (!has_dtype<double>(out))
          throw py::type_error("out must have dtype float64, got " + dtype_str(out));
        if (sum.size() != out.size())
          throw py::value_error("sum has " + std::to_string(sum.size()) +
                                " elements but out has " + std::to_string(out.size()));
        const auto fp = make_config(clip, frac_bits, bits, max_summands);
        if (has_dtype<std::uint32_t>(sum))
          run_dequantize<std::uint32_t>(sum, out, fp, summands, threads);
        else if (has_dtype<std::uint64_t>(sum))
          run_dequantize<std::uint64_t>(sum, out, fp, summands, threads);
        else
          throw py::type_error("sum must have dtype uint32 or uint64, got " + dtype_str(sum));
      },
      py::arg("sum"), py::arg("out"), py::kw_only(), py::arg("clip"), py::arg("frac_bits"),
      py::arg("bits"), py::arg("max_summands"), py::arg("summands"), py::arg("threads") = 0,
      "Decode a sum of `summands` encodings into float64 out.");
}

}  // namespace securefl::bindings
