// AES-128-CTR keystream: CPU dispatch and 128-bit counter arithmetic.
#include <cstring>
#include <stdexcept>
#include <string>

#include "securefl/aes.hpp"

namespace securefl::aes {
namespace {

detail::BlockKernel kernel_for(Backend b) noexcept {
  switch (b) {
#if defined(SECUREFL_X86_64)
    case Backend::kAesNi:
      return detail::ctr_blocks_aesni;
    case Backend::kVaes256:
      return detail::ctr_blocks_vaes256;
    case Backend::kVaes512:
      return detail::ctr_blocks_vaes512;
#endif
    default:
      return detail::ctr_blocks_portable;
  }
}

inline std::uint64_t load_be64(const std::uint8_t* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

const char* backend_name(Backend b) noexcept {
  switch (b) {
    case Backend::kAuto:
      return "auto";
    case Backend::kPortable:
      return "portable";
    case Backend::kAesNi:
      return "aesni";
    case Backend::kVaes256:
      return "vaes256";
    case Backend::kVaes512:
      return "vaes512";
  }
  return "unknown";
}

bool backend_available(Backend b) noexcept {
  switch (b) {
    case Backend::kAuto:
    case Backend::kPortable:
      return true;
#if defined(SECUREFL_X86_64)
    // __builtin_cpu_supports also checks that the OS saves the wide registers.
    case Backend::kAesNi:
      return __builtin_cpu_supports("aes") && __builtin_cpu_supports("ssse3");
    case Backend::kVaes256:
      return __builtin_cpu_supports("aes") && __builtin_cpu_supports("vaes") &&
             __builtin_cpu_supports("avx2");
    case Backend::kVaes512:
      return __builtin_cpu_supports("aes") && __builtin_cpu_supports("vaes") &&
             __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#endif
    default:
      return false;
  }
}

Backend resolve_backend(Backend b) {
  if (b == Backend::kAuto) {
    // Widest first: on the CPUs measured here (benchmarks/README.md) 512-bit VAES is
    // the fastest, 256-bit VAES close behind, AES-NI about half as fast.
    for (Backend c : {Backend::kVaes512, Backend::kVaes256, Backend::kAesNi})
      if (backend_available(c)) return c;
    return Backend::kPortable;
  }
  if (!backend_available(b))
    throw std::invalid_argument(std::string("AES backend '") + backend_name(b) +
                                "' is not available on this CPU");
  return b;
}

void ctr_keystream(const RoundKeys& rk, const std::uint8_t counter0[kBlockBytes],
                   std::uint64_t first_block, std::uint8_t* out, std::size_t nbytes,
                   Backend backend) noexcept {
  const detail::BlockKernel kernel = kernel_for(backend);
  std::uint64_t hi = load_be64(counter0);
  std::uint64_t lo = load_be64(counter0 + 8);
  // counter = counter0 + first_block, as a 128-bit integer modulo 2^128.
  const std::uint64_t start = lo + first_block;
  if (start < lo) ++hi;
  lo = start;

  std::size_t full = nbytes / kBlockBytes;
  while (full > 0) {
    // Blocks until the low half wraps: the kernels never carry into the high half.
    const std::uint64_t until_wrap = ~lo;  // = 2^64 - 1 - lo, so until_wrap + 1 blocks fit
    std::size_t m = full;
    if (until_wrap < m - 1) m = static_cast<std::size_t>(until_wrap) + 1;
    kernel(rk.bytes, hi, lo, out, m);
    out += m * kBlockBytes;
    full -= m;
    lo += m;
    if (lo == 0) ++hi;
  }
  const std::size_t tail = nbytes % kBlockBytes;
  if (tail != 0) {
    std::uint8_t block[kBlockBytes];
    kernel(rk.bytes, hi, lo, block, 1);
    std::memcpy(out, block, tail);
    secure_zero(block, sizeof block);
  }
}

void ctr_keystream(const RoundKeys& rk, std::uint64_t first_block, std::uint8_t* out,
                   std::size_t nbytes, Backend backend) noexcept {
  static constexpr std::uint8_t kZero[kBlockBytes] = {};
  ctr_keystream(rk, kZero, first_block, out, nbytes, backend);
}

}  // namespace securefl::aes
