// Splits a loop over independent work units across threads.
#pragma once

#include <cstddef>
#include <exception>
#include <thread>
#include <utility>
#include <vector>

namespace securefl {

// The number of cores this process may run on (its CPU affinity), at least 1.
unsigned available_cores() noexcept;

// 0 means "all available cores"; the result is at least 1 and at most `units`.
unsigned effective_threads(unsigned requested, std::size_t units) noexcept;

// Calls fn(begin, end) on contiguous, disjoint ranges covering [0, units), one range
// per thread; the calling thread takes the first range. Rethrows the first exception.
template <class Fn>
void parallel_for(std::size_t units, unsigned threads, Fn&& fn) {
  const unsigned t = effective_threads(threads, units);
  if (t <= 1) {
    if (units > 0) fn(std::size_t{0}, units);
    return;
  }
  std::vector<std::exception_ptr> errors(t);
  std::vector<std::thread> workers;
  workers.reserve(t - 1);
  auto range = [&](unsigned i) {
    return std::pair<std::size_t, std::size_t>(units * i / t, units * (i + 1) / t);
  };
  for (unsigned i = 1; i < t; ++i) {
    workers.emplace_back([&, i] {
      try {
        const auto [b, e] = range(i);
        fn(b, e);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    });
  }
  try {
    const auto [b, e] = range(0);
    fn(b, e);
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& w : workers) w.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace securefl
