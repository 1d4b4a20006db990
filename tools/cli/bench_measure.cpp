// bnorm bench — the measuring instruments: medians, the STREAM triad bandwidth probe and the
// FP32 peak (FMA) probe.
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>

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

// `amount` / seconds of each of max(1, reps) timed calls of `run`, after one untimed call.
template <class Run>
std::vector<double> rates_per_rep(int reps, double amount, Run&& run) {
  run();
  std::vector<double> rates;
  for (int r = 0; r < std::max(1, reps); ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    rates.push_back(amount /
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return rates;
}

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
  // Rates per rep; the first, untimed call wakes the thread pool and settles the pages.
  return median(rates_per_rep(reps, 12.0 * static_cast<double>(n) / 1e9, triad));
}

namespace {

// Each loop iteration: kAccumulators independent FMAs (acc = acc * a + b), enough chains in
// flight to cover the FMA latency on two ports; a and b keep acc finite and normal.
constexpr int kAccumulators = 12;
constexpr std::int64_t kFmaIterations = std::int64_t{1} << 21;

// One FMA loop per instruction set, the same code with that set's vector type and intrinsics:
// ATTRS the function's attributes (its target), V the vector type of LANES floats.
#define BNORM_FMA_LOOP(NAME, ATTRS, V, LANES, SET1, FMADD, STORE)                                \
  ATTRS float NAME(std::int64_t n) noexcept {                                                    \
    V acc[kAccumulators];                                                                        \
    for (int i = 0; i < kAccumulators; ++i) acc[i] = SET1(1.0f + 0.01f * static_cast<float>(i)); \
    const V a = SET1(0.999999f), b = SET1(1e-6f);                                                \
    for (std::int64_t it = 0; it < n; ++it) {                                                    \
      _Pragma("GCC unroll 12") for (int i = 0; i < kAccumulators; ++i) acc[i] =                  \
          FMADD(acc[i], a, b);                                                                   \
    }                                                                                            \
    alignas(64) float lanes[LANES * kAccumulators];                                              \
    for (int i = 0; i < kAccumulators; ++i) STORE(lanes + LANES * i, acc[i]);                    \
    float sum = 0.0f;                                                                            \
    for (float v : lanes) sum += v;                                                              \
    return sum;                                                                                  \
  }

inline float scalar_set1(float v) noexcept { return v; }
inline void scalar_store(float* p, float v) noexcept { *p = v; }

BNORM_FMA_LOOP(fma_loop_scalar, __attribute__((noinline)), float, 1, scalar_set1, std::fma,
               scalar_store)
#if defined(__x86_64__)
BNORM_FMA_LOOP(fma_loop_avx512, __attribute__((target("avx512f"), noinline)), __m512, 16,
               _mm512_set1_ps, _mm512_fmadd_ps, _mm512_store_ps)
BNORM_FMA_LOOP(fma_loop_avx2, __attribute__((target("avx2,fma"), noinline)), __m256, 8,
               _mm256_set1_ps, _mm256_fmadd_ps, _mm256_store_ps)
#endif
#undef BNORM_FMA_LOOP

}  // namespace

Fp32Peak measure_fp32_peak(int reps) {
  using Loop = float (*)(std::int64_t) noexcept;
  Loop loop = fma_loop_scalar;
  int lanes = 1;
  Fp32Peak peak;
  peak.isa = "scalar";
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f")) {
    loop = fma_loop_avx512;
    lanes = 16;
    peak.isa = "AVX-512";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    loop = fma_loop_avx2;
    lanes = 8;
    peak.isa = "AVX2+FMA";
  }
#endif
  const int threads = num_threads();
  std::vector<float> sinks(static_cast<std::size_t>(threads));
  // One index per thread (parallel_for's static schedule), one whole loop each.
  auto run = [&] {
    parallel_for(threads, 1, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t t = begin; t < end; ++t)
        sinks[static_cast<std::size_t>(t)] += loop(kFmaIterations);
    });
  };
  const double gflop =
      2.0 * lanes * kAccumulators * static_cast<double>(kFmaIterations) * threads / 1e9;
  const std::vector<double> gflops = rates_per_rep(reps, gflop, run);
  // The best rep, not the median: a peak is what the core does when nothing else interrupts it.
  peak.gflops = *std::max_element(gflops.begin(), gflops.end());
  peak.gflops_per_core = peak.gflops / threads;
  return peak;
}

}  // namespace bnorm::cli::bench
