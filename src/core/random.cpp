#include "bnorm/core/random.hpp"

#include <cmath>
#include <utility>

#include "bnorm/core/error.hpp"

namespace bnorm {

namespace {
std::uint64_t splitmix64(std::uint64_t& x) noexcept {
  std::uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
}  // namespace

Random::Random(std::uint64_t seed) noexcept {
  for (auto& s : s_) s = splitmix64(seed);
}

Random Random::from_state(const State& state) {
  if (state == State{}) {
    throw ValueError(
        "Random: the all-zero state is not a state of the generator (it never leaves it)");
  }
  Random r;
  for (std::size_t i = 0; i < 4; ++i) r.s_[i] = state[i];
  return r;
}

std::uint64_t Random::next_u64() noexcept {
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

float Random::uniform() noexcept {
  return static_cast<float>(next_u64() >> 40) * (1.0f / 16777216.0f);
}

std::uint64_t Random::below(std::uint64_t bound) noexcept {
  // Rejection sampling: drop the top partial bucket so every value is equally likely.
  const std::uint64_t limit = ~std::uint64_t{0} - (~std::uint64_t{0} % bound);
  std::uint64_t r;
  do {
    r = next_u64();
  } while (r >= limit);
  return r % bound;
}

float Random::normal() noexcept {
  const double u1 = (static_cast<double>(next_u64() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
  const double u2 = static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

Random Random::split() noexcept { return Random(next_u64()); }

void Random::shuffle(std::span<std::int64_t> values) noexcept {
  for (std::size_t i = values.size(); i > 1; --i) {
    const std::size_t j = static_cast<std::size_t>(below(i));
    std::swap(values[i - 1], values[j]);
  }
}

}  // namespace bnorm
