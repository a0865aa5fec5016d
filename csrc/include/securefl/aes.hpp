// AES-128 in counter mode: the only pseudo-random generator of securefl's core.
//
// The keystream for a 16-byte key and a 16-byte initial counter block is
// AES_k(ctr) || AES_k(ctr + 1) || ..., with the counter a 128-bit big-endian integer
// that wraps modulo 2^128. This is exactly OpenSSL's (and so the `cryptography`
// package's) AES-128-CTR, and NIST SP 800-38A section 6.5.
#pragma once

#include <cstddef>
#include <cstdint>

#include "securefl/common.hpp"

namespace securefl::aes {

constexpr std::size_t kKeyBytes = 16;
constexpr std::size_t kBlockBytes = 16;
constexpr std::size_t kRounds = 10;

// Expanded AES-128 encryption key. Zeroed on destruction.
struct RoundKeys {
  alignas(64) std::uint8_t bytes[(kRounds + 1) * kBlockBytes];
  RoundKeys() noexcept : bytes{} {}
  RoundKeys(const RoundKeys&) = default;
  RoundKeys& operator=(const RoundKeys&) = default;
  ~RoundKeys() { secure_zero(bytes, sizeof bytes); }
};

// FIPS-197 key expansion, constant time (no secret-indexed table lookups).
RoundKeys expand_key(const std::uint8_t key[kKeyBytes]) noexcept;

// Implementations of the block-counter kernel. Every backend gives identical output.
enum class Backend : int {
  kAuto = 0,      // the fastest available on this CPU
  kPortable = 1,  // bitsliced C++, constant time, any CPU
  kAesNi = 2,     // x86-64 AES-NI, 8 blocks in flight
  kVaes256 = 3,   // x86-64 VAES on 256-bit registers (AVX2)
  kVaes512 = 4,   // x86-64 VAES on 512-bit registers (AVX-512F)
};

const char* backend_name(Backend b) noexcept;
bool backend_available(Backend b) noexcept;
// Resolves kAuto to the fastest available backend.
// @throws std::invalid_argument if `b` is not available on this CPU.
Backend resolve_backend(Backend b);

// Writes the keystream blocks for counters (counter0 + first_block + i) mod 2^128,
// 0 <= i < ceil(nbytes / 16), truncated to `nbytes` bytes. `backend` must be resolved.
void ctr_keystream(const RoundKeys& rk, const std::uint8_t counter0[kBlockBytes],
                   std::uint64_t first_block, std::uint8_t* out, std::size_t nbytes,
                   Backend backend) noexcept;

// Same, with the all-zero initial counter block (the "counter from 0" streams that
// masks and rounding noise use).
void ctr_keystream(const RoundKeys& rk, std::uint64_t first_block, std::uint8_t* out,
                   std::size_t nbytes, Backend backend) noexcept;

namespace detail {
// A kernel writes `nblocks` full blocks for counters (hi, lo + i). The caller
// guarantees lo + nblocks <= 2^64 (no carry into hi).
using BlockKernel = void (*)(const std::uint8_t* round_keys, std::uint64_t hi, std::uint64_t lo,
                             std::uint8_t* out, std::size_t nblocks);
void ctr_blocks_portable(const std::uint8_t* round_keys, std::uint64_t hi, std::uint64_t lo,
                         std::uint8_t* out, std::size_t nblocks);
#if defined(__x86_64__) || defined(_M_X64)
#define SECUREFL_X86_64 1
void ctr_blocks_aesni(const std::uint8_t* round_keys, std::uint64_t hi, std::uint64_t lo,
                      std::uint8_t* out, std::size_t nblocks);
void ctr_blocks_vaes256(const std::uint8_t* round_keys, std::uint64_t hi, std::uint64_t lo,
                        std::uint8_t* out, std::size_t nblocks);
void ctr_blocks_vaes512(const std::uint8_t* round_keys, std::uint64_t hi, std::uint64_t lo,
                        std::uint8_t* out, std::size_t nblocks);
#endif
}  // namespace detail

}  // namespace securefl::aes
