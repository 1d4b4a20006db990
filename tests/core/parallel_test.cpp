// parallel_for: every index exactly once; chunking independent of the thread count.
#include "bnorm/core/parallel.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/core/error.hpp"

namespace bnorm {
namespace {

// Restores the thread count a test changed.
class ThreadCountGuard {
 public:
  ThreadCountGuard() : saved_(num_threads()) {}
  ~ThreadCountGuard() { set_num_threads(saved_); }

 private:
  int saved_;
};

// Issue 16 item 2: one policy for every way of setting the count: 1 .. 4 x hardware threads;
// outside it a ValueError naming the range, and the count stays what it was (100000 crashed
// inside libgomp).
TEST(ParallelTest, SetNumThreadsRefusesCountsOutsideThePolicy) {
  ThreadCountGuard guard;
  set_num_threads(2);
  const int most = max_num_threads();
  EXPECT_GE(most, 4);
  for (int bad : {0, -5, most + 1, 100000}) {
    try {
      set_num_threads(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const ValueError& e) {
      EXPECT_NE(std::string(e.what()).find("1.." + std::to_string(most)), std::string::npos)
          << e.what();
    }
    EXPECT_EQ(num_threads(), 2) << "unchanged after a refused count";
  }
  set_num_threads(most);
  EXPECT_EQ(num_threads(), most);
}

TEST(ParallelTest, CoversEveryIndexExactlyOnce) {
  ThreadCountGuard guard;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    for (std::int64_t count : {1, 7, 64, 1000, 10007}) {
      for (std::int64_t grain : {1, 3, 64, 5000}) {
        std::vector<std::atomic<int>> hits(static_cast<std::size_t>(count));
        parallel_for(count, grain, [&](std::int64_t begin, std::int64_t end) {
          ASSERT_LE(0, begin);
          ASSERT_LT(begin, end);
          ASSERT_LE(end, count);
          for (std::int64_t i = begin; i < end; ++i) hits[static_cast<std::size_t>(i)]++;
        });
        for (std::int64_t i = 0; i < count; ++i) {
          ASSERT_EQ(hits[static_cast<std::size_t>(i)].load(), 1)
              << "index " << i << " count " << count << " grain " << grain << " threads "
              << threads;
        }
      }
    }
  }
}

TEST(ParallelTest, ZeroCountCallsNothing) {
  int calls = 0;
  parallel_for(0, 16, [&](std::int64_t, std::int64_t) { ++calls; });
  parallel_for(-3, 16, [&](std::int64_t, std::int64_t) { ++calls; });
  EXPECT_EQ(calls, 0);
}

std::set<std::pair<std::int64_t, std::int64_t>> chunks_at(int threads, std::int64_t count,
                                                          std::int64_t grain) {
  set_num_threads(threads);
  std::mutex mu;
  std::set<std::pair<std::int64_t, std::int64_t>> chunks;
  parallel_for(count, grain, [&](std::int64_t b, std::int64_t e) {
    std::lock_guard<std::mutex> lock(mu);
    chunks.insert({b, e});
  });
  return chunks;
}

TEST(ParallelTest, ChunkingDoesNotDependOnThreadCount) {
  ThreadCountGuard guard;
  const auto one = chunks_at(1, 12345, 100);
  EXPECT_EQ(chunks_at(2, 12345, 100), one);
  EXPECT_EQ(chunks_at(4, 12345, 100), one);
  // Chunks are at least `grain` long except possibly the last.
  for (const auto& [b, e] : one) {
    if (e != 12345) {
      EXPECT_GE(e - b, 100);
    }
  }
}

// A chunked sum whose per-chunk partials are combined in chunk order.
float chunked_sum(const std::vector<float>& v, std::int64_t grain) {
  const auto n = static_cast<std::int64_t>(v.size());
  std::mutex mu;
  std::vector<std::pair<std::int64_t, float>> partials;
  parallel_for(n, grain, [&](std::int64_t b, std::int64_t e) {
    float s = 0.0f;
    for (std::int64_t i = b; i < e; ++i) s += v[static_cast<std::size_t>(i)];
    std::lock_guard<std::mutex> lock(mu);
    partials.emplace_back(b, s);
  });
  std::sort(partials.begin(), partials.end());
  float total = 0.0f;
  for (const auto& p : partials) total += p.second;
  return total;
}

TEST(ParallelTest, ChunkedReductionGivesSameBitsAtOneAndTwoThreads) {
  ThreadCountGuard guard;
  std::vector<float> v(100003);
  std::uint32_t state = 12345;
  for (float& x : v) {
    state = state * 1664525u + 1013904223u;
    x = static_cast<float>(state >> 8) * (1.0f / 16777216.0f) * 1000.0f - 400.0f;
  }
  set_num_threads(1);
  const float s1 = chunked_sum(v, 1000);
  set_num_threads(2);
  const float s2 = chunked_sum(v, 1000);
  EXPECT_EQ(std::memcmp(&s1, &s2, sizeof(float)), 0) << s1 << " vs " << s2;
}

}  // namespace
}  // namespace bnorm
