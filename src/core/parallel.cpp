#include "bnorm/core/parallel.hpp"

#include <omp.h>

#include <algorithm>
#include <optional>
#include <string>
#include <thread>

#include "bnorm/core/denormal.hpp"
#include "bnorm/core/error.hpp"
#include "core/library_call.hpp"

namespace bnorm {

namespace {
int g_threads = 0;  // 0 = not set yet: use OpenMP's default
thread_local int t_library_call_depth = 0;
}  // namespace

ScopedLibraryCall::ScopedLibraryCall() noexcept : saved_threads_(omp_get_max_threads()) {
  omp_set_num_threads(1);
  ++t_library_call_depth;
}

ScopedLibraryCall::~ScopedLibraryCall() {
  --t_library_call_depth;
  omp_set_num_threads(saved_threads_);
}

bool ScopedLibraryCall::active() noexcept { return t_library_call_depth > 0; }

int num_threads() noexcept { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

int max_num_threads() noexcept {
  const unsigned hardware = std::thread::hardware_concurrency();
  return 4 * static_cast<int>(std::clamp(hardware, 1u, 1u << 16));
}

void set_num_threads(int n) {
  const int most = max_num_threads();
  if (n < 1 || n > most) {
    throw ValueError("thread count " + std::to_string(n) + " is outside 1.." +
                     std::to_string(most) + " (at most 4 x this machine's " +
                     std::to_string(most / 4) + " hardware threads)");
  }
  g_threads = n;
  omp_set_num_threads(g_threads);
}

void parallel_for(std::int64_t count, std::int64_t grain, ChunkBody body) {
  if (count <= 0) return;
  grain = std::max<std::int64_t>(grain, 1);
  const std::int64_t chunks = (count + grain - 1) / grain;
  if (chunks == 1 || num_threads() == 1) {
    for (std::int64_t c = 0; c < chunks; ++c) body(c * grain, std::min(count, (c + 1) * grain));
    return;
  }
  // Worker threads have their own floating-point mode: hand them the caller's denormal mode.
  const bool flush = flushing_denormals();
#pragma omp parallel num_threads(num_threads())
  {
    std::optional<ScopedFlushDenormal> scope;
    if (flush) scope.emplace();
#pragma omp for schedule(static)
    for (std::int64_t c = 0; c < chunks; ++c) body(c * grain, std::min(count, (c + 1) * grain));
  }
}

}  // namespace bnorm
