// bnorm/core/random.hpp — a seeded generator whose streams are identical on every platform
// (std:: distributions are implementation-defined, so bnorm draws its own).
#pragma once

#include <cstdint>
#include <span>

namespace bnorm {

// xoshiro256** seeded through splitmix64.
class Random {
 public:
  explicit Random(std::uint64_t seed = 0) noexcept;
  std::uint64_t next_u64() noexcept;
  // Uniform in [0, 1) with 24 random bits.
  float uniform() noexcept;
  float uniform(float low, float high) noexcept { return low + (high - low) * uniform(); }
  // Uniform integer in [0, bound), unbiased (bound > 0).
  std::uint64_t below(std::uint64_t bound) noexcept;
  // Standard normal (Box-Muller, double precision inside).
  float normal() noexcept;
  // A new independent generator derived from this one (for per-layer streams).
  Random split() noexcept;
  // Fisher-Yates shuffle of a permutation.
  void shuffle(std::span<std::int64_t> values) noexcept;

 private:
  std::uint64_t s_[4];
};

}  // namespace bnorm
