// Fixed-point encoding of real vectors into Z_{2^b}, with unbiased stochastic rounding.
//
// A value x is clipped to [-c, c], multiplied by a weight factor w in (0, 1] (1 unless
// the caller folds a weight in), shifted to [0, 2c] and scaled by 2^p (p fractional
// bits, so the precision is 2^-p):  v = (clip(x) * w + c) * 2^p.  It is rounded up with
// probability frac(v), which makes the encoding unbiased: E[q] = v. Rounding noise for
// element i comes from bytes [8i, 8i + 8) of the AES-128-CTR keystream of a given key
// (counter from 0): r = that little-endian u64, u = (r >> 11) * 2^-53, and
// q = floor(v) + (u < frac(v)). The sum of k encodings decodes to S * 2^-p - k * c.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "securefl/aes.hpp"

namespace securefl::quantize {

struct FixedPoint {
  double clip;                  // c > 0
  unsigned frac_bits;           // p: precision 2^-p, p <= 62
  unsigned bits;                // b: ring Z_{2^b}, 1 <= b <= 64
  std::uint64_t max_summands;   // n: the most encodings ever added together
};

// The largest encoding of one value: ceil(2 * c * 2^p).
// @throws std::invalid_argument if the configuration is invalid or can wrap, that is
//         if n * ceil(2 c 2^p) >= 2^b; the message names n, c, b and the precision.
std::uint64_t max_level(const FixedPoint& fp);

// out[i] = encoding of x[i] (see above), for i < len. Non-finite inputs are rejected.
// @throws std::invalid_argument naming the first non-finite index, after the whole
//         vector has been processed (out then holds no meaningful values).
// @throws std::invalid_argument also if the weight factor is not in (0, 1].
template <class F, class T>
void quantize(const F* x, std::size_t len, T* out, const FixedPoint& fp, double weight,
              const std::uint8_t key[aes::kKeyBytes], unsigned threads, aes::Backend backend);

// out[i] = sum[i] * 2^-p - summands * c: the mean-free decoding of a sum of
// `summands` encodings (1 <= summands <= n).
// @throws std::invalid_argument if summands is out of range or some sum[i] exceeds
//         summands * max_level (a wrapped or corrupted aggregate).
template <class T>
void dequantize(const T* sum, std::size_t len, double* out, const FixedPoint& fp,
                std::uint64_t summands, unsigned threads);

}  // namespace securefl::quantize
