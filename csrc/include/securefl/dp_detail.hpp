// Internal to the DP core: what two of its translation units share (dp_samplers.cpp,
// dp_transform.cpp, dp_pipeline.cpp). Not an API: the bindings never include it, and
// nothing here validates its arguments; the public functions of dp_*.hpp do that first.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "securefl/aes.hpp"
#include "securefl/dp_samplers.hpp"
#include "securefl/parallel.hpp"

// The kernels are compiled for three x86-64 levels and chosen at load time (ifunc).
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define SECUREFL_DP_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SECUREFL_DP_CLONES
#endif

namespace securefl::dp::detail {

constexpr std::size_t kChunk = 2048;       // elements per unit of work (a multiple of 128)
constexpr std::size_t kNoiseChunk = 1024;  // coordinates per independent noise stream
constexpr std::size_t kNoiseSlack = 256;   // room past a noise chunk (a sampler's batch)
constexpr std::size_t kFwhtBlock = 32768;  // 256 KiB of doubles: the in-L2 levels
constexpr std::size_t kMaxDimension = std::size_t{1} << 40;

inline bool is_power_of_two(std::size_t n) noexcept { return n != 0 && (n & (n - 1)) == 0; }

// A 16-byte big-endian counter block (hi, 0): stream number `hi` of a key.
inline void counter_block(std::uint64_t hi, std::uint8_t out[aes::kBlockBytes]) noexcept {
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

// ---- dp_transform.cpp: the rotation's pieces, for the pipeline's fused first sweep ----

// Sign words of the rotation for elements [start, start + n): keystream word i (u64,
// little endian, counter from 0); element i is negated when bit 63 of its word is set.
// `start` must be even (a multiple of kChunk is).
void sign_words(const aes::RoundKeys& rk, std::size_t start, std::size_t n, std::uint64_t* words,
                aes::Backend backend) noexcept;

// out[i] = x[i] * factor, negated where sign word i has bit 63 set, for i < n.
void load_signed(const float* x, double* out, std::size_t n, double factor,
                 const std::uint64_t* signs) noexcept;
void load_signed(const double* x, double* out, std::size_t n, double factor,
                 const std::uint64_t* signs) noexcept;

// Every level of the unnormalized Walsh-Hadamard transform of a[0..n) in place;
// n a power of two, at most kFwhtBlock.
void fwht_block(double* a, std::size_t n) noexcept;

// The levels h = block, 2 block, ... < n of the transform of a[0..n) in place: after
// fwht_block on each block of a, a holds the whole transform. n and block are powers
// of two, block <= n, and block is a multiple of 512 unless it equals n.
void fwht_outer(double* a, std::size_t n, std::size_t block, unsigned threads);

// ---- dp_samplers.cpp ----

// @throws std::invalid_argument if the parameter is out of range for its kind (see
//         sample_noise in dp_samplers.hpp) or the kind is unknown.
void check_noise(const NoiseSpec& noise);

// out[0..count) = the noise of chunk `chunk` (its stream: counter block (chunk, 0) of
// the noise key), count <= kNoiseChunk; out must have room for count + kNoiseSlack
// values. `noise` must have passed check_noise and not be kNone; `backend` resolved.
void fill_noise_chunk(std::int64_t* out, std::size_t count, const NoiseSpec& noise,
                      const aes::RoundKeys& rk, std::uint64_t chunk,
                      aes::Backend backend) noexcept;

// Calls add(i, z) for every coordinate i < n with its noise sample z: chunk by chunk,
// threads splitting the chunks, so the samples do not depend on the thread count.
template <class Add>
void for_each_noise(std::size_t n, const NoiseSpec& noise, const aes::RoundKeys& rk,
                    unsigned threads, aes::Backend backend, Add&& add) {
  const std::size_t chunks = (n + kNoiseChunk - 1) / kNoiseChunk;
  parallel_for(chunks, threads, [&](std::size_t begin, std::size_t end) {
    std::int64_t z[kNoiseChunk + kNoiseSlack];
    for (std::size_t c = begin; c < end; ++c) {
      const std::size_t first = c * kNoiseChunk, count = std::min(n - first, kNoiseChunk);
      fill_noise_chunk(z, count, noise, rk, c, backend);
      for (std::size_t i = 0; i < count; ++i) add(first + i, z[i]);
    }
    wipe(z, sizeof z);
  });
}

// Randomized rounding of v = buf[i] * inv into out[i] (the rounded value mod 2^b, mask
// = 2^b - 1), i < n <= kChunk: up with probability frac(v), by coin word coins[i] (u =
// [1 + (word >> 12) 2^-52] - 1). norms = {||r||^2, ||r - v||^2}, each summed in four
// interleaved lanes (element i in lane i % 4) and combined as (l0 + l1) + (l2 + l3).
// |v| must be below 2^50.
void round_chunk(const double* buf, std::uint32_t* out, const std::uint64_t* coins,
                 std::size_t n, double inv, std::uint64_t mask, double norms[2]) noexcept;
void round_chunk(const double* buf, std::uint64_t* out, const std::uint64_t* coins,
                 std::size_t n, double inv, std::uint64_t mask, double norms[2]) noexcept;

}  // namespace securefl::dp::detail
