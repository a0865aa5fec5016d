#include "securefl/dp.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "securefl/common.hpp"
#include "securefl/parallel.hpp"

namespace securefl::dp {
namespace {

constexpr std::size_t kChunk = 2048;       // elements per unit of work (a multiple of 128)
constexpr std::size_t kNoiseChunk = 1024;  // coordinates per independent noise stream
constexpr std::size_t kFwhtBlock = 2048;   // 16 KiB of doubles: the in-L1 levels
constexpr std::size_t kMaxDimension = std::size_t{1} << 40;
// |value| below 2^52 keeps every double -> int64 conversion exact and defined.
constexpr double kMaxMagnitude = 0x1p52;

bool is_power_of_two(std::size_t n) noexcept { return n != 0 && (n & (n - 1)) == 0; }

// A 16-byte big-endian counter block (hi, 0): stream number `hi` of a key.
void counter_block(std::uint64_t hi, std::uint8_t out[aes::kBlockBytes]) noexcept {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(hi >> (56 - 8 * i));
  for (std::size_t i = 8; i < aes::kBlockBytes; ++i) out[i] = 0;
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
  ~WordStream() { secure_zero(buffer_, sizeof buffer_); }

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

// Canonne, Kamath, Steinke 2020, Algorithm 3, with binary64 Bernoulli trials (dp.hpp).
class DiscreteGaussian {
 public:
  explicit DiscreteGaussian(double sigma) noexcept
      : t_(std::floor(sigma) + 1), shift_(sigma * sigma / t_), inv_two_var_(0.5 / (sigma * sigma)) {}
  std::int64_t operator()(WordStream& s) const noexcept {
    for (;;) {
      const std::uint64_t w = s.next();
      // Discrete Laplace of scale t: |Y| geometric with ratio e^(-1/t) (inverse CDF),
      // a uniform sign, and (-, 0) rejected so that 0 is not counted twice.
      const double u = static_cast<double>((w >> 11) + 1) * 0x1p-53;
      const double m = std::floor(-t_ * std::log(u));
      const bool negative = (w & 1u) != 0;
      if (negative && m == 0) continue;
      const double dev = m - shift_;
      if (s.unit() < std::exp(-dev * dev * inv_two_var_))
        return negative ? -static_cast<std::int64_t>(m) : static_cast<std::int64_t>(m);
    }
  }

 private:
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
      const DiscreteGaussian sample(noise.param);
      for (std::size_t c = begin; c < end; ++c) {
        WordStream s(rk, c, backend);
        const std::size_t stop = std::min(n, (c + 1) * kNoiseChunk);
        for (std::size_t i = c * kNoiseChunk; i < stop; ++i) add(i, sample(s));
      }
    } else {
      const Poisson half(noise.param / 2);
      for (std::size_t c = begin; c < end; ++c) {
        WordStream s(rk, c, backend);
        const std::size_t stop = std::min(n, (c + 1) * kNoiseChunk);
        for (std::size_t i = c * kNoiseChunk; i < stop; ++i) add(i, half(s) - half(s));
      }
    }
  });
}

// Sign bits of the rotation for elements [start, start + n), start a multiple of 128.
void sign_bits(const aes::RoundKeys& rk, std::size_t start, std::size_t n, std::uint8_t* bits,
               aes::Backend backend) noexcept {
  aes::ctr_keystream(rk, start / 128, bits, (n + 7) / 8, backend);
}

inline double signed_by(double v, const std::uint8_t* bits, std::size_t i) noexcept {
  return ((bits[i >> 3] >> (i & 7)) & 1u) ? -v : v;
}

void fwht_block(double* __restrict a, std::size_t n) noexcept {
  for (std::size_t h = 1; h < n; h *= 2)
    for (std::size_t i = 0; i < n; i += 2 * h)
      for (std::size_t j = i; j < i + h; ++j) {
        const double x = a[j], y = a[j + h];
        a[j] = x + y;
        a[j + h] = x - y;
      }
}

