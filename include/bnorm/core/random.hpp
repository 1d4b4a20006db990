// bnorm/core/random.hpp — a seeded generator whose streams are identical on every platform
// (std:: distributions are implementation-defined, so bnorm draws its own).
#pragma once

#include <array>
#include <cstdint>
#include <span>

namespace bnorm {

// xoshiro256** seeded through splitmix64.
class Random {
 public:
  // The generator's whole state: saving it and restoring it with from_state continues the
  // stream exactly where it was (what an exact resume of training needs).
  using State = std::array<std::uint64_t, 4>;

  explicit Random(std::uint64_t seed = 0) noexcept;
  // ValueError for the all-zero state: xoshiro's one fixed point, which no seed reaches (it would
  // draw 0 forever), so such a state can only come from a damaged file.
  static Random from_state(const State& state);
  State state() const noexcept { return {s_[0], s_[1], s_[2], s_[3]}; }
  bool operator==(const Random& other) const noexcept { return state() == other.state(); }
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
