#include "securefl/masking.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "securefl/common.hpp"
#include "securefl/parallel.hpp"
#include "securefl/word_ops.hpp"

namespace securefl::masking {
namespace {

// 8 KiB of accumulator plus 8 KiB of keystream stay in L1 while every key is applied.
constexpr std::size_t kChunkBytes = 8192;

}  // namespace

template <class T>
void check_bits(unsigned bits) {
  if (bits < 1 || bits > 8 * sizeof(T))
    throw std::invalid_argument("ring bits must be in [1, " + std::to_string(8 * sizeof(T)) +
                                "] for " + std::to_string(8 * sizeof(T)) +
                                "-bit words, got " + std::to_string(bits));
}

template <class T>
void masked_accumulate(T* acc, std::size_t len, const std::uint8_t* keys,
                       const std::int8_t* signs, std::size_t nkeys, unsigned bits,
                       unsigned threads, aes::Backend backend) {
  check_bits<T>(bits);
  for (std::size_t j = 0; j < nkeys; ++j)
    if (signs[j] != 1 && signs[j] != -1)
      throw std::invalid_argument("sign " + std::to_string(j) + " is " +
                                  std::to_string(signs[j]) + "; signs must be +1 or -1");
  backend = aes::resolve_backend(backend);
  std::vector<aes::RoundKeys> round_keys(nkeys);
  for (std::size_t j = 0; j < nkeys; ++j) round_keys[j] = aes::expand_key(keys + 16 * j);

  constexpr std::size_t kChunk = kChunkBytes / sizeof(T);  // a whole number of AES blocks
  const std::size_t units = (len + kChunk - 1) / kChunk;
  const T mask = low_bits_mask<T>(bits);
  parallel_for(units, threads, [&](std::size_t begin, std::size_t end) {
    alignas(64) T stream[kChunk];
    for (std::size_t u = begin; u < end; ++u) {
      const std::size_t start = u * kChunk;
      const std::size_t n = std::min(kChunk, len - start);
      const std::uint64_t first_block = start * sizeof(T) / aes::kBlockBytes;
      T* chunk = acc + start;
      for (std::size_t j = 0; j < nkeys; ++j) {
        aes::ctr_keystream(round_keys[j], first_block, reinterpret_cast<std::uint8_t*>(stream),
                           n * sizeof(T), backend);
        if (signs[j] > 0)
          detail::add_words(chunk, stream, n);
        else
          detail::sub_words(chunk, stream, n);
      }
      if (mask != static_cast<T>(~T{0})) detail::and_words(chunk, mask, n);
    }
    secure_zero(stream, sizeof stream);
  });
}

template <class T>
void sum_mod(const T* const* inputs, std::size_t n, std::size_t len, T* out, unsigned bits,
             unsigned threads) {
  check_bits<T>(bits);
  if (n == 0) throw std::invalid_argument("sum_mod needs at least one input");
  constexpr std::size_t kChunk = 4096 / sizeof(T);
  const std::size_t units = (len + kChunk - 1) / kChunk;
  const T mask = low_bits_mask<T>(bits);
  parallel_for(units, threads, [&](std::size_t begin, std::size_t end) {
    // The sum of a chunk is built in a private buffer, so `out` may alias an input.
    alignas(64) T sum[kChunk];
    for (std::size_t u = begin; u < end; ++u) {
      const std::size_t start = u * kChunk;
      const std::size_t m = std::min(kChunk, len - start);
      std::memcpy(sum, inputs[0] + start, m * sizeof(T));
      for (std::size_t j = 1; j < n; ++j) detail::add_words(sum, inputs[j] + start, m);
      if (mask != static_cast<T>(~T{0})) detail::and_words(sum, mask, m);
      std::memcpy(out + start, sum, m * sizeof(T));
    }
  });
}

std::size_t packed_size(std::size_t n, unsigned bits) noexcept {
  return static_cast<std::size_t>((static_cast<u128>(n) * bits + 7) / 8);
}

template <class T>
void pack_bits(const T* in, std::size_t n, unsigned bits, std::uint8_t* out) {
  check_bits<T>(bits);
  const T mask = low_bits_mask<T>(bits);
  u128 window = 0;  // bits waiting to be written, least significant first
  unsigned filled = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (in[i] & ~mask)
      throw std::invalid_argument("element " + std::to_string(i) + " is not below 2^" +
                                  std::to_string(bits));
    window |= static_cast<u128>(in[i]) << filled;
    filled += bits;
    if (filled >= 64) {
      const auto word = static_cast<std::uint64_t>(window);
      std::memcpy(out, &word, 8);
      out += 8;
      window >>= 64;
      filled -= 64;
    }
  }
  for (; filled > 0; filled = filled > 8 ? filled - 8 : 0) {
    *out++ = static_cast<std::uint8_t>(window);
    window >>= 8;
  }
}

template <class T>
void unpack_bits(const std::uint8_t* in, std::size_t n, unsigned bits, T* out) {
  check_bits<T>(bits);
  const std::size_t total = packed_size(n, bits);
  const std::size_t used_in_last = (static_cast<u128>(n) * bits) % 8;
  if (used_in_last != 0 && (in[total - 1] >> used_in_last) != 0)
    throw std::invalid_argument("packed vector has non-zero padding bits");
  const u128 mask = (static_cast<u128>(1) << bits) - 1;
  u128 window = 0;
  unsigned filled = 0;
  std::size_t pos = 0;
  for (std::size_t i = 0; i < n; ++i) {
    while (filled < bits) {
      if (total - pos >= 8) {
        std::uint64_t word;
        std::memcpy(&word, in + pos, 8);
        window |= static_cast<u128>(word) << filled;
        pos += 8;
        filled += 64;
      } else {
        window |= static_cast<u128>(in[pos++]) << filled;
        filled += 8;
      }
    }
    out[i] = static_cast<T>(window & mask);
    window >>= bits;
    filled -= bits;
  }
}

template void pack_bits<std::uint32_t>(const std::uint32_t*, std::size_t, unsigned,
                                       std::uint8_t*);
template void pack_bits<std::uint64_t>(const std::uint64_t*, std::size_t, unsigned,
                                       std::uint8_t*);
template void unpack_bits<std::uint32_t>(const std::uint8_t*, std::size_t, unsigned,
                                         std::uint32_t*);
template void unpack_bits<std::uint64_t>(const std::uint8_t*, std::size_t, unsigned,
                                         std::uint64_t*);
template void check_bits<std::uint32_t>(unsigned);
template void check_bits<std::uint64_t>(unsigned);
template void masked_accumulate<std::uint32_t>(std::uint32_t*, std::size_t, const std::uint8_t*,
                                               const std::int8_t*, std::size_t, unsigned,
                                               unsigned, aes::Backend);
template void masked_accumulate<std::uint64_t>(std::uint64_t*, std::size_t, const std::uint8_t*,
                                               const std::int8_t*, std::size_t, unsigned,
                                               unsigned, aes::Backend);
template void sum_mod<std::uint32_t>(const std::uint32_t* const*, std::size_t, std::size_t,
                                     std::uint32_t*, unsigned, unsigned);
template void sum_mod<std::uint64_t>(const std::uint64_t* const*, std::size_t, std::size_t,
                                     std::uint64_t*, unsigned, unsigned);

}  // namespace securefl::masking
