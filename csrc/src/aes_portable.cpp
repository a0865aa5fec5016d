// Portable, constant-time AES-128 (FIPS-197): key expansion for every backend and
// the block kernel for CPUs without AES instructions.
//
// Why bitsliced: the classic table-driven AES indexes memory with secret bytes and
// leaks them through the cache. Here SubBytes is computed arithmetically, as the
// inverse in GF(2^8) (x^254) followed by the affine map, on 64 bytes at once held as
// eight 64-bit bit planes, so no memory address or branch depends on a secret.
#include <cstring>

#include "securefl/aes.hpp"

namespace securefl::aes {
namespace {

using Planes = std::uint64_t[8];

// c = a * b in GF(2^8) = GF(2)[x] / (x^8 + x^4 + x^3 + x + 1), on 64 lanes.
void gf_mul(const Planes a, const Planes b, Planes c) noexcept {
  std::uint64_t p[15] = {};
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) p[i + j] ^= a[i] & b[j];
  // x^k = x^(k-4) + x^(k-5) + x^(k-7) + x^(k-8) for k >= 8.
  for (int k = 14; k >= 8; --k) {
    p[k - 4] ^= p[k];
    p[k - 5] ^= p[k];
    p[k - 7] ^= p[k];
    p[k - 8] ^= p[k];
  }
  for (int i = 0; i < 8; ++i) c[i] = p[i];
}

// Transposes an 8x8 bit matrix held in a word: bit 8r + c <-> bit 8c + r
// (three delta swaps; Warren, Hacker's Delight, section 7-3).
inline std::uint64_t transpose8x8(std::uint64_t x) noexcept {
  std::uint64_t t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAull;
  x ^= t ^ (t << 7);
  t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCull;
  x ^= t ^ (t << 14);
  t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ull;
  x ^= t ^ (t << 28);
  return x;
}

// planes[k] bit j = bit k of bytes[j]: each group of 8 bytes is an 8x8 bit matrix
// whose transpose holds, in its byte k, bit k of those 8 bytes.
void to_planes(const std::uint8_t bytes[64], Planes planes) noexcept {
  for (unsigned k = 0; k < 8; ++k) planes[k] = 0;
  for (unsigned g = 0; g < 8; ++g) {
    std::uint64_t w;
    std::memcpy(&w, bytes + 8 * g, 8);
    w = transpose8x8(w);
    for (unsigned k = 0; k < 8; ++k) planes[k] |= ((w >> (8 * k)) & 0xFFu) << (8 * g);
  }
}

void from_planes(const Planes planes, std::uint8_t bytes[64]) noexcept {
  for (unsigned g = 0; g < 8; ++g) {
    std::uint64_t w = 0;
    for (unsigned k = 0; k < 8; ++k) w |= ((planes[k] >> (8 * g)) & 0xFFu) << (8 * k);
    w = transpose8x8(w);
    std::memcpy(bytes + 8 * g, &w, 8);
  }
}

// Applies the AES S-box to bytes[0..64).
void sub_bytes64(std::uint8_t bytes[64]) noexcept {
  Planes x = {};
  to_planes(bytes, x);

  // x^254 = x^-1 (and 0 -> 0): 2, 3, 6, 12, 15, 30, 60, 120, 240, 252, 254.
  Planes x2, x3, x6, x12, x15, t, u;
  gf_mul(x, x, x2);
  gf_mul(x2, x, x3);
  gf_mul(x3, x3, x6);
  gf_mul(x6, x6, x12);
  gf_mul(x12, x3, x15);
  gf_mul(x15, x15, t);  // 30
  gf_mul(t, t, u);      // 60
  gf_mul(u, u, t);      // 120
  gf_mul(t, t, u);      // 240
  gf_mul(u, x12, t);    // 252
  gf_mul(t, x2, u);     // 254

  Planes s;
  for (unsigned i = 0; i < 8; ++i) {
    const std::uint64_t constant = ((0x63u >> i) & 1u) ? ~std::uint64_t{0} : 0;
    s[i] = u[i] ^ u[(i + 4) % 8] ^ u[(i + 5) % 8] ^ u[(i + 6) % 8] ^ u[(i + 7) % 8] ^ constant;
  }
  from_planes(s, bytes);
  secure_zero(x, sizeof x);
  secure_zero(u, sizeof u);
}

inline std::uint8_t xtime(std::uint8_t a) noexcept {
  // Branch-free multiplication by x: the reduction mask comes from the top bit.
  return static_cast<std::uint8_t>((a << 1) ^ (0x1b & (0u - (a >> 7))));
}

void shift_rows(std::uint8_t s[16]) noexcept {
  std::uint8_t t[16];
  for (unsigned c = 0; c < 4; ++c)
    for (unsigned r = 0; r < 4; ++r) t[c * 4 + r] = s[((c + r) % 4) * 4 + r];
  std::memcpy(s, t, 16);
}

void mix_columns(std::uint8_t s[16]) noexcept {
  for (unsigned c = 0; c < 4; ++c) {
    std::uint8_t* a = s + 4 * c;
    const std::uint8_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    const std::uint8_t all = static_cast<std::uint8_t>(a0 ^ a1 ^ a2 ^ a3);
    a[0] = static_cast<std::uint8_t>(a0 ^ all ^ xtime(static_cast<std::uint8_t>(a0 ^ a1)));
    a[1] = static_cast<std::uint8_t>(a1 ^ all ^ xtime(static_cast<std::uint8_t>(a1 ^ a2)));
    a[2] = static_cast<std::uint8_t>(a2 ^ all ^ xtime(static_cast<std::uint8_t>(a2 ^ a3)));
    a[3] = static_cast<std::uint8_t>(a3 ^ all ^ xtime(static_cast<std::uint8_t>(a3 ^ a0)));
  }
}

inline void store_be64(std::uint8_t* p, std::uint64_t v) noexcept {
  for (int i = 7; i >= 0; --i) {
    p[i] = static_cast<std::uint8_t>(v);
    v >>= 8;
  }
}

// Encrypts four blocks in place (64 bytes: one S-box batch).
void encrypt4(const std::uint8_t* rk, std::uint8_t state[64]) noexcept {
  for (unsigned b = 0; b < 4; ++b)
    for (unsigned i = 0; i < 16; ++i) state[16 * b + i] ^= rk[i];
  for (unsigned round = 1; round <= kRounds; ++round) {
    sub_bytes64(state);
    for (unsigned b = 0; b < 4; ++b) {
      shift_rows(state + 16 * b);
      if (round != kRounds) mix_columns(state + 16 * b);
      for (unsigned i = 0; i < 16; ++i) state[16 * b + i] ^= rk[16 * round + i];
    }
  }
}

}  // namespace

