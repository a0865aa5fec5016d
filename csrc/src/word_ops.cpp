#include "securefl/word_ops.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
// Runtime-dispatched clones (GNU ifunc); the baseline clone runs on any x86-64.
#define SECUREFL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SECUREFL_CLONES
#endif

namespace securefl::detail {

#define SECUREFL_WORD_LOOPS(T)                                                          \
  SECUREFL_CLONES void add_words(T* __restrict acc, const T* __restrict x,             \
                                 std::size_t n) noexcept {                              \
    for (std::size_t i = 0; i < n; ++i) acc[i] = static_cast<T>(acc[i] + x[i]);         \
  }                                                                                     \
  SECUREFL_CLONES void sub_words(T* __restrict acc, const T* __restrict x,             \
                                 std::size_t n) noexcept {                              \
    for (std::size_t i = 0; i < n; ++i) acc[i] = static_cast<T>(acc[i] - x[i]);         \
  }                                                                                     \
  SECUREFL_CLONES void and_words(T* __restrict acc, T mask, std::size_t n) noexcept {   \
    for (std::size_t i = 0; i < n; ++i) acc[i] &= mask;                                 \
  }

SECUREFL_WORD_LOOPS(std::uint32_t)
SECUREFL_WORD_LOOPS(std::uint64_t)

#undef SECUREFL_WORD_LOOPS

}  // namespace securefl::detail