// Unnormalized Walsh-Hadamard transform in place: the levels within 16 KiB blocks in
// one sweep, then two levels per sweep (radix 4), so memory is crossed ~log2(n)/2 - 5
// times rather than log2(n) times.
void fwht(double* a, std::size_t n, unsigned threads) {
  const std::size_t block = std::min(n, kFwhtBlock);
  parallel_for(n / block, threads, [&](std::size_t b, std::size_t e) {
    for (std::size_t k = b; k < e; ++k) fwht_block(a + k * block, block);
  });
  constexpr std::size_t kSpan = 1024;  // j-values per unit of work
  for (std::size_t h = block; h < n;) {
    if (4 * h <= n) {
      const std::size_t per_group = h / kSpan;
      parallel_for(n / (4 * h) * per_group, threads, [&](std::size_t b, std::size_t e) {
        for (std::size_t u = b; u < e; ++u) {
          double* g = a + (u / per_group) * 4 * h + (u % per_group) * kSpan;
          for (std::size_t j = 0; j < kSpan; ++j) {
            const double a0 = g[j], a1 = g[j + h], a2 = g[j + 2 * h], a3 = g[j + 3 * h];
            const double b0 = a0 + a1, b1 = a0 - a1, b2 = a2 + a3, b3 = a2 - a3;
            g[j] = b0 + b2;
            g[j + 2 * h] = b0 - b2;
            g[j + h] = b1 + b3;
            g[j + 3 * h] = b1 - b3;
          }
        }
      });
      h *= 4;
    } else {
      const std::size_t per_group = h / kSpan;
      parallel_for(n / (2 * h) * per_group, threads, [&](std::size_t b, std::size_t e) {
        for (std::size_t u = b; u < e; ++u) {
          double* g = a + (u / per_group) * 2 * h + (u % per_group) * kSpan;
          for (std::size_t j = 0; j < kSpan; ++j) {
            const double x = g[j], y = g[j + h];
            g[j] = x + y;
            g[j + h] = x - y;
          }
        }
      });
      h *= 2;
    }
  }
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
      std::uint8_t bits[kChunk / 8];
      for (std::size_t u = b; u < e; ++u) {
        const std::size_t start = u * kChunk, n = std::min(kChunk, D - start);
        sign_bits(rk, start, n, bits, backend);
        for (std::size_t i = 0; i < n; ++i) x[start + i] = signed_by(x[start + i] * factor, bits, i);
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
  if (!(spec.clip / spec.gamma < kMaxMagnitude))
    throw std::invalid_argument("clip / gamma must be below 2^52");
  if (!(spec.norm_bound > 0) || !(spec.error_bound > 0))
    throw std::invalid_argument("norm_bound and error_bound must be > 0");
  if (spec.max_tries < 1) throw std::invalid_argument("max_tries must be >= 1");
  const std::size_t D = padded_dimension(d);
  backend = aes::resolve_backend(backend);
  const std::size_t units = (D + kChunk - 1) / kChunk;
  const std::size_t in_units = (d + kChunk - 1) / kChunk;

  // 1. Norm (and finiteness), summed in unit order so the result is thread-independent.
  std::vector<double> parts(units, 0.0);
  std::atomic<std::size_t> first_bad{d};
  parallel_for(in_units, threads, [&](std::size_t b, std::size_t e) {
    for (std::size_t u = b; u < e; ++u) {
      const std::size_t start = u * kChunk, stop = std::min(d, start + kChunk);
      double s = 0;
      for (std::size_t i = start; i < stop; ++i) {
        const double v = static_cast<double>(x[i]);
        if (!std::isfinite(v)) {
          std::size_t seen = first_bad.load();
          while (i < seen && !first_bad.compare_exchange_weak(seen, i)) {
          }
          break;
        }
        s += v * v;
      }
      parts[u] = s;
    }
  });
  if (first_bad.load() < d)
    throw std::invalid_argument("input is not finite at index " + std::to_string(first_bad.load()));
  const double norm = std::sqrt(ordered_sum(parts));
  const double factor = spec.weight * (norm > spec.clip ? spec.clip / norm : 1.0);

  // 2. Clip, weight, signs, zero padding; 3. Walsh-Hadamard.
  std::vector<double> buf(D);
  {
    const aes::RoundKeys rk = aes::expand_key(rotation_key);
    parallel_for(units, threads, [&](std::size_t b, std::size_t e) {
      std::uint8_t bits[kChunk / 8];
      for (std::size_t u = b; u < e; ++u) {
        const std::size_t start = u * kChunk, n = std::min(kChunk, D - start);
        sign_bits(rk, start, n, bits, backend);
        for (std::size_t i = 0; i < n; ++i) {
          const std::size_t k = start + i;
          buf[k] = k < d ? signed_by(static_cast<double>(x[k]) * factor, bits, i) : 0.0;
        }
      }
    });
  }
  fwht(buf.data(), D, threads);

  // 4. Conditional randomized rounding of v = H s x / (sqrt(D) gamma).
  const double inv = 1.0 / (std::sqrt(static_cast<double>(D)) * spec.gamma);
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
        double r2 = 0, e2 = 0;
        for (std::size_t i = 0; i < n; ++i) {
          const double v = buf[start + i] * inv;
          const double fl = std::floor(v);
          const double u01 = static_cast<double>(coins[i] >> 11) * 0x1p-53;
          const double r = fl + (u01 < v - fl ? 1.0 : 0.0);
          r2 += r * r;
          e2 += (r - v) * (r - v);
          out[start + i] = static_cast<T>(
              static_cast<std::uint64_t>(static_cast<std::int64_t>(r)) & mask);
        }
        parts[u] = r2;
        errs[u] = e2;
      }
      secure_zero(coins, sizeof coins);
    });
    r_norm = std::sqrt(ordered_sum(parts));
    e_norm = std::sqrt(ordered_sum(errs));
    if (r_norm <= spec.norm_bound && e_norm <= spec.error_bound) break;
  }
  secure_zero(buf.data(), buf.size() * sizeof(double));
  if (attempt == spec.max_tries) {
    std::ostringstream s;
    s.precision(6);
    s << "conditional rounding failed " << spec.max_tries << " times (last: ||r|| = " << r_norm
      << " vs bound " << spec.norm_bound << ", ||r - v|| = " << e_norm << " vs bound "
      << spec.error_bound << "); the bounds are too tight for beta";
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
  std::vector<double> buf(D);
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
  rotate(buf.data(), D, rotation_key, /*inverse=*/true, /*normalize=*/true, threads, backend);
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
