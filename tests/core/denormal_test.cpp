#include "bnorm/core/denormal.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <limits>

#include "bnorm/core/parallel.hpp"

namespace bnorm {
namespace {

// Arithmetic the compiler cannot fold: the operands are read through volatile.
float times_one(float v) {
  volatile float a = v, b = 1.0f;
  return a * b;
}

TEST(ScopedFlushDenormal, FlushesWhileAliveAndRestoresAfter) {
  const float tiny = std::numeric_limits<float>::denorm_min() * 8;
  ASSERT_GT(times_one(tiny), 0.0f);
  {
    const ScopedFlushDenormal scope;
#if defined(__x86_64__)
    EXPECT_TRUE(flushing_denormals());
    EXPECT_EQ(times_one(tiny), 0.0f);
#endif
    EXPECT_EQ(times_one(1.5f), 1.5f);  // normal numbers are untouched
  }
  EXPECT_FALSE(flushing_denormals());
  EXPECT_GT(times_one(tiny), 0.0f);
}

TEST(ScopedFlushDenormal, ParallelForWorkersInheritTheMode) {
#if defined(__x86_64__)
  set_num_threads(2);
  const ScopedFlushDenormal scope;
  std::atomic<int> not_flushing{0};
  parallel_for(64, 1, [&](std::int64_t, std::int64_t) {
    if (!flushing_denormals()) ++not_flushing;
  });
  EXPECT_EQ(not_flushing.load(), 0);
  set_num_threads(1);
#else
  GTEST_SKIP() << "no FTZ/DAZ on this CPU";
#endif
}

}  // namespace
}  // namespace bnorm
