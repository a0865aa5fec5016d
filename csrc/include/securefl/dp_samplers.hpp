// The DP noise samplers: the discrete Gaussian (Canonne, Kamath, Steinke 2020,
// Algorithm 3) and Skellam (a difference of two Poisson draws) over AES-128-CTR
// keystream. dp.hpp states which stream each sample reads and how precise each sampler
// is; securefl.dp.calibrate keeps the parameters inside the accurate ranges.
#pragma once

#include <cstddef>
#include <cstdint>

#include "securefl/aes.hpp"

namespace securefl::dp {

enum class Noise : int {
  kNone = 0,              // no noise: the pipeline is a rotated fixed-point code
  kDiscreteGaussian = 1,  // param = sigma > 0, the standard deviation parameter
  kSkellam = 2,           // param = mu > 0, the variance (each Poisson has mean mu / 2)
};

struct NoiseSpec {
  Noise kind;
  double param;
};

// out[i] = independent noise samples, i < n (all 0 for kNone): a deterministic function
// of the key whatever `threads` and `backend`.
// Security: the output is the noise that hides a client's update; a key must never
// serve two vectors.
// @throws std::invalid_argument if a discrete Gaussian's sigma is not in (0, 2^40), a
//         Skellam variance mu not in (0, 2^50), the kind is unknown, or the backend is
//         unavailable on this CPU.
void sample_noise(std::int64_t* out, std::size_t n, const NoiseSpec& noise,
                  const std::uint8_t key[aes::kKeyBytes], unsigned threads, aes::Backend backend);

}  // namespace securefl::dp
