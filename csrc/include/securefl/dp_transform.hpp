// The randomized Walsh-Hadamard rotation of the DP pipeline (KLS sec. 4.2):
// y = H diag(s) x, H the D x D Walsh-Hadamard matrix (D a power of two) and s_i = +-1
// from a key's AES-128-CTR keystream (the layout is in dp.hpp). The transform adds and
// subtracts in the order of the radix-2 algorithm (levels h = 1, 2, 4, ...), so results
// equal the NumPy reference (securefl.testing.reference) bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>

#include "securefl/aes.hpp"

namespace securefl::dp {

// The padded length: the smallest power of two >= d (d >= 1).
// @throws std::invalid_argument if d is 0 or above 2^40.
std::size_t padded_dimension(std::size_t d);

// In place on x[0..D): forward y = H diag(s) x * scale, inverse x = diag(s) H y * scale,
// with scale = 1 / sqrt(D) when `normalize`, else 1 (then inverse(forward(x)) = D x,
// exactly for integer-valued x below 2^53 / D). The same for every thread count.
// @throws std::invalid_argument if D is not a power of two or is above 2^40, or the
//         backend is unavailable on this CPU.
void rotate(double* x, std::size_t D, const std::uint8_t key[aes::kKeyBytes], bool inverse,
            bool normalize, unsigned threads, aes::Backend backend);

}  // namespace securefl::dp
