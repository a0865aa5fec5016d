#include "securefl/dp.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "securefl/common.hpp"
#include "securefl/parallel.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define SECUREFL_DP_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SECUREFL_DP_CLONES
#endif

namespace securefl::dp {
namespace {

constexpr std::size_t kChunk = 2048;       // elements per unit of work (a multiple of 128)
constexpr std::size_t kNoiseChunk = 1024;  // coordinates per independent noise stream
constexpr std::size_t kFwhtBlock = 32768;  // 256 KiB of doubles: the in-L2 levels
constexpr std::size_t kMaxDimension = std::size_t{1} << 40;
// |value| below 2^52 keeps every double -> int64 conversion exact and defined.
constexpr double kMaxMagnitude = 0x1p52;

bool is_power_of_two(std::size_t n) noexcept { return n != 0 && (n & (n - 1)) == 0; }

// A 16-byte big-endian counter block (hi, 0): stream number `hi` of a key.
void counter_block(std::uint64_t hi, std::uint8_t out[aes::kBlockBytes]) noexcept {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(hi >> (56 - 8 * i));
  for (std::size_t i = 8; i < aes::kBlockBytes; ++i) out[i] = 0;
}

// Zeroes secret memory at memset speed: the empty asm "reads" the buffer, so the
// compiler cannot drop the memset as a dead store (the explicit_bzero idiom). The
// byte-wise volatile loop of common.hpp would cost more than the whole transform here.
inline void wipe(void* p, std::size_t n) noexcept {
  std::memset(p, 0, n);
  __asm__ __volatile__("" : : "r"(p) : "memory");
}

// One noise chunk's keystream, read a 64-bit word at a time.
class WordStream {
 public:
  WordStream(const aes::RoundKeys& rk, std::uint64_t stream, aes::Backend backend) noexcept
      : rk_(rk), backend_(backend) {
    counter_block(stream, counter_);
  }
  WordStream(const WordStream&) = delete;
  WordStream& operator=(const WordStream&) = delete;
  ~WordStream() { wipe(buffer_, sizeof buffer_); }

  std::uint64_t next() noexcept {
    if (pos_ == kWords) refill();
    return buffer_[pos_++];
  }
  // Uniform on (0, 1]: never 0, so its logarithm is finite.
  double open_unit() noexcept { return static_cast<double>((next() >> 11) + 1) * 0x1p-53; }
  // Uniform on [0, 1).
  double unit() noexcept { return static_cast<double>(next() >> 11) * 0x1p-53; }

