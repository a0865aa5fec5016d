// AES-128-CTR block kernels for x86-64 with AES instructions.
//
// Each kernel is compiled for its own instruction set through a function target
// attribute and is only ever called after keystream.cpp has checked the CPU, so the
// library as a whole still runs on the x86-64 baseline. This file deliberately uses
// no standard-library templates: an inline function instantiated here would be
// compiled with the wider instruction set and could be picked by the linker for
// callers on older CPUs.
#include "securefl/aes.hpp"

#if defined(SECUREFL_X86_64)
#include <immintrin.h>

#include <cstring>

// GCC 12's own AVX-512 headers trip -Wuninitialized inside their intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace securefl::aes::detail {
namespace {

constexpr std::size_t kLanes = 8;  // independent blocks in flight: hides aesenc latency

// Reverses the bytes of each 64-bit half: a (hi, lo) pair of native integers becomes
// the big-endian counter block.
#define SECUREFL_BSWAP64_PAIR _mm_set_epi8(8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7)

__attribute__((target("aes,ssse3"))) inline __m128i encrypt1(const __m128i* k, __m128i b) {
  b = _mm_xor_si128(b, k[0]);
  for (std::size_t r = 1; r < kRounds; ++r) b = _mm_aesenc_si128(b, k[r]);
  return _mm_aesenclast_si128(b, k[kRounds]);
}

}  // namespace

__attribute__((target("aes,ssse3"))) void ctr_blocks_aesni(const std::uint8_t* round_keys,
                                                           std::uint64_t hi, std::uint64_t lo,
                                                           std::uint8_t* out,
                                                           std::size_t nblocks) {
  __m128i k[kRounds + 1];
  for (std::size_t r = 0; r <= kRounds; ++r)
    k[r] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(round_keys + 16 * r));
  const __m128i bswap = SECUREFL_BSWAP64_PAIR;
  const __m128i one = _mm_set_epi64x(1, 0);
  __m128i ctr = _mm_set_epi64x(static_cast<long long>(lo), static_cast<long long>(hi));

  for (; nblocks >= kLanes; nblocks -= kLanes, out += kLanes * kBlockBytes) {
    __m128i b[kLanes];
    for (std::size_t i = 0; i < kLanes; ++i) {
      b[i] = _mm_xor_si128(_mm_shuffle_epi8(ctr, bswap), k[0]);
      ctr = _mm_add_epi64(ctr, one);
    }
    for (std::size_t r = 1; r < kRounds; ++r)
      for (std::size_t i = 0; i < kLanes; ++i) b[i] = _mm_aesenc_si128(b[i], k[r]);
    for (std::size_t i = 0; i < kLanes; ++i)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * i),
                       _mm_aesenclast_si128(b[i], k[kRounds]));
  }
  for (; nblocks > 0; --nblocks, out += kBlockBytes) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), encrypt1(k, _mm_shuffle_epi8(ctr, bswap)));
    ctr = _mm_add_epi64(ctr, one);
  }
  // The local copy of the round keys is key material: overwrite it before returning
  // (what stays in SIMD registers until they are reused is not under our control).
  secure_zero(k, sizeof k);
}

__attribute__((target("vaes,avx2,aes"))) void ctr_blocks_vaes256(const std::uint8_t* round_keys,
                                                                 std::uint64_t hi,
                                                                 std::uint64_t lo,
                                                                 std::uint8_t* out,
                                                                 std::size_t nblocks) {
  __m256i k[kRounds + 1];
  for (std::size_t r = 0; r <= kRounds; ++r)
    k[r] = _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(round_keys + 16 * r)));
  const __m256i bswap = _mm256_broadcastsi128_si256(SECUREFL_BSWAP64_PAIR);
  const __m256i two = _mm256_set_epi64x(2, 0, 2, 0);
  // Two counter blocks per register: (hi, lo) and (hi, lo + 1).
  __m256i ctr = _mm256_set_epi64x(static_cast<long long>(lo + 1), static_cast<long long>(hi),
                                  static_cast<long long>(lo), static_cast<long long>(hi));

  constexpr std::size_t kBlocksPerIter = 2 * kLanes;
  for (; nblocks >= kBlocksPerIter; nblocks -= kBlocksPerIter, out += kBlocksPerIter * 16) {
    __m256i b[kLanes];
    for (std::size_t i = 0; i < kLanes; ++i) {
      b[i] = _mm256_xor_si256(_mm256_shuffle_epi8(ctr, bswap), k[0]);
      ctr = _mm256_add_epi64(ctr, two);
    }
    for (std::size_t r = 1; r < kRounds; ++r)
      for (std::size_t i = 0; i < kLanes; ++i) b[i] = _mm256_aesenc_epi128(b[i], k[r]);
    for (std::size_t i = 0; i < kLanes; ++i)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * i),
                          _mm256_aesenclast_epi128(b[i], k[kRounds]));
  }
  if (nblocks > 0) {
    // Tail: the counter low half continues from where the wide loop stopped.
    alignas(16) std::uint64_t next[2];
    _mm_store_si128(reinterpret_cast<__m128i*>(next), _mm256_castsi256_si128(ctr));
    ctr_blocks_aesni(round_keys, next[0], next[1], out, nblocks);
  }
  secure_zero(k, sizeof k);
}

__attribute__((target("vaes,avx512f,avx512bw,aes"))) void ctr_blocks_vaes512(
    const std::uint8_t* round_keys, std::uint64_t hi, std::uint64_t lo, std::uint8_t* out,
    std::size_t nblocks) {
  __m512i k[kRounds + 1];
  for (std::size_t r = 0; r <= kRounds; ++r)
    k[r] = _mm512_broadcast_i32x4(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(round_keys + 16 * r)));
  const __m512i bswap = _mm512_broadcast_i32x4(SECUREFL_BSWAP64_PAIR);
  const __m512i four = _mm512_set_epi64(4, 0, 4, 0, 4, 0, 4, 0);
  const long long h = static_cast<long long>(hi);
  __m512i ctr = _mm512_set_epi64(static_cast<long long>(lo + 3), h, static_cast<long long>(lo + 2),
                                 h, static_cast<long long>(lo + 1), h,
                                 static_cast<long long>(lo), h);

  constexpr std::size_t kBlocksPerIter = 4 * kLanes;
  for (; nblocks >= kBlocksPerIter; nblocks -= kBlocksPerIter, out += kBlocksPerIter * 16) {
    __m512i b[kLanes];
    for (std::size_t i = 0; i < kLanes; ++i) {
      b[i] = _mm512_xor_si512(_mm512_shuffle_epi8(ctr, bswap), k[0]);
      ctr = _mm512_add_epi64(ctr, four);
    }
    for (std::size_t r = 1; r < kRounds; ++r)
      for (std::size_t i = 0; i < kLanes; ++i) b[i] = _mm512_aesenc_epi128(b[i], k[r]);
    for (std::size_t i = 0; i < kLanes; ++i)
      _mm512_storeu_si512(reinterpret_cast<void*>(out + 64 * i),
                          _mm512_aesenclast_epi128(b[i], k[kRounds]));
  }
  if (nblocks > 0) {
    alignas(16) std::uint64_t next[2];
    _mm_store_si128(reinterpret_cast<__m128i*>(next), _mm512_castsi512_si128(ctr));
    ctr_blocks_aesni(round_keys, next[0], next[1], out, nblocks);
  }
  secure_zero(k, sizeof k);
}

}  // namespace securefl::aes::detail

#endif  // SECUREFL_X86_64
