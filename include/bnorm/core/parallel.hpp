// bnorm/core/parallel.hpp — the one threading entry point (OpenMP inside, never in headers).
#pragma once

#include <cstdint>
#include <functional>

namespace bnorm {

// Number of threads parallel_for uses. (BLAS always runs on one thread: see kernels/gemm.cpp.)
int num_threads() noexcept;
// Sets the thread count for bnorm's kernels; n < 1 is clamped to 1.
void set_num_threads(int n) noexcept;

// Calls body(begin, end) over fixed chunks of [0, count) of at least `grain` items. The
// chunking depends only on count and grain, never on the thread count, so any reduction a
// caller combines per chunk in chunk order gives the same bits at 1 or 16 threads.
void parallel_for(std::int64_t count, std::int64_t grain,
                  const std::function<void(std::int64_t, std::int64_t)>& body);

}  // namespace bnorm
