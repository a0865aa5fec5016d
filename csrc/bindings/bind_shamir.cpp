#include <vector>

#include "buffers.hpp"
#include "securefl/shamir.hpp"

namespace securefl::bindings {

void bind_shamir(py::module_& m) {
  m.attr("SHAMIR_PRIME") = shamir::kPrime;
  m.attr("SHAMIR_SHARE_BYTES") = shamir::kShareBytes;

  m.def(
      "shamir_split",
      [](const py::bytes& secret, unsigned threshold, const std::vector<std::uint64_t>& indices,
         const py::handle& seed_obj) {
        const std::string_view s = secret;
        if (s.size() != shamir::kSecretBytes)
          throw py::value_error("secret must be exactly 32 bytes, got " +
                                std::to_string(s.size()));
        auto seed = require_key(seed_obj, "seed");
        std::string out(indices.size() * shamir::kShareBytes, '\0');
        {
          py::gil_scoped_release release;
          shamir::split(reinterpret_cast<const std::uint8_t*>(s.data()), threshold,
                        indices.data(), indices.size(), seed.data(),
                        reinterpret_cast<std::uint8_t*>(out.data()));
        }
        secure_zero(seed.data(), seed.size());
        py::bytes result(out);
        secure_zero(out.data(), out.size());
        return result;
      },
      py::arg("secret"), py::arg("threshold"), py::arg("indices"), py::arg("seed"),
      "Shares of a 32-byte secret for `indices`, concatenated (40 bytes each).");

  m.def(
      "shamir_combine",
      [](const std::vector<std::uint64_t>& indices, const py::bytes& shares, unsigned threshold) {
        const std::string_view s = shares;
        if (s.size() != indices.size() * shamir::kShareBytes)
          throw py::value_error("expected " + std::to_string(indices.size()) + " shares of " +
                                std::to_string(shamir::kShareBytes) + " bytes, got " +
                                std::to_string(s.size()) + " bytes");
        std::string secret(shamir::kSecretBytes, '\0');
        {
          py::gil_scoped_release release;
          shamir::combine(indices.data(), reinterpret_cast<const std::uint8_t*>(s.data()),
                          indices.size(), threshold,
                          reinterpret_cast<std::uint8_t*>(secret.data()));
        }
        py::bytes result(secret);
        secure_zero(secret.data(), secret.size());
        return result;
      },
      py::arg("indices"), py::arg("shares"), py::arg("threshold"),
      "Reconstruct a 32-byte secret from the first `threshold` of the given shares.");
}

}  // namespace securefl::bindings