 private:
  static constexpr std::size_t kWords = 256;
  void refill() noexcept {
    aes::ctr_keystream(rk_, counter_, block_, reinterpret_cast<std::uint8_t*>(buffer_),
                       sizeof buffer_, backend_);
    block_ += sizeof buffer_ / aes::kBlockBytes;
    pos_ = 0;
  }
  const aes::RoundKeys& rk_;
  aes::Backend backend_;
  std::uint8_t counter_[aes::kBlockBytes];
  std::uint64_t block_ = 0;
  std::size_t pos_ = kWords;
  alignas(64) std::uint64_t buffer_[kWords];
};

inline double from_bits(std::uint64_t u) noexcept {
  double d;
  std::memcpy(&d, &u, sizeof d);
  return d;
}

inline std::uint64_t to_bits(double d) noexcept {
  std::uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
}

constexpr double kLn2 = 0.6931471805599453;
constexpr double kLn2Hi = 0.6931471803691238;       // 2^-53-exact high part of ln 2
constexpr double kLn2Lo = 1.9082149292705877e-10;   // ln 2 - kLn2Hi
constexpr double kSqrt2 = 1.4142135623730951;
constexpr std::uint64_t kOneBits = 0x3FF0000000000000ull;  // 1.0
constexpr double kTwo52 = 0x1p52;

// ln(u) for u in (0, 1], normal: u = m 2^e with m in [sqrt(2)/2, sqrt(2)),
// ln m = 2 atanh(f), f = (m - 1) / (m + 1), |f| <= 0.1716, by its series to f^23
// (truncation below 1e-19 relative). Branch-free so that it vectorizes; the NumPy
// reference evaluates the same operations in the same order.
inline double log_unit(double u) noexcept {
  const std::uint64_t bits = to_bits(u);
  double m = from_bits((bits & 0x000FFFFFFFFFFFFFull) | kOneBits);  // [1, 2)
  // The exponent as a double without an integer conversion: 2^52 + (exponent field).
  double e = from_bits(to_bits(kTwo52) | (bits >> 52)) - kTwo52 - 1023.0;
  // m > sqrt(2): halve m, add one to e (as arithmetic with a 0/1 factor: no branch).
  const double half = m * 0.5, next = e + 1.0;
  const bool high = m > kSqrt2;
  m = high ? half : m;
  e = high ? next : e;
  const double f = (m - 1.0) / (m + 1.0);
  const double s = f * f;
  // sum_{j=0}^{11} s^j / (2j + 1) by Estrin's scheme: short dependency chains.
  const double s2 = s * s, s4 = s2 * s2, s8 = s4 * s4;
  const double q0 = 1.0 + (1.0 / 3) * s, q1 = 1.0 / 5 + (1.0 / 7) * s;
  const double q2 = 1.0 / 9 + (1.0 / 11) * s, q3 = 1.0 / 13 + (1.0 / 15) * s;
  const double q4 = 1.0 / 17 + (1.0 / 19) * s, q5 = 1.0 / 21 + (1.0 / 23) * s;
  const double p = ((q0 + q1 * s2) + (q2 + q3 * s2) * s4) + (q4 + q5 * s2) * s8;
  return e * kLn2 + 2.0 * f * p;
}

// e^x for x <= 0 (x below -708 gives e^-708: an acceptance probability below 1e-307).
// x = k ln 2 + r, |r| <= ln(2)/2, e^r by its Taylor series to r^13 (truncation below
// 1e-18 relative), times 2^k built from bits.
inline double exp_nonpositive(double x) noexcept {
  x = x > -708.0 ? x : -708.0;
  const double k = std::floor(x * (1.0 / kLn2) + 0.5);
  const double r = (x - k * kLn2Hi) - k * kLn2Lo;
  // sum_{i=0}^{13} r^i / i! by Estrin's scheme.
  const double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
  const double q0 = 1.0 + r, q1 = 0.5 + (1.0 / 6.0) * r;
  const double q2 = 1.0 / 24.0 + (1.0 / 120.0) * r, q3 = 1.0 / 720.0 + (1.0 / 5040.0) * r;
  const double q4 = 1.0 / 40320.0 + (1.0 / 362880.0) * r;
  const double q5 = 1.0 / 3628800.0 + (1.0 / 39916800.0) * r;
  const double q6 = 1.0 / 479001600.0 + (1.0 / 6227020800.0) * r;
  const double p = ((q0 + q1 * r2) + (q2 + q3 * r2) * r4) + ((q4 + q5 * r2) + q6 * r4) * r8;
  // 2^k for integer k in [-1022, 0]: the low bits of 2^52 + (k + 1023) are k + 1023.
  const std::uint64_t biased = to_bits(kTwo52 + (k + 1023.0)) & 0x7FFull;
  return p * from_bits(biased << 52);
}

// Canonne, Kamath, Steinke 2020, Algorithm 3 (dp.hpp), a batch of 256 candidates at a
// time from 512 words of the chunk's stream: candidate j of a batch reads its words j
// (a) and 256 + j (b). From word a: the sign
// (bit 0) and u = 2 - [1 + (a >> 12) 2^-52] in (0, 1]; from word b: v = [1 + (b >> 12)
// 2^-52] - 1 in [0, 1). |Y| = floor(-t ln u) is discrete-Laplace distributed with scale
// t; the candidate is accepted if not (negative and 0) and v < exp(-(|Y| - s^2/t)^2 / 2s^2).
class DiscreteGaussian {
 public:
  static constexpr std::size_t kBatch = 256;

