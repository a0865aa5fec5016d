// Pairwise-mask arithmetic in the ring Z_{2^b}: masked accumulation and n-way sums.
//
// Ring elements are stored in uint32 (b <= 32) or uint64 (b <= 64) words. The mask
// expanded from a key is its AES-128-CTR keystream (counter from 0) read as
// little-endian words of the storage width, each reduced modulo 2^b.
#pragma once

#include <cstddef>
#include <cstdint>

#include "securefl/aes.hpp"

namespace securefl::masking {

// acc[i] = (acc[i] + sum_j signs[j] * mask(keys[j])[i]) mod 2^bits, for i < len.
// `keys` holds nkeys 16-byte keys back to back. Work is cache-blocked: every key is
// applied to one small chunk of acc before the next chunk, so acc is read and
// written once whatever the number of keys. Threads split the chunks.
// @throws std::invalid_argument if bits is not in [1, 8 * sizeof(T)], a sign is not
//         +1 or -1, or the backend is unavailable.
template <class T>
void masked_accumulate(T* acc, std::size_t len, const std::uint8_t* keys,
                       const std::int8_t* signs, std::size_t nkeys, unsigned bits,
                       unsigned threads, aes::Backend backend);

// out[i] = (inputs[0][i] + ... + inputs[n-1][i]) mod 2^bits, each input read once.
// `out` may be one of the inputs.
// @throws std::invalid_argument if n == 0 or bits is out of range.
template <class T>
void sum_mod(const T* const* inputs, std::size_t n, std::size_t len, T* out, unsigned bits,
             unsigned threads);

// @throws std::invalid_argument unless 1 <= bits <= 8 * sizeof(T).
template <class T>
void check_bits(unsigned bits);

// Bytes needed to pack n elements of `bits` bits: ceil(n * bits / 8).
std::size_t packed_size(std::size_t n, unsigned bits) noexcept;

// Packs n ring elements, `bits` bits each, least significant bit first, into
// packed_size(n, bits) bytes (the last byte's unused high bits are zero).
// @throws std::invalid_argument if an element is >= 2^bits (naming its index).
template <class T>
void pack_bits(const T* in, std::size_t n, unsigned bits, std::uint8_t* out);

// Inverse of pack_bits.
// @throws std::invalid_argument if the unused high bits of the last byte are not zero
//         (one canonical encoding per vector).
template <class T>
void unpack_bits(const std::uint8_t* in, std::size_t n, unsigned bits, T* out);

}  // namespace securefl::masking
