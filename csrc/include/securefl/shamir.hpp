// Shamir t-of-n secret sharing of 32-byte secrets over GF(p), p = 2^61 - 1.
//
// The secret is cut into five little-endian chunks of 7, 7, 7, 7 and 4 bytes, each
// below 2^56 < p, and each chunk is shared with its own random polynomial of degree
// t - 1 (constant term = the chunk). A share is the five evaluations at the holder's
// index x (1 <= x < p), as five little-endian u64 words: 40 bytes. The polynomial
// coefficients come from the AES-128-CTR keystream of a 16-byte seed, by rejection
// sampling of 61-bit words, so splitting is deterministic given the seed.
//
// Security: the seed must be fresh, uniformly random and used for one split only;
// anyone holding it learns the secret. Any t - 1 shares are independent of the secret.
#pragma once

#include <cstddef>
#include <cstdint>

#include "securefl/aes.hpp"

namespace securefl::shamir {

constexpr std::uint64_t kPrime = (std::uint64_t{1} << 61) - 1;
constexpr std::size_t kSecretBytes = 32;
constexpr std::size_t kChunks = 5;
constexpr std::size_t kShareBytes = 8 * kChunks;
constexpr std::size_t kSeedBytes = aes::kKeyBytes;

// Writes n shares (n * 40 bytes) for indices[0..n).
// @throws std::invalid_argument unless 1 <= threshold <= n and the indices are
//         distinct and in [1, p).
void split(const std::uint8_t secret[kSecretBytes], unsigned threshold,
           const std::uint64_t* indices, std::size_t n, const std::uint8_t seed[kSeedBytes],
           std::uint8_t* shares);

// Reconstructs the secret from the first `threshold` of the m given shares; the rest
// are only checked for well-formedness.
// @throws std::invalid_argument if m < threshold, an index is 0, >= p or repeated, a
//         share word is >= p, or the interpolated chunks are not a valid encoding
//         (shares from different secrets or corrupted).
void combine(const std::uint64_t* indices, const std::uint8_t* shares, std::size_t m,
             unsigned threshold, std::uint8_t secret[kSecretBytes]);

}  // namespace securefl::shamir