  explicit DiscreteGaussian(double sigma) noexcept
      : t_(std::floor(sigma) + 1), shift_(sigma * sigma / t_), inv_two_var_(0.5 / (sigma * sigma)) {}

  // Fills out[0..n) from the stream of chunk `chunk`; out must have room for
  // n + kBatch values (accepted candidates are written without a branch).
  void fill(std::int64_t* out, std::size_t n, const aes::RoundKeys& rk, std::uint64_t chunk,
            aes::Backend backend) const noexcept {
    alignas(64) std::uint64_t words[2 * kBatch];
    alignas(64) std::uint64_t value[kBatch];
    alignas(64) std::uint64_t verdict[kBatch];
    std::uint8_t counter[aes::kBlockBytes];
    counter_block(chunk, counter);
    std::uint64_t block = 0;
    std::size_t filled = 0;
    while (filled < n) {
      aes::ctr_keystream(rk, counter, block, reinterpret_cast<std::uint8_t*>(words),
                         sizeof words, backend);
      block += sizeof words / aes::kBlockBytes;
      candidates(words, value, verdict, t_, shift_, inv_two_var_);
      // Acceptance is a coin flip: write every candidate and advance only past the
      // accepted ones, rather than branch on it.
      for (std::size_t j = 0; j < kBatch; ++j) {
        out[filled] = static_cast<std::int64_t>(value[j]);
        filled += verdict[j];
      }
    }
    wipe(words, sizeof words);
    wipe(value, sizeof value);
  }

 private:
  // value[j] = the candidate as a two's complement u64 (through the bits of
  // y + 1.5 2^52, as in round_one), verdict[j] = 1 if accepted else 0.
  SECUREFL_DP_CLONES static void candidates(const std::uint64_t* __restrict words,
                                            std::uint64_t* __restrict value,
                                            std::uint64_t* __restrict verdict, double t,
                                            double shift, double inv_two_var) noexcept {
    for (std::size_t j = 0; j < kBatch; ++j) {
      const std::uint64_t a = words[j], b = words[kBatch + j];
      const double u = 2.0 - from_bits(kOneBits | (a >> 12));
      const double v = from_bits(kOneBits | (b >> 12)) - 1.0;
      const double m = std::floor(-t * log_unit(u));
      const double dev = m - shift;
      const std::uint64_t accept = v < exp_nonpositive(-dev * dev * inv_two_var) ? 1u : 0u;
      const std::uint64_t negative = a & 1u;
      const std::uint64_t zero_twice = m == 0.0 ? negative : 0u;
      const double minus = -m;
      const double y = negative != 0 ? minus : m;
      const std::uint64_t biased = to_bits(y + 0x1.8p52) & 0x000FFFFFFFFFFFFFull;
      value[j] = biased - (std::uint64_t{1} << 51);
      verdict[j] = accept & (zero_twice ^ 1u);
    }
  }

