// The DP noise samplers and the rounding sampler (dp_samplers.hpp, dp_detail.hpp), with
// the branch-free ln and exp they need. Every draw reads AES-128-CTR keystream in the
// order dp.hpp states; the NumPy reference (securefl.testing.reference) replays it.
#include "securefl/dp_samplers.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "securefl/dp_detail.hpp"

namespace securefl::dp {
namespace {

using detail::check_noise;
using detail::counter_block;
using detail::for_each_noise;
using detail::from_bits;
using detail::kChunk;
using detail::to_bits;
using detail::wipe;

// |value| below 2^52 keeps every double -> int64 conversion exact and defined.
constexpr double kMaxMagnitude = 0x1p52;

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
      : t_(std::floor(sigma) + 1),
        shift_(sigma * sigma / t_),
        inv_two_var_(0.5 / (sigma * sigma)) {}

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
static_assert(DiscreteGaussian::kBatch <= detail::kNoiseSlack,
              "a noise chunk's buffer must hold the sampler's last batch");

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

// Randomized rounding of v = buf * inv into out (mod 2^b), n <= kChunk; norms =
// {||r||^2, ||r - v||^2}, each summed in four interleaved lanes (element i in lane
// i % 4) and combined as (l0 + l1) + (l2 + l3). Two loops: the rounding has no
// reduction and vectorizes; the sums then vectorize across the four lanes.
template <class T>
SECUREFL_DP_CLONES void rounding_kernel(const double* __restrict buf, T* __restrict out,
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

}  // namespace

namespace detail {

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

void fill_noise_chunk(std::int64_t* out, std::size_t count, const NoiseSpec& noise,
                      const aes::RoundKeys& rk, std::uint64_t chunk,
                      aes::Backend backend) noexcept {
  if (noise.kind == Noise::kDiscreteGaussian) {
    DiscreteGaussian(noise.param).fill(out, count, rk, chunk, backend);
    return;
  }
  const Poisson half(noise.param / 2);
  WordStream s(rk, chunk, backend);
  for (std::size_t i = 0; i < count; ++i) {
    // Two statements, not half(s) - half(s): the operands' evaluation order is
    // unspecified, and the noise must be the same bytes under every compiler.
    const auto plus = half(s);
    const auto minus = half(s);
    out[i] = plus - minus;
  }
}

void round_chunk(const double* buf, std::uint32_t* out, const std::uint64_t* coins,
                 std::size_t n, double inv, std::uint64_t mask, double norms[2]) noexcept {
  rounding_kernel(buf, out, coins, n, inv, mask, norms);
}

void round_chunk(const double* buf, std::uint64_t* out, const std::uint64_t* coins,
                 std::size_t n, double inv, std::uint64_t mask, double norms[2]) noexcept {
  rounding_kernel(buf, out, coins, n, inv, mask, norms);
}

}  // namespace detail

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

}  // namespace securefl::dp
