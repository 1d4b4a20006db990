// bnorm/core/denormal.hpp — flush-to-zero for denormal (subnormal) floats.
#pragma once

namespace bnorm {

// While alive, the calling thread treats denormal float inputs as zero and flushes denormal
// results to zero (x86 FTZ + DAZ); the previous mode is restored on destruction. TensorFlow runs
// its CPU kernels the same way, so Keras results are computed without denormals too. Training
// needs it: Adam's moments of rarely-updated weights decay into the denormal range, where every
// operation on them costs ~100 cycles (the seed model's epochs slowed by 2x). Sequential's
// fit/train_on_batch/evaluate/predict hold one; parallel_for passes the mode on to its workers.
// A no-op on CPUs without these flags.
class ScopedFlushDenormal {
 public:
  ScopedFlushDenormal() noexcept;
  ~ScopedFlushDenormal();
  ScopedFlushDenormal(const ScopedFlushDenormal&) = delete;
  ScopedFlushDenormal& operator=(const ScopedFlushDenormal&) = delete;

 private:
  unsigned saved_ = 0;
};

// Whether the calling thread currently flushes denormals.
bool flushing_denormals() noexcept;

}  // namespace bnorm