  double t_, shift_, inv_two_var_;
};

// log Gamma(x) for x >= 1 (Stirling series with a shift; the one NumPy uses). Not
// std::lgamma: glibc's writes the global `signgam`, a data race across threads.
double log_gamma(double x) noexcept {
  static const double a[10] = {8.333333333333333e-02, -2.777777777777778e-03,
                               7.936507936507937e-04, -5.952380952380952e-04,
                               8.417508417508418e-04, -1.917526917526918e-03,
                               6.410256410256410e-03, -2.955065359477124e-02,
                               1.796443723688307e-01, -1.39243221690590e+00};
  if (x == 1.0 || x == 2.0) return 0.0;
  double x0 = x;
  int n = 0;
  if (x < 7.0) {
    n = static_cast<int>(7 - x);
    x0 = x + n;
  }
  const double x2 = 1.0 / (x0 * x0);
  double gl0 = a[9];
  for (int k = 8; k >= 0; --k) gl0 = gl0 * x2 + a[k];
  double gl = gl0 / x0 + 0.9189385332046727 + (x0 - 0.5) * std::log(x0) - x0;
  for (int k = 1; k <= n; ++k) {
    x0 -= 1.0;
    gl -= std::log(x0);
  }
  return gl;
}

// Poisson(lambda): Hoermann's PTRS for lambda >= 10, multiplication of uniforms below.
class Poisson {
 public:
  explicit Poisson(double lambda) noexcept : lambda_(lambda) {
    slam_ = std::sqrt(lambda);
    loglam_ = std::log(lambda);
    b_ = 0.931 + 2.53 * slam_;
    a_ = -0.059 + 0.02483 * b_;
    log_invalpha_ = std::log(1.1239 + 1.1328 / (b_ - 3.4));
    vr_ = 0.9277 - 3.6224 / (b_ - 2);
    exp_neg_ = std::exp(-lambda);
  }
  std::int64_t operator()(WordStream& s) const noexcept {
    if (lambda_ < 10) {
      std::int64_t k = 0;
      double prod = s.unit();
      while (prod > exp_neg_) {
        ++k;
        prod *= s.unit();
      }
      return k;
    }
    for (;;) {
      const double u = s.unit() - 0.5;
      const double v = s.unit();
      const double us = 0.5 - std::fabs(u);
      if (us <= 0) continue;  // u = -1/2 exactly: the transform is undefined there
      const double kf = std::floor((2 * a_ / us + b_) * u + lambda_ + 0.43);
      if (us >= 0.07 && v <= vr_) return static_cast<std::int64_t>(kf);
      if (kf < 0 || kf > kMaxMagnitude || (us < 0.013 && v > us)) continue;
      if (std::log(v) + log_invalpha_ - std::log(a_ / (us * us) + b_) <=
          -lambda_ + kf * loglam_ - log_gamma(kf + 1))
        return static_cast<std::int64_t>(kf);
    }
  }