RoundKeys expand_key(const std::uint8_t key[kKeyBytes]) noexcept {
  static constexpr std::uint8_t kRcon[10] = {0x01, 0x02, 0x04, 0x08, 0x10,
                                             0x20, 0x40, 0x80, 0x1b, 0x36};
  RoundKeys rk;
  std::uint8_t* w = rk.bytes;
  std::memcpy(w, key, kKeyBytes);
  for (unsigned i = 4; i < 4 * (kRounds + 1); ++i) {
    std::uint8_t temp[64] = {};
    std::memcpy(temp, w + 4 * (i - 1), 4);
    if (i % 4 == 0) {
      const std::uint8_t first = temp[0];  // RotWord, then SubWord, then Rcon.
      temp[0] = temp[1];
      temp[1] = temp[2];
      temp[2] = temp[3];
      temp[3] = first;
      sub_bytes64(temp);
      temp[0] ^= kRcon[i / 4 - 1];
    }
    for (unsigned j = 0; j < 4; ++j)
      w[4 * i + j] = static_cast<std::uint8_t>(w[4 * (i - 4) + j] ^ temp[j]);
    secure_zero(temp, sizeof temp);
  }
  return rk;
}

namespace detail {

void ctr_blocks_portable(const std::uint8_t* round_keys, std::uint64_t hi, std::uint64_t lo,
                         std::uint8_t* out, std::size_t nblocks) {
  std::uint8_t state[64];
  while (nblocks > 0) {
    const std::size_t m = nblocks < 4 ? nblocks : 4;
    for (std::size_t b = 0; b < 4; ++b) {
      store_be64(state + 16 * b, hi);
      store_be64(state + 16 * b + 8, lo + b);  // lanes past m are computed and discarded
    }
    encrypt4(round_keys, state);
    std::memcpy(out, state, 16 * m);
    out += 16 * m;
    lo += m;
    nblocks -= m;
  }
  secure_zero(state, sizeof state);
}

}  // namespace detail
}  // namespace securefl::aes
