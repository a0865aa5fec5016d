// The DP pipeline (dp_pipeline.hpp): the client's encode and the server's decode,
// composed from the rotation (dp_transform.cpp) and the samplers (dp_samplers.cpp).
// Encode fuses the clip norm, the signs and the in-cache Walsh-Hadamard levels into one
// sweep over x, so it uses the rotation's pieces (dp_detail.hpp) rather than rotate().
#include "securefl/dp_pipeline.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "securefl/common.hpp"
#include "securefl/dp_detail.hpp"
#include "securefl/dp_transform.hpp"
#include "securefl/parallel.hpp"

namespace securefl::dp {
namespace {

using detail::check_noise;
using detail::counter_block;
using detail::for_each_noise;
using detail::fwht_block;
using detail::fwht_outer;
using detail::is_power_of_two;
using detail::kChunk;
using detail::kFwhtBlock;
using detail::kMaxDimension;
using detail::load_signed;
using detail::round_chunk;
using detail::sign_words;
using detail::wipe;

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
