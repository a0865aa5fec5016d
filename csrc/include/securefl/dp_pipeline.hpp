// The DP pipeline (dp.hpp): the client's encode (clip, rotate, scale, conditional
// randomized rounding, noise, wrap into Z_{2^b}) and the server's decode of a ring sum.
// It composes the rotation (dp_transform.hpp) and the samplers (dp_samplers.hpp); its
// output is a deterministic function of the input and the three keys, whatever the
// thread count and AES backend.
#pragma once

#include <cstddef>
#include <cstdint>

#include "securefl/aes.hpp"
#include "securefl/dp_samplers.hpp"

namespace securefl::dp {

struct EncodeSpec {
  double clip;          // c > 0: L2 clip of the input
  double weight;        // w in (0, 1]: public weight folded in after clipping
  double gamma;         // > 0: the real value of one integer step
  unsigned bits;        // b in [2, 64]: the ring Z_{2^b}
  double norm_bound;    // > 0: redraw the rounding while ||r||_2 exceeds it
  double error_bound;   // > 0: redraw the rounding while ||r - v||_2 exceeds it
  unsigned max_tries;   // >= 1: give up (throw) after this many rounding attempts
  NoiseSpec noise;
};

// The client's pipeline: x[0..d) -> out[0..D) in Z_{2^b}, D = padded_dimension(d).
// Returns the number of rounding attempts used (1 unless a norm check failed).
// F is float or double, T uint32_t or uint64_t.
// Security: out hides x only with its noise; the rounding and noise keys must never
// serve two vectors.
// @throws std::invalid_argument for a bad spec (clip, weight, gamma, clip / gamma >= 2^50,
//         bounds, max_tries, noise parameter), d = 0 or d > 2^40, words narrower than b,
//         a non-finite input (naming the first index) or an L2 norm that overflows, an
//         unavailable backend, or max_tries failed attempts (the message names the
//         bounds, never the norms reached: they describe the secret vector).
template <class F, class T>
unsigned encode(const F* x, std::size_t d, T* out, const EncodeSpec& spec,
                const std::uint8_t rotation_key[aes::kKeyBytes],
                const std::uint8_t rounding_key[aes::kKeyBytes],
                const std::uint8_t noise_key[aes::kKeyBytes], unsigned threads,
                aes::Backend backend);

// The server's decoding of a ring sum sum[0..D) into out[0..d): centre into
// [-2^(b-1), 2^(b-1)), times gamma, inverse rotation, first d coordinates. T is
// uint32_t or uint64_t.
// @throws std::invalid_argument for bits outside [2, 64] or wider than T, D not a power
//         of two or above 2^40, d outside [1, D], gamma not finite and > 0, a sum element
//         >= 2^b, or an unavailable backend.
template <class T>
void decode(const T* sum, std::size_t D, double* out, std::size_t d, double gamma,
            unsigned bits, const std::uint8_t rotation_key[aes::kKeyBytes], unsigned threads,
            aes::Backend backend);

}  // namespace securefl::dp
