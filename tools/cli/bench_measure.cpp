// bnorm bench — the measuring instruments: medians and the STREAM triad bandwidth probe.
#include <algorithm>
#include <chrono>

#include "bench.hpp"
#include "bnorm/core/parallel.hpp"
#include "bnorm/core/tensor.hpp"

namespace bnorm::cli::bench {

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  const std::size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid), values.end());
  const double upper = values[mid];
  if (values.size() % 2 == 1) return upper;
  const double lower =
      *std::max_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid));
  return 0.5 * (lower + upper);
}

namespace {

// One thread's block of the triad. A function of its own with restrict-qualified parameters, so
// that the compiler vectorizes it without run-time alias checks and keeps s in a register.
__attribute__((noinline)) void triad_block(float* __restrict a, const float* __restrict b,
                                           const float* __restrict c, float s,
                                           std::int64_t count) noexcept {
  for (std::int64_t i = 0; i < count; ++i) a[i] = b[i] + s * c[i];
}

}  // namespace

struct Triad::Arrays {
  Tensor a, b, c;
};

Triad::Triad(std::int64_t mib_per_array) : arrays_(std::make_unique<Arrays>()) {
  const std::int64_t n = mib_per_array * 1024 * 1024 / static_cast<std::int64_t>(sizeof(float));
  // Tensor zero-fills, which touches every page before the first timing.
  arrays_->a = Tensor(Shape{n});
  arrays_->b = Tensor::full(Shape{n}, 1.0f);
  arrays_->c = Tensor::full(Shape{n}, 2.0f);
}

Triad::~Triad() = default;

double Triad::measure_gbps(int reps) {
  float* a = arrays_->a.data();
  const float* b = arrays_->b.data();
  const float* c = arrays_->c.data();
  const std::int64_t n = arrays_->a.size();
  const int threads = num_threads();
  // One contiguous block per thread (parallel_for's static schedule over `threads` chunks),
  // rounded to whole cache lines.
  const std::int64_t grain = ((n + threads - 1) / threads + 15) / 16 * 16;
  const float s = 3.0f;
  auto triad = [&] {
    parallel_for(n, grain, [=](std::int64_t begin, std::int64_t end) {
      triad_block(a + begin, b + begin, c + begin, s, end - begin);
    });
  };
  triad();  // untimed: wakes the thread pool and settles the pages
  std::vector<double> gbps;
  for (int r = 0; r < std::max(1, reps); ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    triad();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    gbps.push_back(12.0 * static_cast<double>(n) / seconds / 1e9);
  }
  return median(std::move(gbps));
}

}  // namespace bnorm::cli::bench
