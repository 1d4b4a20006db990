// bnorm/core/parallel.hpp — the one threading entry point (OpenMP inside, never in headers).
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

namespace bnorm {

// Number of threads parallel_for uses. (BLAS always runs on one thread: see kernels/gemm.cpp.)
int num_threads() noexcept;
// The most threads set_num_threads accepts: 4 x the machine's hardware threads
// (std::thread::hardware_concurrency(); 1 when unknown). More threads than that only wait on each
// other, and counts like 100000 crash inside libgomp (SIGSEGV) or spend minutes creating threads.
int max_num_threads() noexcept;
// Sets the thread count for bnorm's kernels: the one place the policy lives (the CLI's --threads
// and BNORM_NUM_THREADS and the Python module all come here). ValueError "thread count N ..."
// naming the valid range for n < 1 or n > max_num_threads(); nothing changes then.
void set_num_threads(int n);

// A non-owning reference to a callable body(begin, end): unlike std::function it never
// allocates, so a kernel can call parallel_for on every training step for free.
class ChunkBody {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, ChunkBody>>>
  ChunkBody(F&& f) noexcept  // NOLINT(google-explicit-constructor): built at the call site
      : object_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, std::int64_t b, std::int64_t e) {
          (*static_cast<std::remove_reference_t<F>*>(o))(b, e);
        }) {}
  void operator()(std::int64_t begin, std::int64_t end) const { call_(object_, begin, end); }

 private:
  void* object_;
  void (*call_)(void*, std::int64_t, std::int64_t);
};

// Calls body(begin, end) over fixed chunks of [0, count) of `grain` items (the last may be
// shorter). The chunking depends only on count and grain, never on the thread count, so any
// reduction a caller combines per chunk in chunk order gives the same bits at 1 or 16 threads.
// The body must outlive the call (it is referenced, not copied).
void parallel_for(std::int64_t count, std::int64_t grain, ChunkBody body);

}  // namespace bnorm
