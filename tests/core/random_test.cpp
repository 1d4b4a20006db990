// Random: cross-platform determinism (xoshiro256** seeded by splitmix64), ranges, shuffle.
#include "bnorm/core/random.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace bnorm {
namespace {

// Independent transcription of the published algorithms (Blackman & Vigna, prng.di.unimi.it).
struct ReferenceXoshiro {
  std::uint64_t s[4];
  static std::uint64_t splitmix64(std::uint64_t& x) {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  explicit ReferenceXoshiro(std::uint64_t seed) {
    for (auto& v : s) v = splitmix64(seed);
  }
  std::uint64_t next() {
    const std::uint64_t result = rotl(s[1] * 5, 7) * 9;
    const std::uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  }
};

TEST(RandomTest, ReferenceSplitmixMatchesPublishedValue) {
  std::uint64_t x = 0;
  EXPECT_EQ(ReferenceXoshiro::splitmix64(x), 0xe220a8397b1dcdafull);  // splitmix64(0), first
}

TEST(RandomTest, StreamIsXoshiro256StarStarSeededBySplitmix64) {
  for (std::uint64_t seed : {0ull, 1ull, 42ull, 0xdeadbeefcafef00dull}) {
    Random rng(seed);
    ReferenceXoshiro ref(seed);
    for (int i = 0; i < 100; ++i)
      ASSERT_EQ(rng.next_u64(), ref.next()) << "seed " << seed << " i " << i;
  }
}

TEST(RandomTest, SameSeedSameStream) {
  Random a(7), b(7), c(8);
  bool differs = false;
  for (int i = 0; i < 1000; ++i) {
    const float ua = a.uniform(), ub = b.uniform(), uc = c.uniform();
    EXPECT_EQ(ua, ub);
    differs |= ua != uc;
    EXPECT_EQ(a.normal(), b.normal());
    EXPECT_EQ(a.below(13), b.below(13));
  }
  EXPECT_TRUE(differs);
}

TEST(RandomTest, UniformHas24BitsInUnitInterval) {
  Random rng(3);
  double sum = 0.0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const float u = rng.uniform();
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    const float scaled = u * 16777216.0f;
    ASSERT_EQ(scaled, std::floor(scaled)) << "not a multiple of 2^-24: " << u;
    sum += u;
  }
  EXPECT_NEAR(sum / n, 0.5, 0.01);
  for (int i = 0; i < 1000; ++i) {
    const float u = rng.uniform(-3.0f, 5.0f);
    ASSERT_GE(u, -3.0f);
    ASSERT_LT(u, 5.0f);
  }
}

TEST(RandomTest, BelowIsInRangeAndCoversAllValues) {
  Random rng(11);
  std::vector<int> counts(7, 0);
  const int n = 70000;
  for (int i = 0; i < n; ++i) {
    const std::uint64_t v = rng.below(7);
    ASSERT_LT(v, 7u);
    ++counts[v];
  }
  for (int c : counts) EXPECT_NEAR(c, n / 7, 600);  // ~6 standard deviations
  EXPECT_EQ(rng.below(1), 0u);
}

TEST(RandomTest, NormalMoments) {
  Random rng(5);
  const int n = 200000;
  double s = 0.0, ss = 0.0;
  for (int i = 0; i < n; ++i) {
    const double v = rng.normal();
    ASSERT_TRUE(std::isfinite(v));
    s += v;
    ss += v * v;
  }
  const double mean = s / n;
  EXPECT_NEAR(mean, 0.0, 0.015);
  EXPECT_NEAR(ss / n - mean * mean, 1.0, 0.02);
}

TEST(RandomTest, SplitGivesAnIndependentDeterministicStream) {
  Random a(9), b(9);
  Random a1 = a.split(), b1 = b.split();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a1.next_u64(), b1.next_u64());
  // The child stream differs from the parent's continuation.
  Random parent(9);
  Random child = parent.split();
  int equal = 0;
  for (int i = 0; i < 100; ++i) equal += child.next_u64() == parent.next_u64();
  EXPECT_LT(equal, 2);
}

TEST(RandomTest, ShuffleIsADeterministicPermutation) {
  std::vector<std::int64_t> v(1000), w(1000);
  std::iota(v.begin(), v.end(), 0);
  w = v;
  Random a(21), b(21);
  a.shuffle(v);
  b.shuffle(w);
  EXPECT_EQ(v, w);
  std::vector<std::int64_t> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::int64_t> identity(1000);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(sorted, identity);  // a permutation: every index exactly once
  int fixed = 0;
  for (std::size_t i = 0; i < v.size(); ++i) fixed += v[i] == static_cast<std::int64_t>(i);
  EXPECT_LT(fixed, 10);  // actually shuffled (expected ~1 fixed point)

  std::vector<std::int64_t> empty;
  a.shuffle(empty);
  std::vector<std::int64_t> one{5};
  a.shuffle(one);
  EXPECT_EQ(one[0], 5);
}

TEST(RandomTest, ShuffleIsUniformOverSmallPermutations) {
  // All 6 permutations of 3 elements appear with roughly equal frequency.
  Random rng(77);
  std::vector<int> counts(6, 0);
  const int n = 60000;
  for (int i = 0; i < n; ++i) {
    std::vector<std::int64_t> v{0, 1, 2};
    rng.shuffle(v);
    const int code = static_cast<int>(v[0] * 2 + (v[1] > v[2] ? 1 : 0));
    ++counts[static_cast<std::size_t>(code)];
  }
  for (int c : counts) EXPECT_NEAR(c, n / 6, 600);
}

}  // namespace
}  // namespace bnorm
