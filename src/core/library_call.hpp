// src/core/library_call.hpp — the boundary around a call into a third-party library that runs
// its own OpenMP code (oneDNN's convolutions).
//
// While a ScopedLibraryCall is alive on a thread:
//  - the library sizes its OpenMP teams at one thread (the thread's nthreads setting is 1; inside
//    a parallel_for chunk the library is nested and runs on one thread anyway). bnorm splits the
//    work itself, in fixed chunks, so a result never depends on the thread count (DESIGN
//    convention 7), and a primitive set up under the scope is set up for one thread, the way it
//    then runs;
//  - the thread is marked as inside a library call, so that the allocation tests can tell the
//    small execution contexts a library builds per call (oneDNN: 7 small allocations per
//    forward call, freed before it returns) from bnorm's own allocations, of which a training step
//    makes none.
// The previous setting is restored on destruction. Scopes nest.
#pragma once

namespace bnorm {

class ScopedLibraryCall {
 public:
  ScopedLibraryCall() noexcept;
  ~ScopedLibraryCall();
  ScopedLibraryCall(const ScopedLibraryCall&) = delete;
  ScopedLibraryCall& operator=(const ScopedLibraryCall&) = delete;

  // Whether the calling thread is inside a ScopedLibraryCall.
  static bool active() noexcept;

 private:
  int saved_threads_;
};

}  // namespace bnorm
