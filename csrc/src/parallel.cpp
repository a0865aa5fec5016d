#include "securefl/parallel.hpp"

#if defined(__linux__)
#include <sched.h>
#endif

namespace securefl {

unsigned available_cores() noexcept {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<unsigned>(n);
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? n : 1;
}

unsigned effective_threads(unsigned requested, std::size_t units) noexcept {
  std::size_t t = requested == 0 ? available_cores() : requested;
  if (t > units) t = units;
  return t == 0 ? 1 : static_cast<unsigned>(t);
}

}  // namespace securefl
