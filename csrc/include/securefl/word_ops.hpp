// Element-wise loops over small, cache-resident word arrays. Defined in word_ops.cpp
// with one clone per instruction set (AVX-512, AVX2, baseline) chosen at load time.
#pragma once

#include <cstddef>
#include <cstdint>

namespace securefl::detail {

void add_words(std::uint32_t* acc, const std::uint32_t* x, std::size_t n) noexcept;
void add_words(std::uint64_t* acc, const std::uint64_t* x, std::size_t n) noexcept;
void sub_words(std::uint32_t* acc, const std::uint32_t* x, std::size_t n) noexcept;
void sub_words(std::uint64_t* acc, const std::uint64_t* x, std::size_t n) noexcept;
void and_words(std::uint32_t* acc, std::uint32_t mask, std::size_t n) noexcept;
void and_words(std::uint64_t* acc, std::uint64_t mask, std::size_t n) noexcept;

}  // namespace securefl::detail
