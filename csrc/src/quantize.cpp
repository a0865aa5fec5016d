#include "securefl/quantize.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "securefl/parallel.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define SECUREFL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SECUREFL_CLONES
#endif

namespace securefl::quantize {
namespace {

constexpr std::size_t kChunk = 2048;  // elements per unit of work; 16 KiB of noise

std::string describe(const FixedPoint& fp) {
  std::ostringstream s;
  s.precision(17);
  s << "n=" << fp.max_summands << " summands clipped to c=" << fp.clip << " at precision 2^-"
    << fp.frac_bits << " in a ring of b=" << fp.bits << " bits";
  return s.str();
}

// Returns 1 if some x is not finite. The clip maps NaN to -c so that every
// conversion below stays defined; the caller rejects the vector anyway.
template <class F, class T>
SECUREFL_CLONES unsigned quantize_chunk(const F* __restrict x, T* __restrict out,
                                        const std::uint64_t* __restrict noise, std::size_t n,
                                        double clip, double weight, double scale) noexcept {
  unsigned bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(x[i]);
    bad |= !(std::fabs(v) <= std::numeric_limits<double>::max());
    double c = v > -clip ? v : -clip;
    c = c < clip ? c : clip;
    const double s = (c * weight + clip) * scale;  // in [0, 2^63): checked by max_level
    const std::int64_t fl = static_cast<std::int64_t>(s);
    const double frac = s - static_cast<double>(fl);
    const double u = static_cast<double>(static_cast<std::int64_t>(noise[i] >> 11)) * 0x1p-53;
    out[i] = static_cast<T>(static_cast<std::uint64_t>(fl) + (u < frac ? 1u : 0u));
  }
  return bad;
}

template <class T>
SECUREFL_CLONES unsigned dequantize_chunk(const T* __restrict sum, double* __restrict out,
                                          std::size_t n, double step, double offset,
                                          T limit) noexcept {
  unsigned bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    bad |= sum[i] > limit;
    out[i] = static_cast<double>(sum[i]) * step - offset;
  }
  return bad;
}

}  // namespace

std::uint64_t max_level(const FixedPoint& fp) {
  if (!(fp.clip > 0) || !std::isfinite(fp.clip))
    throw std::invalid_argument("clip range c must be finite and > 0");
  if (fp.frac_bits > 62)
    throw std::invalid_argument("precision must be 2^-p with p <= 62 fractional bits");
  if (fp.bits < 1 || fp.bits > 64)
    throw std::invalid_argument("ring bits b must be in [1, 64]");
  if (fp.max_summands < 1) throw std::invalid_argument("the number of summands n must be >= 1");
  const double top = std::ceil(2.0 * fp.clip * std::ldexp(1.0, static_cast<int>(fp.frac_bits)));
  const u128 ring = static_cast<u128>(1) << fp.bits;
  if (top >= 0x1p63 ||
      static_cast<u128>(static_cast<std::uint64_t>(top)) * fp.max_summands >= ring) {
    std::ostringstream s;
    s.precision(17);
    s << "fixed-point configuration can wrap the ring: " << describe(fp)
      << "; one value encodes to up to " << top << ", so a sum can reach "
      << static_cast<long double>(top) * static_cast<long double>(fp.max_summands)
      << " >= 2^" << fp.bits
      << ". Use more ring bits, a smaller clip range, a coarser precision or fewer summands";
    throw std::invalid_argument(s.str());
  }
  return static_cast<std::uint64_t>(top);
}

