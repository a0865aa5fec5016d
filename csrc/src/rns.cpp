#include "securefl/rns.hpp"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include "securefl/common.hpp"
#include "securefl/parallel.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define SECUREFL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SECUREFL_CLONES
#endif

namespace securefl::rns {
namespace {

constexpr std::size_t kChunk = 1024;  // coefficients per unit of work (8 KiB)

// acc[i] += x[i]; returns nonzero if some x[i] >= q.
SECUREFL_CLONES unsigned add_checked(std::uint64_t* __restrict acc,
                                     const std::uint64_t* __restrict x, std::size_t n,
                                     std::uint64_t q) noexcept {
  unsigned bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    bad |= x[i] >= q;
    acc[i] += x[i];
  }
  return bad;
}

SECUREFL_CLONES unsigned copy_checked(std::uint64_t* __restrict acc,
                                      const std::uint64_t* __restrict x, std::size_t n,
                                      std::uint64_t q) noexcept {
  unsigned bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    bad |= x[i] >= q;
    acc[i] = x[i];
  }
  return bad;
}

// Barrett: acc[i] mod q for any acc[i] < 2^64, with mu = floor(2^64 / q). The
// estimate is at most 2 below the true quotient, hence two corrections.
void reduce(std::uint64_t* acc, std::size_t n, std::uint64_t q, std::uint64_t mu) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t a = acc[i];
    const std::uint64_t qhat =
        static_cast<std::uint64_t>((static_cast<u128>(a) * mu) >> 64);
    std::uint64_t r = a - qhat * q;
    r = r >= q ? r - q : r;
    r = r >= q ? r - q : r;
    acc[i] = r;
  }
}

SECUREFL_CLONES unsigned any_above(const std::uint64_t* __restrict x, std::size_t n,
                                   std::uint64_t q) noexcept {
  unsigned bad = 0;
  for (std::size_t i = 0; i < n; ++i) bad |= x[i] >= q;
  return bad;
}

struct BadCoefficient {
  std::size_t input;
  std::size_t position;  // flat index into [size][L][N]
};

bool overlaps(const std::uint64_t* a, const std::uint64_t* b, std::size_t count) noexcept {
  const auto x = reinterpret_cast<std::uintptr_t>(a);
  const auto y = reinterpret_cast<std::uintptr_t>(b);
  const std::size_t bytes = count * sizeof(std::uint64_t);
  return x < y + bytes && y < x + bytes;
}

}  // namespace

void check_moduli(const std::uint64_t* moduli, std::size_t limbs) {
  for (std::size_t l = 0; l < limbs; ++l)
    if (moduli[l] < 2 || moduli[l] >= kMaxModulus)
      throw std::invalid_argument("modulus q_" + std::to_string(l) + " = " +
                                  std::to_string(moduli[l]) + " is not in [2, 2^62)");
}

void sum(const std::uint64_t* const* inputs, std::size_t n, const Shape& shape,
         const std::uint64_t* moduli, std::uint64_t* out, unsigned threads) {
  if (n == 0) throw std::invalid_argument("rns sum needs at least one input");
  check_moduli(moduli, shape.limbs);
  const std::size_t chunks_per_limb = (shape.degree + kChunk - 1) / kChunk;
  const std::size_t units = shape.size * shape.limbs * chunks_per_limb;

  std::mutex error_lock;
  bool failed = false;
  BadCoefficient first{0, 0};
  auto report = [&](std::size_t input, std::size_t base, std::uint64_t q) {
    const std::uint64_t* x = inputs[input] + base;
    std::size_t i = 0;
    while (x[i] < q) ++i;
    const std::lock_guard<std::mutex> guard(error_lock);
    const BadCoefficient here{input, base + i};
    if (!failed || here.input < first.input ||
        (here.input == first.input && here.position < first.position))
      first = here;
    failed = true;
  };

  // When `out` is one of the inputs (an accumulator), every input is checked before
  // anything is written, so a bad input leaves the accumulator as it was.
  const std::size_t total = shape.size * shape.limbs * shape.degree;
  bool in_place = false;
  for (std::size_t j = 0; j < n; ++j) in_place |= overlaps(out, inputs[j], total);
  if (in_place) {
    parallel_for(units, threads, [&](std::size_t begin, std::size_t end) {
      for (std::size_t u = begin; u < end; ++u) {
        const std::size_t poly_limb = u / chunks_per_limb;
        const std::size_t k0 = (u % chunks_per_limb) * kChunk;
        const std::size_t m = std::min(kChunk, shape.degree - k0);
        const std::size_t base = poly_limb * shape.degree + k0;
        const std::uint64_t q = moduli[poly_limb % shape.limbs];
        for (std::size_t j = 0; j < n; ++j)
          if (any_above(inputs[j] + base, m, q)) {
            report(j, base, q);
            return;
          }
      }
    });
  }

  if (!failed) parallel_for(units, threads, [&](std::size_t begin, std::size_t end) {
    alignas(64) std::uint64_t acc[kChunk];
    for (std::size_t u = begin; u < end; ++u) {
      const std::size_t poly_limb = u / chunks_per_limb;  // s * L + l
      const std::size_t l = poly_limb % shape.limbs;
      const std::size_t k0 = (u % chunks_per_limb) * kChunk;
      const std::size_t m = std::min(kChunk, shape.degree - k0);
      const std::size_t base = poly_limb * shape.degree + k0;
      const std::uint64_t q = moduli[l];
      const std::uint64_t mu =
          static_cast<std::uint64_t>((static_cast<u128>(1) << 64) / q);
      // acc stays below (pending + 1) * q <= 2^64 - 1 between reductions.
      const std::uint64_t max_pending = ~std::uint64_t{0} / q - 1;

      std::size_t bad_input = n;
      if (copy_checked(acc, inputs[0] + base, m, q)) bad_input = 0;
      std::uint64_t pending = 0;
      for (std::size_t j = 1; j < n && bad_input == n; ++j) {
        if (pending == max_pending) {
          reduce(acc, m, q, mu);
          pending = 0;
        }
        if (add_checked(acc, inputs[j] + base, m, q)) bad_input = j;
        ++pending;
      }
      if (bad_input != n) {
        report(bad_input, base, q);
        return;  // this thread's remaining work is moot
      }
      reduce(acc, m, q, mu);
      std::memcpy(out + base, acc, m * sizeof(std::uint64_t));
    }
  });
  if (failed) {
    const std::size_t per_poly = shape.limbs * shape.degree;
    const std::size_t s = first.position / per_poly;
    const std::size_t l = (first.position % per_poly) / shape.degree;
    const std::size_t k = first.position % shape.degree;
    throw std::invalid_argument(
        "input " + std::to_string(first.input) + ": coefficient " +
        std::to_string(inputs[first.input][first.position]) + " at [" + std::to_string(s) +
        "][" + std::to_string(l) + "][" + std::to_string(k) + "] is not below q_" +
        std::to_string(l) + " = " + std::to_string(moduli[l]));
  }
}

}  // namespace securefl::rns
