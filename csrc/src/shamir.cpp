#include "securefl/shamir.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace securefl::shamir {
namespace {

constexpr std::size_t kChunkBytes[kChunks] = {7, 7, 7, 7, 4};

inline std::uint64_t add_mod(std::uint64_t a, std::uint64_t b) noexcept {
  const std::uint64_t s = a + b;  // < 2^62
  return s >= kPrime ? s - kPrime : s;
}

inline std::uint64_t sub_mod(std::uint64_t a, std::uint64_t b) noexcept {
  return a >= b ? a - b : a + kPrime - b;
}

inline std::uint64_t mul_mod(std::uint64_t a, std::uint64_t b) noexcept {
  const u128 z = static_cast<u128>(a) * b;  // < 2^122
  std::uint64_t r = (static_cast<std::uint64_t>(z) & kPrime) + static_cast<std::uint64_t>(z >> 61);
  r = (r & kPrime) + (r >> 61);  // <= p + 1
  return r >= kPrime ? r - kPrime : r;
}

std::uint64_t pow_mod(std::uint64_t a, std::uint64_t e) noexcept {
  std::uint64_t r = 1;
  while (e) {
    if (e & 1) r = mul_mod(r, a);
    a = mul_mod(a, a);
    e >>= 1;
  }
  return r;
}

inline std::uint64_t inv_mod(std::uint64_t a) noexcept { return pow_mod(a, kPrime - 2); }

// Rejects malformed index sets: a zero index would hand out the secret itself and
// a repeated one makes interpolation divide by zero.
void check_indices(const std::uint64_t* indices, std::size_t n) {
  std::vector<std::uint64_t> sorted(indices, indices + n);
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < n; ++i) {
    if (sorted[i] == 0) throw std::invalid_argument("share index 0 is not allowed");
    if (sorted[i] >= kPrime)
      throw std::invalid_argument("share index " + std::to_string(sorted[i]) +
                                  " is not below the field prime 2^61 - 1");
    if (i > 0 && sorted[i] == sorted[i - 1])
      throw std::invalid_argument("duplicate share index " + std::to_string(sorted[i]));
  }
}

// Uniform field elements from the AES-CTR keystream of `seed`.
class FieldSampler {
 public:
  explicit FieldSampler(const std::uint8_t seed[kSeedBytes])
      : keys_(aes::expand_key(seed)), backend_(aes::resolve_backend(aes::Backend::kAuto)) {}
  ~FieldSampler() { secure_zero(buffer_, sizeof buffer_); }

  std::uint64_t next() {
    for (;;) {
      if (pos_ == kWords) refill();
      const std::uint64_t v = buffer_[pos_++] & kPrime;  // 61 bits, uniform on [0, 2^61)
      if (v != kPrime) return v;  // reject the single value >= p
    }
  }

 private:
  static constexpr std::size_t kWords = 256;
  void refill() {
    aes::ctr_keystream(keys_, block_, reinterpret_cast<std::uint8_t*>(buffer_), sizeof buffer_,
                       backend_);
    block_ += sizeof buffer_ / aes::kBlockBytes;
    pos_ = 0;
  }
  aes::RoundKeys keys_;
  aes::Backend backend_;
  std::uint64_t buffer_[kWords] = {};
  std::size_t pos_ = kWords;
  std::uint64_t block_ = 0;
};

}  // namespace

