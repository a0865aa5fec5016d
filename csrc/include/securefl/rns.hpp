// Sums of RNS polynomials: the coefficient data of CKKS ciphertexts.
//
// A ciphertext's data is u64 coefficients laid out [size][L][N]: `size` polynomials,
// each with L limbs (one per prime q_l of the modulus chain) of N coefficients. The
// n-way sum adds n such arrays limb by limb modulo q_l. Reduction is lazy: plain
// 64-bit additions while the partial sum cannot overflow, one Barrett reduction after.
#pragma once

#include <cstddef>
#include <cstdint>

namespace securefl::rns {

// The largest modulus accepted: keeps at least three lazy additions per reduction.
constexpr std::uint64_t kMaxModulus = std::uint64_t{1} << 62;

struct Shape {
  std::size_t size;    // polynomials per ciphertext
  std::size_t limbs;   // L
  std::size_t degree;  // N
};

// out[s][l][k] = (sum_j inputs[j][s][l][k]) mod moduli[l]. `out` may be one of the
// inputs. Every input coefficient is checked to be below its modulus.
// @throws std::invalid_argument if n == 0, a modulus is < 2 or >= 2^62, or a
//         coefficient is out of range; the message names the first offending input
//         and position. If `out` overlaps an input (an accumulator), all inputs are
//         checked before anything is written, so `out` is then unchanged; otherwise
//         it is unspecified.
void sum(const std::uint64_t* const* inputs, std::size_t n, const Shape& shape,
         const std::uint64_t* moduli, std::uint64_t* out, unsigned threads);

// Checks moduli as sum() does. @throws std::invalid_argument
void check_moduli(const std::uint64_t* moduli, std::size_t limbs);

}  // namespace securefl::rns