 private:
  double lambda_, slam_, loglam_, a_, b_, log_invalpha_, vr_, exp_neg_;
};

void check_noise(const NoiseSpec& noise) {
  switch (noise.kind) {
    case Noise::kNone:
      return;
    case Noise::kDiscreteGaussian:
      if (!(noise.param > 0) || !(noise.param < 0x1p40))
        throw std::invalid_argument("discrete Gaussian sigma must be in (0, 2^40), got " +
                                    std::to_string(noise.param));
      return;
    case Noise::kSkellam:
      if (!(noise.param > 0) || !(noise.param < 0x1p50))
        throw std::invalid_argument("Skellam variance mu must be in (0, 2^50), got " +
                                    std::to_string(noise.param));
      return;
  }
  throw std::invalid_argument("unknown noise kind");
}

// Calls add(i, z) for every coordinate i < n with its noise sample z.
template <class Add>
void for_each_noise(std::size_t n, const NoiseSpec& noise, const aes::RoundKeys& rk,
                    unsigned threads, aes::Backend backend, Add&& add) {
  const std::size_t chunks = (n + kNoiseChunk - 1) / kNoiseChunk;
  parallel_for(chunks, threads, [&](std::size_t begin, std::size_t end) {
    if (noise.kind == Noise::kDiscreteGaussian) {
      const DiscreteGaussian sampler(noise.param);
      std::int64_t z[kNoiseChunk + DiscreteGaussian::kBatch];
      for (std::size_t c = begin; c < end; ++c) {
        const std::size_t first = c * kNoiseChunk, count = std::min(n - first, kNoiseChunk);
        sampler.fill(z, count, rk, c, backend);
        for (std::size_t i = 0; i < count; ++i) add(first + i, z[i]);
      }
      wipe(z, sizeof z);
    } else {
      const Poisson half(noise.param / 2);
      for (std::size_t c = begin; c < end; ++c) {
        WordStream s(rk, c, backend);
        const std::size_t stop = std::min(n, (c + 1) * kNoiseChunk);
        for (std::size_t i = c * kNoiseChunk; i < stop; ++i) {
          // Two statements, not half(s) - half(s): the operands' evaluation order is
          // unspecified, and the noise must be the same bytes under every compiler.
          const auto plus = half(s);
          const auto minus = half(s);
          add(i, plus - minus);
        }
      }
    }
  });
}

// Sign words of the rotation for elements [start, start + n): keystream word i (u64,
// little endian, counter from 0); element i is negated when bit 63 of its word is set.
// A whole word per sign costs 8 bytes of AES per element (VAES makes that cheap) but
// lets the sign be applied with one vector XOR.
void sign_words(const aes::RoundKeys& rk, std::size_t start, std::size_t n, std::uint64_t* words,
                aes::Backend backend) noexcept {
  aes::ctr_keystream(rk, start / 2, reinterpret_cast<std::uint8_t*>(words), n * 8, backend);
}

constexpr std::uint64_t kSignBit = std::uint64_t{1} << 63;

SECUREFL_DP_CLONES void sign_in_place(double* __restrict x, std::size_t n, double factor,
                                      const std::uint64_t* __restrict signs) noexcept {
  for (std::size_t i = 0; i < n; ++i)
    x[i] = from_bits(to_bits(x[i] * factor) ^ (signs[i] & kSignBit));
}

// out[i] = x[i] * factor, negated where the sign word says so (an XOR of the IEEE sign
// bit: no branch for random signs to mispredict).
template <class F>
SECUREFL_DP_CLONES void load_signed(const F* __restrict x, double* __restrict out, std::size_t n,
                                    double factor, const std::uint64_t* __restrict signs) noexcept {
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

// Unnormalized Walsh-Hadamard transform in place: every level within 256 KiB blocks
// in one sweep, then three levels per sweep (radix 8), so memory is crossed about
// 1 + (log2(n) - 15) / 3 times rather than log2(n) times.
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

void fwht(double* a, std::size_t n, unsigned threads) {
  const std::size_t block = std::min(n, kFwhtBlock);
  parallel_for(n / block, threads, [&](std::size_t b, std::size_t e) {
    for (std::size_t k = b; k < e; ++k) fwht_block(a + k * block, block);
  });
  fwht_outer(a, n, block, threads);
}

// Sum of squares in four interleaved lanes (element i in lane i % 4), combined as
// (l0 + l1) + (l2 + l3): vectorizable, and reproducible by the NumPy reference.
template <class F>
SECUREFL_DP_CLONES double square_sum(const F* __restrict x, std::size_t n) noexcept {
  double lane[4] = {0, 0, 0, 0};
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (std::size_t k = 0; k < 4; ++k) {
      const double v = static_cast<double>(x[i + k]);
      lane[k] += v * v;
    }
  for (std::size_t k = 0; i < n; ++i, ++k) {
    const double v = static_cast<double>(x[i]);
    lane[k] += v * v;
  }
  return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

// Randomized rounding of v = buf * inv into out (mod 2^b), n <= kChunk; norms =
// {||r||^2, ||r - v||^2}, each summed in four interleaved lanes (element i in lane
// i % 4) and combined as (l0 + l1) + (l2 + l3). Two loops: the rounding has no
// reduction and vectorizes; the sums then vectorize across the four lanes.
template <class T>
SECUREFL_DP_CLONES void round_chunk(const double* __restrict buf, T* __restrict out,
                                    const std::uint64_t* __restrict coins, std::size_t n,
                                    double inv, std::uint64_t mask, double* norms) noexcept {
  alignas(64) double r[kChunk + 4], err[kChunk + 4];
  for (std::size_t i = 0; i < n; ++i) {
    const double v = buf[i] * inv;
    const double fl = std::floor(v);
    const double u01 = from_bits(kOneBits | (coins[i] >> 12)) - 1.0;
    const double up = fl + 1.0;
    const double ri = u01 < v - fl ? up : fl;
    r[i] = ri;
    err[i] = ri - v;
    // Two's complement r mod 2^b through the bits of r + 1.5 2^52 (low 52 bits:
    // r + 2^51 for |r| < 2^51): no int64 conversion, which AVX2 lacks.
    const std::uint64_t biased = to_bits(ri + 0x1.8p52) & 0x000FFFFFFFFFFFFFull;
    out[i] = static_cast<T>((biased - (std::uint64_t{1} << 51)) & mask);
  }
  for (std::size_t i = n; i < n + 4; ++i) r[i] = err[i] = 0.0;  // pads the last group
  double r2[4] = {0, 0, 0, 0}, e2[4] = {0, 0, 0, 0};
  for (std::size_t i = 0; i < n; i += 4)
    for (std::size_t k = 0; k < 4; ++k) {
      r2[k] += r[i + k] * r[i + k];
      e2[k] += err[i + k] * err[i + k];
    }
  norms[0] = (r2[0] + r2[1]) + (r2[2] + r2[3]);
  norms[1] = (e2[0] + e2[1]) + (e2[2] + e2[3]);
  wipe(r, sizeof r);
  wipe(err, sizeof err);
}

// A per-thread work vector reused across calls: a fresh 8 MiB allocation per call
// costs more in page faults than the transform. Callers zero what they wrote.
double* scratch(std::size_t n) {
  thread_local std::vector<double> buffer;
  if (buffer.size() < n) {
    std::vector<double>().swap(buffer);
    buffer.resize(n);
  }
  return buffer.data();
}

// Sums per-unit partial results in unit order: the same double whatever the threads.
double ordered_sum(const std::vector<double>& parts) noexcept {
  double s = 0;
  for (double p : parts) s += p;
  return s;
}

void check_bits(unsigned bits, std::size_t word_bytes) {
  if (bits < 2 || bits > 64) throw std::invalid_argument("ring bits b must be in [2, 64]");
  if (bits > 8 * word_bytes)
    throw std::invalid_argument("ring words are too narrow for b=" + std::to_string(bits));
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

void sample_noise(std::int64_t* out, std::size_t n, const NoiseSpec& noise,
                  const std::uint8_t key[aes::kKeyBytes], unsigned threads, aes::Backend backend) {
  check_noise(noise);
  if (noise.kind == Noise::kNone) {
    std::fill(out, out + n, std::int64_t{0});
    return;
  }
  backend = aes::resolve_backend(backend);
  const aes::RoundKeys rk = aes::expand_key(key);
  for_each_noise(n, noise, rk, threads, backend, [&](std::size_t i, std::int64_t z) { out[i] = z; });
}

template <class F, class T>
unsigned encode(const F* x, std::size_t d, T* out, const EncodeSpec& spec,
                const std::uint8_t rotation_key[aes::kKeyBytes],
                const std::uint8_t rounding_key[aes::kKeyBytes],
                const std::uint8_t noise_key[aes::kKeyBytes], unsigned threads,
                aes::Backend backend) {
  check_bits(spec.bits, sizeof(T));
  check_noise(spec.noise);
  if (!(spec.clip > 0) || !std::isfinite(spec.clip))
    throw std::invalid_argument("clip c must be finite and > 0");
  if (!(spec.weight > 0 && spec.weight <= 1))
    throw std::invalid_argument("weight must be in (0, 1], got " + std::to_string(spec.weight));
  if (!(spec.gamma > 0) || !std::isfinite(spec.gamma))
    throw std::invalid_argument("gamma must be finite and > 0");
  // Every rotated coordinate is at most c in magnitude (the rotation is orthonormal).
  if (!(spec.clip / spec.gamma < 0x1p50))
    throw std::invalid_argument("clip / gamma must be below 2^50");
  if (!(spec.norm_bound > 0) || !(spec.error_bound > 0))
    throw std::invalid_argument("norm_bound and error_bound must be > 0");
  if (spec.max_tries < 1) throw std::invalid_argument("max_tries must be >= 1");
  const std::size_t D = padded_dimension(d);
  backend = aes::resolve_backend(backend);
  const std::size_t units = (D + kChunk - 1) / kChunk;

  // 1-3. One sweep over x: the norm's partial sums (in unit order, so the result does
  // not depend on the threads), the signs and zero padding, and the Walsh-Hadamard
  // levels within each block while it is in cache; then the outer levels. Clipping
  // and weighting commute with the (linear) rotation, so they are folded into the
  // rounding's scale below rather than making a second pass over x.
  std::vector<double> parts(units, 0.0);
  double* buf = scratch(D);
  {
    const aes::RoundKeys rk = aes::expand_key(rotation_key);
    const std::size_t block = std::min(D, kFwhtBlock);
    parallel_for(D / block, threads, [&](std::size_t b, std::size_t e) {
      alignas(64) std::uint64_t signs[kChunk];
      for (std::size_t k = b; k < e; ++k) {
        for (std::size_t start = k * block; start < (k + 1) * block; start += kChunk) {
          const std::size_t n = std::min(kChunk, D - start);
          const std::size_t live = start < d ? std::min(n, d - start) : 0;
          if (live > 0) parts[start / kChunk] = square_sum(x + start, live);
          sign_words(rk, start, n, signs, backend);
          load_signed(x + std::min(start, d), buf + start, live, 1.0, signs);
          std::fill(buf + start + live, buf + start + n, 0.0);
        }
        fwht_block(buf + k * block, block);
      }
      wipe(signs, sizeof signs);
    });
    fwht_outer(buf, D, block, threads);
  }
  const double norm = std::sqrt(ordered_sum(parts));
  if (!std::isfinite(norm)) {  // rare: find the culprit for the message
    wipe(buf, D * sizeof(double));
    for (std::size_t i = 0; i < d; ++i)
      if (!std::isfinite(static_cast<double>(x[i])))
        throw std::invalid_argument("input is not finite at index " + std::to_string(i));
    throw std::invalid_argument("input's L2 norm overflows binary64");
  }
  const double factor = spec.weight * (norm > spec.clip ? spec.clip / norm : 1.0);

  // 4. Conditional randomized rounding of v = factor H s x / (sqrt(D) gamma).
  const double inv = factor * (1.0 / (std::sqrt(static_cast<double>(D)) * spec.gamma));
  const std::uint64_t mask = low_bits_mask<std::uint64_t>(spec.bits);
  const aes::RoundKeys round_rk = aes::expand_key(rounding_key);
  std::vector<double> errs(units, 0.0);
  unsigned attempt = 0;
  double r_norm = 0, e_norm = 0;
  for (; attempt < spec.max_tries; ++attempt) {
    std::uint8_t counter[aes::kBlockBytes];
    counter_block(attempt, counter);
    parallel_for(units, threads, [&](std::size_t b, std::size_t e) {
      alignas(64) std::uint64_t coins[kChunk];
      for (std::size_t u = b; u < e; ++u) {
        const std::size_t start = u * kChunk, n = std::min(kChunk, D - start);
        aes::ctr_keystream(round_rk, counter, start / 2, reinterpret_cast<std::uint8_t*>(coins),
                           n * 8, backend);
        double norms[2];
        round_chunk(buf + start, out + start, coins, n, inv, mask, norms);
        parts[u] = norms[0];
        errs[u] = norms[1];
      }
      wipe(coins, sizeof coins);
    });
    r_norm = std::sqrt(ordered_sum(parts));
    e_norm = std::sqrt(ordered_sum(errs));
    if (r_norm <= spec.norm_bound && e_norm <= spec.error_bound) break;
  }
  wipe(buf, D * sizeof(double));
  if (attempt == spec.max_tries) {
    std::ostringstream s;
    s.precision(6);
    // The norms reached are not reported: they describe this client's secret vector.
    s << "conditional rounding failed " << spec.max_tries << " times against the bounds ||r|| <= "
      << spec.norm_bound << " and ||r - v|| <= " << spec.error_bound
      << "; the bounds are too tight for beta";
    throw std::invalid_argument(s.str());
  }

  // 5. Noise, 6. wrap.
  if (spec.noise.kind != Noise::kNone) {
    const aes::RoundKeys noise_rk = aes::expand_key(noise_key);
    for_each_noise(D, spec.noise, noise_rk, threads, backend, [&](std::size_t i, std::int64_t z) {
      out[i] = static_cast<T>((static_cast<std::uint64_t>(out[i]) + static_cast<std::uint64_t>(z)) &
                              mask);
    });
  }
  return attempt + 1;
}

template <class T>
void decode(const T* sum, std::size_t D, double* out, std::size_t d, double gamma, unsigned bits,
            const std::uint8_t rotation_key[aes::kKeyBytes], unsigned threads,
            aes::Backend backend) {
  check_bits(bits, sizeof(T));
  if (!is_power_of_two(D) || D > kMaxDimension)
    throw std::invalid_argument("the ring sum's length must be a power of two, got " +
                                std::to_string(D));
  if (d < 1 || d > D)
    throw std::invalid_argument("dimension d must be in [1, " + std::to_string(D) + "], got " +
                                std::to_string(d));
  if (!(gamma > 0) || !std::isfinite(gamma))
    throw std::invalid_argument("gamma must be finite and > 0");
  const std::uint64_t mask = low_bits_mask<std::uint64_t>(bits);
  const std::uint64_t half = std::uint64_t{1} << (bits - 1);
  double* buf = scratch(D);
  std::atomic<bool> bad{false};
  parallel_for((D + kChunk - 1) / kChunk, threads, [&](std::size_t b, std::size_t e) {
    bool local = false;
    for (std::size_t u = b; u < e; ++u) {
      const std::size_t start = u * kChunk, stop = std::min(D, start + kChunk);
      for (std::size_t i = start; i < stop; ++i) {
        const std::uint64_t v = static_cast<std::uint64_t>(sum[i]);
        local |= v > mask;
        // Centre Z_{2^b} on [-2^(b-1), 2^(b-1)): two's complement of the low b bits.
        const std::uint64_t w = v & mask;
        buf[i] = w >= half ? -static_cast<double>((mask - w) + 1) : static_cast<double>(w);
      }
    }
    if (local) bad.store(true);
  });
  if (bad.load())
    throw std::invalid_argument("ring sum holds values >= 2^" + std::to_string(bits));
  rotate(buf, D, rotation_key, /*inverse=*/true, /*normalize=*/true, threads, backend);
  for (std::size_t i = 0; i < d; ++i) out[i] = buf[i] * gamma;
}

template unsigned encode<float, std::uint32_t>(const float*, std::size_t, std::uint32_t*,
                                               const EncodeSpec&, const std::uint8_t*,
                                               const std::uint8_t*, const std::uint8_t*, unsigned,
                                               aes::Backend);
template unsigned encode<float, std::uint64_t>(const float*, std::size_t, std::uint64_t*,
                                               const EncodeSpec&, const std::uint8_t*,
                                               const std::uint8_t*, const std::uint8_t*, unsigned,
                                               aes::Backend);
template unsigned encode<double, std::uint32_t>(const double*, std::size_t, std::uint32_t*,
                                                const EncodeSpec&, const std::uint8_t*,
                                                const std::uint8_t*, const std::uint8_t*, unsigned,
                                                aes::Backend);
template unsigned encode<double, std::uint64_t>(const double*, std::size_t, std::uint64_t*,
                                                const EncodeSpec&, const std::uint8_t*,
                                                const std::uint8_t*, const std::uint8_t*, unsigned,
                                                aes::Backend);
template void decode<std::uint32_t>(const std::uint32_t*, std::size_t, double*, std::size_t,
                                    double, unsigned, const std::uint8_t*, unsigned, aes::Backend);
template void decode<std::uint64_t>(const std::uint64_t*, std::size_t, double*, std::size_t,
                                    double, unsigned, const std::uint8_t*, unsigned, aes::Backend);

}  // namespace securefl::dp