template <class F, class T>
void quantize(const F* x, std::size_t len, T* out, const FixedPoint& fp, double weight,
              const std::uint8_t key[aes::kKeyBytes], unsigned threads, aes::Backend backend) {
  const std::uint64_t top = max_level(fp);
  // w <= 1 keeps clip(x) * w inside [-c, c], so the overflow bound still holds.
  if (!(weight > 0 && weight <= 1))
    throw std::invalid_argument("weight factor must be in (0, 1], got " + std::to_string(weight));
  if (top > std::numeric_limits<T>::max() || fp.bits > 8 * sizeof(T))
    throw std::invalid_argument("output words are too narrow for " + describe(fp));
  backend = aes::resolve_backend(backend);
  const aes::RoundKeys rk = aes::expand_key(key);
  const double scale = std::ldexp(1.0, static_cast<int>(fp.frac_bits));
  const std::size_t units = (len + kChunk - 1) / kChunk;
  std::atomic<std::size_t> first_bad{len};
  parallel_for(units, threads, [&](std::size_t begin, std::size_t end) {
    alignas(64) std::uint64_t noise[kChunk];
    for (std::size_t u = begin; u < end; ++u) {
      const std::size_t start = u * kChunk;
      const std::size_t n = std::min(kChunk, len - start);
      // 8 bytes of noise per element: element `start` begins at block start / 2.
      aes::ctr_keystream(rk, start / 2, reinterpret_cast<std::uint8_t*>(noise), n * 8, backend);
      if (quantize_chunk(x + start, out + start, noise, n, fp.clip, weight, scale)) {
        std::size_t i = 0;
        while (std::isfinite(static_cast<double>(x[start + i]))) ++i;
        std::size_t seen = first_bad.load();
        while (start + i < seen && !first_bad.compare_exchange_weak(seen, start + i)) {
        }
      }
    }
    secure_zero(noise, sizeof noise);
  });
  if (first_bad.load() < len)
    throw std::invalid_argument("input is not finite at index " +
                                std::to_string(first_bad.load()));
}

template <class T>
void dequantize(const T* sum, std::size_t len, double* out, const FixedPoint& fp,
                std::uint64_t summands, unsigned threads) {
  const std::uint64_t top = max_level(fp);
  if (summands < 1 || summands > fp.max_summands)
    throw std::invalid_argument("summands must be in [1, " + std::to_string(fp.max_summands) +
                                "], got " + std::to_string(summands));
  const u128 limit128 = static_cast<u128>(top) * summands;
  if (limit128 > std::numeric_limits<T>::max())
    throw std::invalid_argument("sum words are too narrow for " + describe(fp));
  const T limit = static_cast<T>(limit128);
  const double step = std::ldexp(1.0, -static_cast<int>(fp.frac_bits));
  const double offset = static_cast<double>(summands) * fp.clip;
  const std::size_t units = (len + kChunk - 1) / kChunk;
  std::atomic<unsigned> bad{0};
  parallel_for(units, threads, [&](std::size_t begin, std::size_t end) {
    unsigned local = 0;
    for (std::size_t u = begin; u < end; ++u) {
      const std::size_t start = u * kChunk;
      local |= dequantize_chunk(sum + start, out + start, std::min(kChunk, len - start), step,
                                offset, limit);
    }
    if (local) bad.store(1);
  });
  if (bad.load())
    throw std::invalid_argument(
        "aggregate out of range: some sum exceeds summands * max level (" +
        std::to_string(static_cast<std::uint64_t>(limit)) +
        "), so it wrapped the ring or was corrupted");
}

template void quantize<float, std::uint32_t>(const float*, std::size_t, std::uint32_t*,
                                             const FixedPoint&, double, const std::uint8_t*, unsigned,
                                             aes::Backend);
template void quantize<float, std::uint64_t>(const float*, std::size_t, std::uint64_t*,
                                             const FixedPoint&, double, const std::uint8_t*, unsigned,
                                             aes::Backend);
template void quantize<double, std::uint32_t>(const double*, std::size_t, std::uint32_t*,
                                              const FixedPoint&, double, const std::uint8_t*, unsigned,
                                              aes::Backend);
template void quantize<double, std::uint64_t>(const double*, std::size_t, std::uint64_t*,
                                              const FixedPoint&, double, const std::uint8_t*, unsigned,
                                              aes::Backend);
template void dequantize<std::uint32_t>(const std::uint32_t*, std::size_t, double*,
                                        const FixedPoint&, std::uint64_t, unsigned);
template void dequantize<std::uint64_t>(const std::uint64_t*, std::size_t, double*,
                                        const FixedPoint&, std::uint64_t, unsigned);

}  // namespace securefl::quantize
