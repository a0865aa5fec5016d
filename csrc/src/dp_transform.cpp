// The randomized Walsh-Hadamard rotation (dp_transform.hpp): sign flips from the
// rotation key's keystream and the fast Walsh-Hadamard transform, cache-blocked, with
// the pieces the pipeline fuses into its first sweep (dp_detail.hpp).
#include "securefl/dp_transform.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "securefl/dp_detail.hpp"
#include "securefl/parallel.hpp"

namespace securefl::dp {
namespace {

using detail::fwht_block;
using detail::fwht_outer;
using detail::from_bits;
using detail::is_power_of_two;
using detail::kChunk;
using detail::kFwhtBlock;
using detail::kMaxDimension;
using detail::sign_words;
using detail::to_bits;

constexpr std::uint64_t kSignBit = std::uint64_t{1} << 63;

SECUREFL_DP_CLONES void sign_in_place(double* __restrict x, std::size_t n, double factor,
                                      const std::uint64_t* __restrict signs) noexcept {
  for (std::size_t i = 0; i < n; ++i)
    x[i] = from_bits(to_bits(x[i] * factor) ^ (signs[i] & kSignBit));
}

// out[i] = x[i] * factor, negated where the sign word says so (an XOR of the IEEE sign
// bit: no branch for random signs to mispredict).
template <class F>
SECUREFL_DP_CLONES void load_signed_kernel(const F* __restrict x, double* __restrict out,
                                           std::size_t n, double factor,
                                           const std::uint64_t* __restrict signs) noexcept {
  for (std::size_t i = 0; i < n; ++i)
    out[i] = from_bits(to_bits(static_cast<double>(x[i]) * factor) ^ (signs[i] & kSignBit));
}

// The Walsh-Hadamard butterflies below add and subtract in exactly the order of the
// radix-2 transform (levels h = 1, 2, 4, ...): two or three levels are merely done
// while the values are in registers, so results equal the NumPy reference bit for bit.

// Levels h and 2h on p0..p3 = g, g + h, g + 2h, g + 3h for j in [0, span). Separate
// restrict pointers tell the compiler the four rows never overlap, so it vectorizes.
SECUREFL_DP_CLONES void radix4_rows(double* __restrict p0, double* __restrict p1,
                                    double* __restrict p2, double* __restrict p3,
                                    std::size_t span) noexcept {
  for (std::size_t j = 0; j < span; ++j) {
    const double a0 = p0[j], a1 = p1[j], a2 = p2[j], a3 = p3[j];
    const double b0 = a0 + a1, b1 = a0 - a1, b2 = a2 + a3, b3 = a2 - a3;
    p0[j] = b0 + b2;
    p1[j] = b1 + b3;
    p2[j] = b0 - b2;
    p3[j] = b1 - b3;
  }
}

inline void radix4(double* g, std::size_t h, std::size_t span) noexcept {
  radix4_rows(g, g + h, g + 2 * h, g + 3 * h, span);
}

SECUREFL_DP_CLONES void radix2_rows(double* __restrict p0, double* __restrict p1,
                                    std::size_t span) noexcept {
  for (std::size_t j = 0; j < span; ++j) {
    const double x = p0[j], y = p1[j];
    p0[j] = x + y;
    p1[j] = x - y;
  }
}

inline void radix2(double* g, std::size_t h, std::size_t span) noexcept {
  radix2_rows(g, g + h, span);
}

// Levels h, 2h and 4h: radix 4 on rows (0, 1, 2, 3) and (4, 5, 6, 7) gives levels h and
// 2h in the radix-2 order; level 4h pairs row k with row k + 4.
SECUREFL_DP_CLONES void radix8_rows(double* __restrict p0, double* __restrict p1,
                                    double* __restrict p2, double* __restrict p3,
                                    double* __restrict p4, double* __restrict p5,
                                    double* __restrict p6, double* __restrict p7,
                                    std::size_t span) noexcept {
  for (std::size_t j = 0; j < span; ++j) {
    const double a0 = p0[j], a1 = p1[j], a2 = p2[j], a3 = p3[j];
    const double a4 = p4[j], a5 = p5[j], a6 = p6[j], a7 = p7[j];
    const double b0 = a0 + a1, b1 = a0 - a1, b2 = a2 + a3, b3 = a2 - a3;
    const double b4 = a4 + a5, b5 = a4 - a5, b6 = a6 + a7, b7 = a6 - a7;
    const double c0 = b0 + b2, c1 = b1 + b3, c2 = b0 - b2, c3 = b1 - b3;
    const double c4 = b4 + b6, c5 = b5 + b7, c6 = b4 - b6, c7 = b5 - b7;
    p0[j] = c0 + c4;
    p1[j] = c1 + c5;
    p2[j] = c2 + c6;
    p3[j] = c3 + c7;
    p4[j] = c0 - c4;
    p5[j] = c1 - c5;
    p6[j] = c2 - c6;
    p7[j] = c3 - c7;
  }
}

inline void radix8(double* g, std::size_t h, std::size_t span) noexcept {
  radix8_rows(g, g + h, g + 2 * h, g + 3 * h, g + 4 * h, g + 5 * h, g + 6 * h, g + 7 * h, span);
}

}  // namespace

namespace detail {

// Sign words of the rotation for elements [start, start + n): keystream word i (u64,
// little endian, counter from 0); element i is negated when bit 63 of its word is set.
// A whole word per sign costs 8 bytes of AES per element (VAES makes that cheap) but
// lets the sign be applied with one vector XOR.
void sign_words(const aes::RoundKeys& rk, std::size_t start, std::size_t n, std::uint64_t* words,
                aes::Backend backend) noexcept {
  aes::ctr_keystream(rk, start / 2, reinterpret_cast<std::uint8_t*>(words), n * 8, backend);
}

void load_signed(const float* x, double* out, std::size_t n, double factor,
                 const std::uint64_t* signs) noexcept {
  load_signed_kernel(x, out, n, factor, signs);
}

void load_signed(const double* x, double* out, std::size_t n, double factor,
                 const std::uint64_t* signs) noexcept {
  load_signed_kernel(x, out, n, factor, signs);
}

// All levels of a block of n <= kFwhtBlock values (in L2).
SECUREFL_DP_CLONES void fwht_block(double* __restrict a, std::size_t n) noexcept {
  std::size_t h = 1;
  if (n >= 4) {  // levels 1 and 2 on groups of four neighbours
    for (std::size_t i = 0; i < n; i += 4) {
      const double b0 = a[i] + a[i + 1], b1 = a[i] - a[i + 1];
      const double b2 = a[i + 2] + a[i + 3], b3 = a[i + 2] - a[i + 3];
      a[i] = b0 + b2;
      a[i + 1] = b1 + b3;
      a[i + 2] = b0 - b2;
      a[i + 3] = b1 - b3;
    }
    h = 4;
  }
  for (; 4 * h <= n; h *= 4)
    for (std::size_t i = 0; i < n; i += 4 * h) radix4(a + i, h, h);
  for (; h < n; h *= 2)
    for (std::size_t i = 0; i < n; i += 2 * h) radix2(a + i, h, h);
}

// The levels above the block size, three per sweep.
void fwht_outer(double* a, std::size_t n, std::size_t block, unsigned threads) {
  constexpr std::size_t kSpan = 512;  // j-values per unit of work
  for (std::size_t h = block; h < n;) {
    const std::size_t radix = 8 * h <= n ? 8 : 4 * h <= n ? 4 : 2;
    const std::size_t per_group = h / kSpan;
    parallel_for(n / (radix * h) * per_group, threads, [&](std::size_t b, std::size_t e) {
      for (std::size_t u = b; u < e; ++u) {
        double* g = a + (u / per_group) * radix * h + (u % per_group) * kSpan;
        if (radix == 8)
          radix8(g, h, kSpan);
        else if (radix == 4)
          radix4(g, h, kSpan);
        else
          radix2(g, h, kSpan);
      }
    });
    h *= radix;
  }
}

}  // namespace detail

namespace {

// Unnormalized Walsh-Hadamard transform in place: every level within 256 KiB blocks
// in one sweep, then three levels per sweep (radix 8), so memory is crossed about
// 1 + (log2(n) - 15) / 3 times rather than log2(n) times.
void fwht(double* a, std::size_t n, unsigned threads) {
  const std::size_t block = std::min(n, kFwhtBlock);
  parallel_for(n / block, threads, [&](std::size_t b, std::size_t e) {
    for (std::size_t k = b; k < e; ++k) fwht_block(a + k * block, block);
  });
  fwht_outer(a, n, block, threads);
}

}  // namespace

std::size_t padded_dimension(std::size_t d) {
  if (d == 0 || d > kMaxDimension)
    throw std::invalid_argument("dimension must be in [1, 2^40], got " + std::to_string(d));
  std::size_t p = 1;
  while (p < d) p *= 2;
  return p;
}

void rotate(double* x, std::size_t D, const std::uint8_t key[aes::kKeyBytes], bool inverse,
            bool normalize, unsigned threads, aes::Backend backend) {
  if (!is_power_of_two(D) || D > kMaxDimension)
    throw std::invalid_argument("rotation length must be a power of two, got " +
                                std::to_string(D));
  backend = aes::resolve_backend(backend);
  const aes::RoundKeys rk = aes::expand_key(key);
  const double scale = normalize ? 1.0 / std::sqrt(static_cast<double>(D)) : 1.0;
  auto apply_signs = [&](double factor) {
    parallel_for((D + kChunk - 1) / kChunk, threads, [&](std::size_t b, std::size_t e) {
      alignas(64) std::uint64_t signs[kChunk];
      for (std::size_t u = b; u < e; ++u) {
        const std::size_t start = u * kChunk, n = std::min(kChunk, D - start);
        sign_words(rk, start, n, signs, backend);
        sign_in_place(x + start, n, factor, signs);
      }
    });
  };
  if (!inverse) {
    apply_signs(1.0);
    fwht(x, D, threads);
    if (normalize)
      for (std::size_t i = 0; i < D; ++i) x[i] *= scale;
  } else {
    fwht(x, D, threads);
    apply_signs(scale);
  }
}

}  // namespace securefl::dp
