#include "buffers.hpp"
#include "securefl/dp.hpp"

namespace securefl::bindings {
namespace {

dp::NoiseSpec parse_noise(const std::string& kind, double param) {
  if (kind == "none") return {dp::Noise::kNone, 0.0};
  if (kind == "discrete_gaussian") return {dp::Noise::kDiscreteGaussian, param};
  if (kind == "skellam") return {dp::Noise::kSkellam, param};
  throw py::value_error("unknown noise '" + kind +
                        "'; expected none, discrete_gaussian or skellam");
}

struct Keys {
  std::array<std::uint8_t, aes::kKeyBytes> rotation, rounding, noise;
  ~Keys() {
    secure_zero(rotation.data(), rotation.size());
    secure_zero(rounding.data(), rounding.size());
    secure_zero(noise.data(), noise.size());
  }
};

template <class F, class T>
unsigned run_encode(const py::array& x, py::array& out, const dp::EncodeSpec& spec,
                    const Keys& keys, unsigned threads, aes::Backend backend) {
  const auto* xs = static_cast<const F*>(x.data());
  auto* o = static_cast<T*>(out.mutable_data());
  const auto d = static_cast<std::size_t>(x.size());
  py::gil_scoped_release release;
  return dp::encode<F, T>(xs, d, o, spec, keys.rotation.data(), keys.rounding.data(),
                          keys.noise.data(), threads, backend);
}

template <class F>
unsigned encode_from(const py::array& x, py::array& out, const dp::EncodeSpec& spec,
                     const Keys& keys, unsigned threads, aes::Backend backend) {
  if (has_dtype<std::uint32_t>(out))
    return run_encode<F, std::uint32_t>(x, out, spec, keys, threads, backend);
  if (has_dtype<std::uint64_t>(out))
    return run_encode<F, std::uint64_t>(x, out, spec, keys, threads, backend);
  throw py::type_error("out must have dtype uint32 or uint64, got " + dtype_str(out));
}

template <class T>
void run_decode(const py::array& sum, py::array& out, double gamma, unsigned bits,
                const std::array<std::uint8_t, aes::kKeyBytes>& key, unsigned threads,
                aes::Backend backend) {
  const auto* s = static_cast<const T*>(sum.data());
  auto* o = static_cast<double*>(out.mutable_data());
  const auto D = static_cast<std::size_t>(sum.size());
  const auto d = static_cast<std::size_t>(out.size());
  py::gil_scoped_release release;
  dp::decode<T>(s, D, o, d, gamma, bits, key.data(), threads, backend);
}

}  // namespace

void bind_dp(py::module_& m) {
  m.def(
      "dp_padded_dimension",
      [](std::size_t d) { return dp::padded_dimension(d); }, py::arg("d"),
      "The smallest power of two >= d (the rotation's length).");

  m.def(
      "dp_rotate_inplace",
      [](const py::handle& x_obj, const py::handle& key_obj, bool inverse, bool normalize,
         unsigned threads, const std::string& backend_name) {
        py::array x = require_array(x_obj, "x");
        if (!has_dtype<double>(x))
          throw py::type_error("x must have dtype float64, got " + dtype_str(x));
        require_c_contiguous(x, "x");
        require_writeable(x, "x");
        auto key = require_key(key_obj, "key");
        const aes::Backend backend = parse_backend(backend_name);
        auto* data = static_cast<double*>(x.mutable_data());
        const auto n = static_cast<std::size_t>(x.size());
        {
          py::gil_scoped_release release;
          dp::rotate(data, n, key.data(), inverse, normalize, threads, backend);
        }
        secure_zero(key.data(), key.size());
      },
      py::arg("x"), py::arg("key"), py::kw_only(), py::arg("inverse") = false,
      py::arg("normalize") = true, py::arg("threads") = 0, py::arg("backend") = "auto",
      "Randomized Walsh-Hadamard rotation of float64 x (length a power of two) in place.");

  m.def(
      "dp_sample_noise_into",
      [](const py::handle& out_obj, const py::handle& key_obj, const std::string& kind,
         double param, unsigned threads, const std::string& backend_name) {
        py::array out = require_array(out_obj, "out");
        if (!has_dtype<std::int64_t>(out))
          throw py::type_error("out must have dtype int64, got " + dtype_str(out));
        require_c_contiguous(out, "out");
        require_writeable(out, "out");
        auto key = require_key(key_obj, "key");
        const dp::NoiseSpec noise = parse_noise(kind, param);
        const aes::Backend backend = parse_backend(backend_name);
        auto* data = static_cast<std::int64_t*>(out.mutable_data());
        const auto n = static_cast<std::size_t>(out.size());
        {
          py::gil_scoped_release release;
          dp::sample_noise(data, n, noise, key.data(), threads, backend);
        }
        secure_zero(key.data(), key.size());
      },
      py::arg("out"), py::arg("key"), py::kw_only(), py::arg("kind"), py::arg("param"),
      py::arg("threads") = 0, py::arg("backend") = "auto",
      "Fill int64 out with discrete Gaussian or Skellam noise from key's keystream.");

  m.def(
      "dp_encode_into",
      [](const py::handle& x_obj, const py::handle& out_obj, const py::handle& rotation_obj,
         const py::handle& rounding_obj, const py::handle& noise_obj, double clip, double weight,
         double gamma, unsigned bits, double norm_bound, double error_bound, unsigned max_tries,
         const std::string& noise, double noise_param, unsigned threads,
         const std::string& backend_name) {
        const py::array x = require_array(x_obj, "x");
        py::array out = require_array(out_obj, "out");
        require_c_contiguous(x, "x");
        require_c_contiguous(out, "out");
        require_writeable(out, "out");
        if (x.ndim() != 1 || out.ndim() != 1)
          throw py::value_error("x and out must be one-dimensional");
        const std::size_t D = dp::padded_dimension(static_cast<std::size_t>(x.size()));
        if (static_cast<std::size_t>(out.size()) != D)
          throw py::value_error("out must have the padded length " + std::to_string(D) +
                                ", got " + std::to_string(out.size()));
        Keys keys{require_key(rotation_obj, "rotation_key"),
                  require_key(rounding_obj, "rounding_key"), require_key(noise_obj, "noise_key")};
        const dp::EncodeSpec spec{clip,        weight,    gamma, bits, norm_bound,
                                  error_bound, max_tries, parse_noise(noise, noise_param)};
        const aes::Backend backend = parse_backend(backend_name);
        if (has_dtype<float>(x)) return encode_from<float>(x, out, spec, keys, threads, backend);
        if (has_dtype<double>(x)) return encode_from<double>(x, out, spec, keys, threads, backend);
        throw py::type_error("x must have dtype float32 or float64, got " + dtype_str(x));
      },
      py::arg("x"), py::arg("out"), py::arg("rotation_key"), py::arg("rounding_key"),
      py::arg("noise_key"), py::kw_only(), py::arg("clip"), py::arg("weight"), py::arg("gamma"),
      py::arg("bits"), py::arg("norm_bound"), py::arg("error_bound"), py::arg("max_tries"),
      py::arg("noise"), py::arg("noise_param"), py::arg("threads") = 0,
      py::arg("backend") = "auto",
      "Client DP pipeline: clip, rotate, scale, conditionally round, add noise, wrap into "
      "Z_{2^b}. Returns the number of rounding attempts.");

  m.def(
      "dp_decode_into",
      [](const py::handle& sum_obj, const py::handle& out_obj, const py::handle& key_obj,
         double gamma, unsigned bits, unsigned threads, const std::string& backend_name) {
        const py::array sum = require_array(sum_obj, "sum");
        py::array out = require_array(out_obj, "out");
        require_c_contiguous(sum, "sum");
        require_c_contiguous(out, "out");
        require_writeable(out, "out");
        if (!has_dtype<double>(out))
          throw py::type_error("out must have dtype float64, got " + dtype_str(out));
        if (sum.ndim() != 1 || out.ndim() != 1)
          throw py::value_error("sum and out must be one-dimensional");
        auto key = require_key(key_obj, "rotation_key");
        const aes::Backend backend = parse_backend(backend_name);
        if (has_dtype<std::uint32_t>(sum))
          run_decode<std::uint32_t>(sum, out, gamma, bits, key, threads, backend);
        else if (has_dtype<std::uint64_t>(sum))
          run_decode<std::uint64_t>(sum, out, gamma, bits, key, threads, backend);
        else
          throw py::type_error("sum must have dtype uint32 or uint64, got " + dtype_str(sum));
      },
      py::arg("sum"), py::arg("out"), py::arg("rotation_key"), py::kw_only(), py::arg("gamma"),
      py::arg("bits"), py::arg("threads") = 0, py::arg("backend") = "auto",
      "Server DP decoding: centre the ring sum, times gamma, inverse rotation, first "
      "len(out) coordinates.");
}

}  // namespace securefl::bindings
