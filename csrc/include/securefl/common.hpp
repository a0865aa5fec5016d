// Small helpers shared by every kernel of the securefl core.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
// Ring elements are defined as little-endian words of the keystream; a big-endian
// port would need explicit byte swaps everywhere they are loaded.
#error "securefl's core supports little-endian targets only"
#endif

namespace securefl {

// 128-bit products for modular arithmetic (GCC and Clang; __extension__ keeps
// -Wpedantic quiet about the non-standard type).
__extension__ typedef unsigned __int128 u128;

// Overwrites secret material in a way the optimizer may not remove.
inline void secure_zero(void* p, std::size_t n) noexcept {
  volatile unsigned char* v = static_cast<volatile unsigned char*>(p);
  while (n--) *v++ = 0;
}

// Mask of the low `bits` bits of a word of width W (1 <= bits <= W).
template <class T>
constexpr T low_bits_mask(unsigned bits) noexcept {
  return bits >= sizeof(T) * 8 ? static_cast<T>(~T{0}) : static_cast<T>((T{1} << bits) - 1);
}

}  // namespace securefl