void split(const std::uint8_t secret[kSecretBytes], unsigned threshold,
           const std::uint64_t* indices, std::size_t n, const std::uint8_t seed[kSeedBytes],
           std::uint8_t* shares) {
  if (threshold < 1 || threshold > n)
    throw std::invalid_argument("threshold t must satisfy 1 <= t <= n (t=" +
                                std::to_string(threshold) + ", n=" + std::to_string(n) + ")");
  check_indices(indices, n);

  // coeffs[c * t + k] is the coefficient of x^k of chunk c's polynomial.
  std::vector<std::uint64_t> coeffs(kChunks * threshold);
  std::size_t offset = 0;
  for (std::size_t c = 0; c < kChunks; ++c) {
    std::uint64_t chunk = 0;
    std::memcpy(&chunk, secret + offset, kChunkBytes[c]);
    offset += kChunkBytes[c];
    coeffs[c * threshold] = chunk;
  }
  FieldSampler sampler(seed);
  for (std::size_t c = 0; c < kChunks; ++c)
    for (std::size_t k = 1; k < threshold; ++k) coeffs[c * threshold + k] = sampler.next();

  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t x = indices[i];
    std::uint64_t y[kChunks];
    for (std::size_t c = 0; c < kChunks; ++c) y[c] = coeffs[c * threshold + threshold - 1];
    // Horner's rule, the five chunks interleaved for instruction-level parallelism.
    for (std::size_t k = threshold - 1; k-- > 0;)
      for (std::size_t c = 0; c < kChunks; ++c)
        y[c] = add_mod(mul_mod(y[c], x), coeffs[c * threshold + k]);
    std::memcpy(shares + i * kShareBytes, y, kShareBytes);
  }
  secure_zero(coeffs.data(), coeffs.size() * sizeof(std::uint64_t));
}

void combine(const std::uint64_t* indices, const std::uint8_t* shares, std::size_t m,
             unsigned threshold, std::uint8_t secret[kSecretBytes]) {
  if (threshold < 1) throw std::invalid_argument("threshold t must be >= 1");
  if (m < threshold)
    throw std::invalid_argument("need at least t=" + std::to_string(threshold) +
                                " shares to reconstruct, got " + std::to_string(m));
  check_indices(indices, m);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t c = 0; c < kChunks; ++c) {
      std::uint64_t v;
      std::memcpy(&v, shares + i * kShareBytes + 8 * c, 8);
      if (v >= kPrime)
        throw std::invalid_argument("share for index " + std::to_string(indices[i]) +
                                    " is malformed: a word is not below the field prime");
    }

  // Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i).
  const std::size_t t = threshold;
  std::vector<std::uint64_t> num(t, 1), den(t, 1);
  for (std::size_t i = 0; i < t; ++i)
    for (std::size_t j = 0; j < t; ++j) {
      if (j == i) continue;
      num[i] = mul_mod(num[i], indices[j]);
      den[i] = mul_mod(den[i], sub_mod(indices[j], indices[i]));
    }
  // One inversion for all denominators (Montgomery's trick).
  std::vector<std::uint64_t> prefix(t + 1, 1);
  for (std::size_t i = 0; i < t; ++i) prefix[i + 1] = mul_mod(prefix[i], den[i]);
  std::uint64_t inv = inv_mod(prefix[t]);
  for (std::size_t i = t; i-- > 0;) {
    const std::uint64_t inv_i = mul_mod(inv, prefix[i]);
    inv = mul_mod(inv, den[i]);
    den[i] = inv_i;
  }

  std::uint64_t chunk[kChunks] = {};
  for (std::size_t i = 0; i < t; ++i) {
    const std::uint64_t l = mul_mod(num[i], den[i]);
    for (std::size_t c = 0; c < kChunks; ++c) {
      std::uint64_t y;
      std::memcpy(&y, shares + i * kShareBytes + 8 * c, 8);
      chunk[c] = add_mod(chunk[c], mul_mod(l, y));
    }
  }
  // A valid secret's chunks fit their byte widths; anything else means the shares
  // did not come from one sharing (or were tampered with).
  std::size_t offset = 0;
  bool ok = true;
  for (std::size_t c = 0; c < kChunks; ++c) {
    ok &= (chunk[c] >> (8 * kChunkBytes[c])) == 0;
    std::memcpy(secret + offset, &chunk[c], kChunkBytes[c]);
    offset += kChunkBytes[c];
  }
  secure_zero(chunk, sizeof chunk);
  if (!ok) {
    secure_zero(secret, kSecretBytes);
    throw std::invalid_argument("shares are inconsistent: they do not reconstruct a valid secret");
  }
}

}  // namespace securefl::shamir
