// BN kernels: fast and reference versions against the float64 naive reference in test support,
// over 2-D (inner = 1) and 3-D/4-D (inner > 1) views, degenerate sizes, center/scale off, on
// every instruction set compiled in; fused ReLU and training forward; bitwise determinism over
// thread counts; moving-average closed form; stable moments on large-mean data.
#include "kernels/batch_norm.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/core/isa.hpp"
#include "bnorm/core/parallel.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

using kernels::BatchNormDims;
using test::BnView;

struct Case {
  std::int64_t outer, channels, inner;
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << "[outer " << c.outer << ", channels " << c.channels << ", inner " << c.inner << "]";
}

using IsaCase = std::tuple<Case, std::string>;

std::string case_name(const ::testing::TestParamInfo<IsaCase>& info) {
  const Case& c = std::get<0>(info.param);
  return std::get<1>(info.param) + "_o" + std::to_string(c.outer) + "_c" +
         std::to_string(c.channels) + "_i" + std::to_string(c.inner);
}

// Runs on one instruction set (restores the best one afterwards).
class BatchNormKernelTest : public ::testing::TestWithParam<IsaCase> {
 protected:
  void SetUp() override {
    set_isa(std::get<1>(GetParam()));
    ASSERT_EQ(active_isa(), std::get<1>(GetParam()));
    const Case c = std::get<0>(GetParam());
    dims = {c.outer, c.channels, c.inner};
    view = {c.outer, c.channels, c.inner};
    Random rng(1000 + static_cast<std::uint64_t>(c.outer * 131 + c.channels * 17 + c.inner));
    x = random_values(rng, dims.size(), 0.5f, 2.0f);
    // Give each channel its own offset so per-channel statistics differ.
    for (std::int64_t o = 0; o < c.outer; ++o)
      for (std::int64_t ch = 0; ch < c.channels; ++ch)
        for (std::int64_t i = 0; i < c.inner; ++i)
          x[static_cast<std::size_t>(view.index(o, ch, i))] += static_cast<float>(ch % 5) - 2.0f;
    dy = random_values(rng, dims.size(), 0.0f, 1.0f);
    gamma = random_values(rng, c.channels, 1.0f, 0.3f);
    beta = random_values(rng, c.channels, 0.0f, 0.5f);
  }
  void TearDown() override { set_isa("best"); }

  static std::vector<float> random_values(Random& rng, std::int64_t n, float mean, float stddev) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& f : v) f = mean + stddev * rng.normal();
    return v;
  }

  BatchNormDims dims;
  BnView view;
  std::vector<float> x, dy, gamma, beta;
};

TEST_P(BatchNormKernelTest, MomentsMatchFloat64) {
  const auto expected = test::naive_bn_moments(view, x);
  std::vector<float> mean(static_cast<std::size_t>(dims.channels), -1.0f);
  std::vector<float> var(static_cast<std::size_t>(dims.channels), -1.0f);
  kernels::batch_norm_moments(dims, x.data(), mean.data(), var.data());
  test::expect_close(mean, expected.mean, 1e-6, 1e-6);
  test::expect_close(var, expected.variance, 1e-5, 1e-7);

  std::vector<float> rmean(mean.size(), -1.0f), rvar(var.size(), -1.0f);
  kernels::reference::batch_norm_moments(dims, x.data(), rmean.data(), rvar.data());
  test::expect_close(rmean, expected.mean, 1e-6, 1e-6);
  test::expect_close(rvar, expected.variance, 1e-5, 1e-7);
  test::expect_close(mean, rmean, 1e-6, 1e-7);
  test::expect_close(var, rvar, 1e-6, 1e-7);
}

TEST_P(BatchNormKernelTest, ForwardMatchesFloat64) {
  const auto m = test::naive_bn_moments(view, x);
  const std::vector<float> mean(m.mean.begin(), m.mean.end());
  const std::vector<float> var(m.variance.begin(), m.variance.end());
  const std::vector<double> mean64(mean.begin(), mean.end()), var64(var.begin(), var.end());
  const float eps = 1e-3f;
  struct Flags {
    bool center, scale;
  };
  for (Flags f : {Flags{true, true}, Flags{false, true}, Flags{true, false}, Flags{false, false}}) {
    SCOPED_TRACE(std::string("center ") + (f.center ? "on" : "off") + ", scale " +
                 (f.scale ? "on" : "off"));
    const float* g = f.scale ? gamma.data() : nullptr;
    const float* b = f.center ? beta.data() : nullptr;
    const auto expected = test::naive_bn_forward(
        view, x, mean64, var64, f.scale ? std::span<const float>(gamma) : std::span<const float>(),
        f.center ? std::span<const float>(beta) : std::span<const float>(), eps);
    std::vector<float> y(x.size(), std::nanf("")), ry(x.size(), std::nanf(""));
    kernels::batch_norm_forward(dims, x.data(), mean.data(), var.data(), g, b, eps, y.data());
    kernels::reference::batch_norm_forward(dims, x.data(), mean.data(), var.data(), g, b, eps,
                                           ry.data());
    test::expect_close(y, expected, 1e-5, 1e-5);
    test::expect_close(ry, expected, 1e-5, 1e-5);
    test::expect_close(y, ry, 1e-5, 1e-6);
  }
}

TEST_P(BatchNormKernelTest, BackwardMatchesFloat64) {
  const auto m = test::naive_bn_moments(view, x);
  const std::vector<float> mean(m.mean.begin(), m.mean.end());
  const std::vector<float> var(m.variance.begin(), m.variance.end());
  // Moving statistics for the batch_statistics=false case: any constants.
  std::vector<float> moving_mean(mean.size()), moving_var(var.size());
  for (std::size_t c = 0; c < mean.size(); ++c) {
    moving_mean[c] = 0.3f * static_cast<float>(c % 3) - 0.2f;
    moving_var[c] = 0.5f + 0.25f * static_cast<float>(c % 4);
  }
  const float eps = 1e-3f;
  for (bool batch_statistics : {true, false}) {
    for (bool scale : {true, false}) {
      SCOPED_TRACE(std::string("batch_statistics ") + (batch_statistics ? "true" : "false") +
                   ", scale " + (scale ? "on" : "off"));
      const std::vector<float>& mu = batch_statistics ? mean : moving_mean;
      const std::vector<float>& vr = batch_statistics ? var : moving_var;
      const std::vector<double> mu64(mu.begin(), mu.end()), vr64(vr.begin(), vr.end());
      const float* g = scale ? gamma.data() : nullptr;
      const auto expected = test::naive_bn_backward(
          view, x, dy, mu64, vr64, scale ? std::span<const float>(gamma) : std::span<const float>(),
          eps, batch_statistics);
      // Scale the absolute tolerance with the gradient magnitudes (sums over count values).
      const double count = static_cast<double>(dims.count());
      for (int impl = 0; impl < 2; ++impl) {
        SCOPED_TRACE(impl == 0 ? "fast" : "reference");
        std::vector<float> dx(x.size(), std::nanf("")), dgamma(mu.size(), std::nanf("")),
            dbeta(mu.size(), std::nanf(""));
        auto fn =
            impl == 0 ? &kernels::batch_norm_backward : &kernels::reference::batch_norm_backward;
        fn(dims, x.data(), dy.data(), mu.data(), vr.data(), g, eps, batch_statistics, dx.data(),
           dgamma.data(), dbeta.data());
        test::expect_close(dx, expected.dx, 1e-4, 1e-5);
        test::expect_close(dgamma, expected.dgamma, 1e-5, 1e-6 * count);
        test::expect_close(dbeta, expected.dbeta, 1e-5, 1e-6 * count);
      }
    }
  }
}

TEST_P(BatchNormKernelTest, BackwardOptionalOutputs) {
  const auto m = test::naive_bn_moments(view, x);
  const std::vector<float> mean(m.mean.begin(), m.mean.end());
  const std::vector<float> var(m.variance.begin(), m.variance.end());
  std::vector<float> dx(x.size()), dgamma(mean.size()), dbeta(mean.size());
  kernels::batch_norm_backward(dims, x.data(), dy.data(), mean.data(), var.data(), gamma.data(),
                               1e-3f, true, dx.data(), dgamma.data(), dbeta.data());
  std::vector<float> dx2(x.size());
  kernels::batch_norm_backward(dims, x.data(), dy.data(), mean.data(), var.data(), gamma.data(),
                               1e-3f, true, dx2.data(), nullptr, nullptr);
  test::expect_close(dx2, dx, 1e-6, 1e-7);
  std::vector<float> dgamma2(mean.size()), dbeta2(mean.size());
  kernels::batch_norm_backward(dims, x.data(), dy.data(), mean.data(), var.data(), gamma.data(),
                               1e-3f, true, nullptr, dgamma2.data(), dbeta2.data());
  test::expect_close(dgamma2, dgamma, 1e-6, 1e-7);
  test::expect_close(dbeta2, dbeta, 1e-6, 1e-7);
}

TEST_P(BatchNormKernelTest, ForwardReluIsMaxOfForwardAndZero) {
  const auto m = test::naive_bn_moments(view, x);
  const std::vector<float> mean(m.mean.begin(), m.mean.end());
  const std::vector<float> var(m.variance.begin(), m.variance.end());
  std::vector<float> y(x.size()), yr(x.size(), std::nanf(""));
  kernels::batch_norm_forward(dims, x.data(), mean.data(), var.data(), gamma.data(), beta.data(),
                              1e-3f, y.data());
  kernels::batch_norm_forward_relu(dims, x.data(), mean.data(), var.data(), gamma.data(),
                                   beta.data(), 1e-3f, yr.data());
  for (std::size_t i = 0; i < y.size(); ++i) ASSERT_EQ(yr[i], std::max(y[i], 0.0f)) << "at " << i;
}

TEST_P(BatchNormKernelTest, ForwardTrainingIsMomentsThenForward) {
  for (bool relu : {false, true}) {
    SCOPED_TRACE(relu ? "relu" : "no relu");
    const std::size_t c = static_cast<std::size_t>(dims.channels);
    std::vector<float> mean(c), var(c), y(x.size());
    kernels::batch_norm_moments(dims, x.data(), mean.data(), var.data());
    (relu ? kernels::batch_norm_forward_relu : kernels::batch_norm_forward)(
        dims, x.data(), mean.data(), var.data(), gamma.data(), beta.data(), 1e-3f, y.data());
    std::vector<float> tmean(c, -1.0f), tvar(c, -1.0f), ty(x.size(), std::nanf(""));
    kernels::batch_norm_forward_training(dims, x.data(), gamma.data(), beta.data(), 1e-3f, relu,
                                         tmean.data(), tvar.data(), ty.data());
    EXPECT_EQ(std::memcmp(tmean.data(), mean.data(), c * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(tvar.data(), var.data(), c * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(ty.data(), y.data(), y.size() * sizeof(float)), 0);
  }
}

// The fused backward equals the plain backward of dy masked by the fused forward's y > 0: the
// mask is re-derived from x bit for bit, never stored.
TEST_P(BatchNormKernelTest, ReluBackwardIsBackwardOfMaskedGradient) {
  const std::size_t c = static_cast<std::size_t>(dims.channels);
  std::vector<float> mean(c), var(c), y(x.size());
  kernels::batch_norm_forward_training(dims, x.data(), gamma.data(), beta.data(), 1e-3f, true,
                                       mean.data(), var.data(), y.data());
  std::vector<float> masked(dy.size());
  std::size_t zeros = 0;
  for (std::size_t i = 0; i < dy.size(); ++i) {
    masked[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    zeros += y[i] > 0.0f ? 0 : 1;
  }
  if (x.size() > 16) {
    EXPECT_GT(zeros, 0u) << "the data should exercise the ReLU mask";
  }
  for (bool batch_statistics : {true, false}) {
    SCOPED_TRACE(batch_statistics ? "batch statistics" : "moving statistics");
    std::vector<float> dx(x.size()), dg(c), db(c), fdx(x.size(), std::nanf("")),
        fdg(c, std::nanf("")), fdb(c, std::nanf(""));
    kernels::batch_norm_backward(dims, x.data(), masked.data(), mean.data(), var.data(),
                                 gamma.data(), 1e-3f, batch_statistics, dx.data(), dg.data(),
                                 db.data());
    kernels::batch_norm_relu_backward(dims, x.data(), dy.data(), mean.data(), var.data(),
                                      gamma.data(), beta.data(), 1e-3f, batch_statistics,
                                      fdx.data(), fdg.data(), fdb.data());
    EXPECT_EQ(std::memcmp(fdx.data(), dx.data(), dx.size() * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(fdg.data(), dg.data(), c * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(fdb.data(), db.data(), c * sizeof(float)), 0);
    // And against the float64 reference of the same masked gradient.
    const std::vector<double> mu64(mean.begin(), mean.end()), vr64(var.begin(), var.end());
    const auto expected =
        test::naive_bn_backward(view, x, masked, mu64, vr64, gamma, 1e-3f, batch_statistics);
    const double count = static_cast<double>(dims.count());
    test::expect_close(fdx, expected.dx, 1e-4, 1e-5);
    test::expect_close(fdg, expected.dgamma, 1e-5, 1e-6 * count);
    test::expect_close(fdb, expected.dbeta, 1e-5, 1e-6 * count);
  }
}

// Shapes cover: vector tails (channels or inner not a multiple of any vector width), one tile
// and several (256 channels each), one reduction block and several (fixed by the shape),
// threaded and unthreaded passes, tiles in parallel.
INSTANTIATE_TEST_SUITE_P(
    Views, BatchNormKernelTest,
    ::testing::Combine(::testing::Values(
                           // 2-D (N, C): outer = N, inner = 1
                           Case{32, 64, 1}, Case{1, 5, 1}, Case{7, 1, 1}, Case{33, 17, 1},
                           Case{2, 130, 1}, Case{128, 3, 1}, Case{1, 1, 1}, Case{1000, 33, 1},
                           Case{4096, 64, 1}, Case{600, 300, 1}, Case{200, 600, 1}, Case{3, 40, 1},
                           // 3-D / 4-D (N, C, L) and (N, C, H, W): inner = L or H * W
                           Case{2, 3, 35}, Case{5, 8, 9}, Case{1, 4, 13}, Case{3, 1, 11},
                           Case{16, 16, 49}, Case{4, 7, 1}, Case{9, 2, 100}, Case{64, 8, 196},
                           Case{2, 300, 120}, Case{40, 3, 1000}),
                       ::testing::ValuesIn(available_isas())),
    case_name);

TEST(BatchNormIsa, ScalarAndTheBestAreAvailableAndUnknownNamesAreRefused) {
  const auto isas = available_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.back(), "scalar");
  EXPECT_EQ(active_isa(), isas.front());
  try {
    set_isa("avx9000");
    FAIL() << "expected ValueError";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("'avx9000' is not available here"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("scalar"), std::string::npos) << e.what();
  }
  EXPECT_EQ(active_isa(), isas.front()) << "a refused choice leaves the kernels as they were";
}

TEST(BatchNormKernel, OneValuePerChannelHasZeroVarianceAndOutputsBeta) {
  // count = 1: variance 0; y = (x - x) * gamma / sqrt(eps) + beta = beta exactly.
  const BatchNormDims dims{1, 4, 1};
  const std::vector<float> x{3.0f, -1.5f, 1e4f, 0.25f};
  const std::vector<float> gamma{2.0f, 0.5f, -1.0f, 3.0f};
  const std::vector<float> beta{0.1f, -0.2f, 0.3f, 7.0f};
  std::vector<float> mean(4), var(4, -1.0f), y(4);
  kernels::batch_norm_moments(dims, x.data(), mean.data(), var.data());
  for (int c = 0; c < 4; ++c) {
    EXPECT_EQ(mean[static_cast<std::size_t>(c)], x[static_cast<std::size_t>(c)]);
    EXPECT_EQ(var[static_cast<std::size_t>(c)], 0.0f);
  }
  kernels::batch_norm_forward(dims, x.data(), mean.data(), var.data(), gamma.data(), beta.data(),
                              1e-3f, y.data());
  EXPECT_EQ(y, beta);
}

TEST(BatchNormKernel, UpdateMovingClosedFormAfterKSteps) {
  // moving_k = m^k moving_0 + (1 - m) sum_i m^(k-1-i) batch_i.
  const std::int64_t channels = 37;
  const float momentum = 0.9f;
  const int k = 6;
  Random rng(99);
  std::vector<float> moving_mean(channels), moving_var(channels);
  for (auto& v : moving_mean) v = rng.normal();
  for (auto& v : moving_var) v = 0.5f + rng.uniform();
  std::vector<double> expected_mean(moving_mean.begin(), moving_mean.end());
  std::vector<double> expected_var(moving_var.begin(), moving_var.end());
  const double m = momentum;
  for (auto& v : expected_mean) v *= std::pow(m, k);
  for (auto& v : expected_var) v *= std::pow(m, k);
  for (int step = 0; step < k; ++step) {
    std::vector<float> batch_mean(channels), batch_var(channels);
    for (auto& v : batch_mean) v = 2.0f * rng.normal();
    for (auto& v : batch_var) v = 3.0f * rng.uniform();
    kernels::batch_norm_update_moving(channels, batch_mean.data(), batch_var.data(), momentum, 1.0f,
                                      moving_mean.data(), moving_var.data());
    const double w = (1.0 - m) * std::pow(m, k - 1 - step);
    for (std::size_t c = 0; c < static_cast<std::size_t>(channels); ++c) {
      expected_mean[c] += w * batch_mean[c];
      expected_var[c] += w * batch_var[c];
    }
  }
  test::expect_close(moving_mean, expected_mean, 1e-5, 1e-6);
  test::expect_close(moving_var, expected_var, 1e-5, 1e-6);
}

TEST(BatchNormKernel, UpdateMovingKerasDefaultsAndVarianceScale) {
  const std::vector<float> batch_mean{1.0f, -2.0f, 0.5f};
  const std::vector<float> batch_var{4.0f, 0.0f, 2.0f};
  std::vector<float> mm{0.0f, 0.0f, 0.0f}, mv{1.0f, 1.0f, 1.0f};
  kernels::batch_norm_update_moving(3, batch_mean.data(), batch_var.data(), 0.99f, 1.0f, mm.data(),
                                    mv.data());
  test::expect_close(mm, std::vector<double>{0.01, -0.02, 0.005}, 1e-5, 1e-8);
  test::expect_close(mv, std::vector<double>{0.99 + 0.04, 0.99, 0.99 + 0.02}, 1e-6, 1e-8);

  // PyTorch's Bessel correction: variance_scale = n / (n - 1) with n = 5.
  std::vector<float> mm2{0.0f, 0.0f, 0.0f}, mv2{1.0f, 1.0f, 1.0f};
  const float scale = 5.0f / 4.0f;
  kernels::batch_norm_update_moving(3, batch_mean.data(), batch_var.data(), 0.9f, scale, mm2.data(),
                                    mv2.data());
  test::expect_close(mm2, std::vector<double>{0.1, -0.2, 0.05}, 1e-5, 1e-8);
  test::expect_close(mv2, std::vector<double>{0.9 + 0.1 * 4 * 1.25, 0.9, 0.9 + 0.1 * 2 * 1.25},
                     1e-6, 1e-8);

  // momentum 1 keeps the moving values; momentum 0 replaces them.
  std::vector<float> keep_m{5.0f, 5.0f, 5.0f}, keep_v{2.0f, 2.0f, 2.0f};
  kernels::batch_norm_update_moving(3, batch_mean.data(), batch_var.data(), 1.0f, 1.0f,
                                    keep_m.data(), keep_v.data());
  EXPECT_EQ(keep_m, (std::vector<float>{5.0f, 5.0f, 5.0f}));
  EXPECT_EQ(keep_v, (std::vector<float>{2.0f, 2.0f, 2.0f}));
  kernels::batch_norm_update_moving(3, batch_mean.data(), batch_var.data(), 0.0f, 1.0f,
                                    keep_m.data(), keep_v.data());
  EXPECT_EQ(keep_m, batch_mean);
  EXPECT_EQ(keep_v, batch_var);
}

// --- Numerical stability of the moments ---------------------------------------------------

TEST(BatchNormKernel, MomentsOfLargeMeanSmallStdData) {
  // mean 1e4, std 1e-2 in float32: the variance (~1e-4) is 1e-12 of E[x^2].
  const BatchNormDims dims{4096, 3, 1};
  Random rng(2024);
  std::vector<float> x(static_cast<std::size_t>(dims.size()));
  for (float& v : x) v = 1e4f + 1e-2f * rng.normal();
  const auto expected = test::naive_bn_moments({dims.outer, dims.channels, dims.inner}, x);
  std::vector<float> mean(3), var(3), rmean(3), rvar(3);
  kernels::batch_norm_moments(dims, x.data(), mean.data(), var.data());
  kernels::reference::batch_norm_moments(dims, x.data(), rmean.data(), rvar.data());
  for (int c = 0; c < 3; ++c) EXPECT_GT(expected.variance[static_cast<std::size_t>(c)], 5e-5);
  test::expect_close(mean, expected.mean, 1e-7, 0.0);
  test::expect_close(var, expected.variance, 1e-3, 0.0);
  test::expect_close(rvar, expected.variance, 1e-3, 0.0);
}

TEST(BatchNormKernel, MomentsOfIntegersAroundOneMillion) {
  // {1e6, 1e6 + 1, ..., 1e6 + n - 1}: exact in float32; variance (n^2 - 1) / 12.
  for (std::int64_t inner : {1, 7}) {
    const std::int64_t n = 1001;
    const BatchNormDims dims = inner == 1 ? BatchNormDims{n, 1, 1} : BatchNormDims{1, 1, n};
    std::vector<float> x(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i)
      x[static_cast<std::size_t>(i)] = 1e6f + static_cast<float>(i);
    const double exact_mean = 1e6 + (n - 1) / 2.0;
    const double exact_var = (static_cast<double>(n) * n - 1.0) / 12.0;
    float mean = 0, var = 0;
    kernels::batch_norm_moments(dims, x.data(), &mean, &var);
    EXPECT_NEAR(mean, exact_mean, 1e-5 * exact_mean);
    EXPECT_NEAR(var, exact_var, 1e-5 * exact_var);
    kernels::reference::batch_norm_moments(dims, x.data(), &mean, &var);
    EXPECT_NEAR(var, exact_var, 1e-5 * exact_var);
  }
}

TEST(BatchNormKernel, MomentsWithMeanOverStdOfOneMillionInEveryCodePath) {
  // {1e6, 1e6 + 1, 1e6 + 2, 1e6 + 3} repeated: |mean| / std = 1e6 / 1.118 ~ 9e5. Every path that
  // computes moments (channels-last rows, channels-first planes, the reference) is held to 1e-5
  // relative of the float64 result.
  const std::int64_t n = 1024;
  const double exact_mean = 1e6 + 1.5, exact_var = 1.25;
  for (const BatchNormDims dims :
       {BatchNormDims{n, 1, 1}, BatchNormDims{1, 1, n}, BatchNormDims{n / 8, 1, 8}}) {
    for (const std::string& isa : available_isas()) {
      set_isa(isa);
      SCOPED_TRACE(isa);
      std::vector<float> x(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i)
        x[static_cast<std::size_t>(i)] = 1e6f + static_cast<float>(i % 4);
      float mean = 0, var = 0;
      kernels::batch_norm_moments(dims, x.data(), &mean, &var);
      EXPECT_NEAR(mean, exact_mean, 1e-5 * exact_mean);
      EXPECT_NEAR(var, exact_var, 1e-5 * exact_var) << "inner " << dims.inner;
      kernels::reference::batch_norm_moments(dims, x.data(), &mean, &var);
      EXPECT_NEAR(var, exact_var, 1e-5 * exact_var) << "reference, inner " << dims.inner;
    }
  }
  set_isa("best");
}

// The trap the kernels avoid: E[x^2] - E[x]^2 accumulated in float32.
float naive_float32_variance(const std::vector<float>& x) {
  float sum = 0.0f, sum_sq = 0.0f;
  for (float v : x) {
    sum += v;
    sum_sq += v * v;
  }
  const float n = static_cast<float>(x.size());
  const float mean = sum / n;
  return sum_sq / n - mean * mean;
}

TEST(BatchNormKernel, NaiveFloat32FormulaFailsWhereTheKernelSucceeds) {
  {
    // REFERENCE.md: {10000, 10001, 10002, 10003} has variance 1.25.
    const std::vector<float> x{10000.0f, 10001.0f, 10002.0f, 10003.0f};
    const float naive = naive_float32_variance(x);
    EXPECT_GT(std::abs(naive - 1.25f), 0.1f) << "naive float32 formula gave " << naive;
    float mean = 0, var = 0;
    kernels::batch_norm_moments({4, 1, 1}, x.data(), &mean, &var);
    EXPECT_NEAR(var, 1.25, 1.25e-5);
    EXPECT_NEAR(mean, 10001.5, 1e-2);
  }
  {
    const std::int64_t n = 1001;
    std::vector<float> x(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i)
      x[static_cast<std::size_t>(i)] = 1e6f + static_cast<float>(i);
    const double exact_var = (static_cast<double>(n) * n - 1.0) / 12.0;
    const float naive = naive_float32_variance(x);
    // Off by far more than the 1e-5 the kernel achieves (it can even go negative).
    EXPECT_GT(std::abs(naive - exact_var), 1e-2 * exact_var) << "naive float32 gave " << naive;
    float mean = 0, var = 0;
    kernels::batch_norm_moments({n, 1, 1}, x.data(), &mean, &var);
    EXPECT_NEAR(var, exact_var, 1e-5 * exact_var);
  }
  {
    Random rng(7);
    std::vector<float> x(4096);
    for (float& v : x) v = 1e4f + 1e-2f * rng.normal();
    const auto expected = test::naive_bn_moments({4096, 1, 1}, x);
    const float naive = naive_float32_variance(x);
    EXPECT_GT(std::abs(naive - expected.variance[0]), 1.0 * expected.variance[0])
        << "naive float32 gave " << naive << ", float64 " << expected.variance[0];
    float mean = 0, var = 0;
    kernels::batch_norm_moments({4096, 1, 1}, x.data(), &mean, &var);
    EXPECT_NEAR(var, expected.variance[0], 1e-3 * expected.variance[0]);
  }
}

TEST(BatchNormKernel, ForwardKeepsPrecisionForLargeMean) {
  // Subtracting the mean first: y = (x - mean) * inv is accurate when |mean| >> std.
  const std::int64_t n = 64;
  std::vector<float> x(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    x[static_cast<std::size_t>(i)] = 1e6f + static_cast<float>(i % 8);
  float mean = 0, var = 0;
  kernels::batch_norm_moments({n, 1, 1}, x.data(), &mean, &var);
  std::vector<float> y(x.size());
  const float one = 1.0f, zero = 0.0f;
  kernels::batch_norm_forward({n, 1, 1}, x.data(), &mean, &var, &one, &zero, 1e-3f, y.data());
  const auto m = test::naive_bn_moments({n, 1, 1}, x);
  const auto expected = test::naive_bn_forward({n, 1, 1}, x, m.mean, m.variance, {}, {}, 1e-3);
  test::expect_close(y, expected, 1e-4, 1e-4);
}

// Every kernel, every instruction set, shapes that split into several reduction blocks and
// tiles: the same bits at 1, 2 and 3 threads (blocks are fixed by the shape, combined in order).
TEST(BatchNormKernel, SameBitsAtOneTwoAndThreeThreads) {
  const int saved = num_threads();
  for (const std::string& isa : available_isas()) {
    set_isa(isa);
    for (const BatchNormDims dims :
         {BatchNormDims{2048, 24, 9}, BatchNormDims{8192, 64, 1}, BatchNormDims{600, 300, 1},
          BatchNormDims{64, 300, 7}, BatchNormDims{256, 600, 1}}) {
      SCOPED_TRACE(isa + " [" + std::to_string(dims.outer) + ", " + std::to_string(dims.channels) +
                   ", " + std::to_string(dims.inner) + "]");
      Random rng(5);
      std::vector<float> x(static_cast<std::size_t>(dims.size())), dy(x.size());
      for (float& v : x) v = 3.0f + rng.normal();
      for (float& v : dy) v = rng.normal();
      const std::size_t c = static_cast<std::size_t>(dims.channels);
      std::vector<float> gamma(c, 1.5f), beta(c, 0.5f);
      auto run = [&](int threads) {
        set_num_threads(threads);
        std::vector<float> out(c * 8 + x.size() * 4);
        float* p = out.data();
        auto take = [&p](std::size_t n) {
          float* q = p;
          p += n;
          return q;
        };
        float *mean = take(c), *var = take(c), *dg = take(c), *db = take(c), *rdg = take(c),
              *rdb = take(c), *tm = take(c), *tv = take(c);
        float *y = take(x.size()), *dx = take(x.size()), *ry = take(x.size()),
              *rdx = take(x.size());
        kernels::batch_norm_moments(dims, x.data(), mean, var);
        kernels::batch_norm_forward(dims, x.data(), mean, var, gamma.data(), beta.data(), 1e-3f, y);
        kernels::batch_norm_backward(dims, x.data(), dy.data(), mean, var, gamma.data(), 1e-3f,
                                     true, dx, dg, db);
        kernels::batch_norm_forward_training(dims, x.data(), gamma.data(), beta.data(), 1e-3f, true,
                                             tm, tv, ry);
        kernels::batch_norm_relu_backward(dims, x.data(), dy.data(), tm, tv, gamma.data(),
                                          beta.data(), 1e-3f, true, rdx, rdg, rdb);
        return out;
      };
      const auto one = run(1);
      for (int threads : {2, 3}) {
        const auto other = run(threads);
        ASSERT_EQ(one.size(), other.size());
        EXPECT_EQ(std::memcmp(one.data(), other.data(), one.size() * sizeof(float)), 0)
            << threads << " threads";
      }
    }
  }
  set_isa("best");
  set_num_threads(saved);
}

// Outputs of 8 MiB and more are written with non-temporal stores; small ones can be forced to.
// Either way the values are the same.
TEST(BatchNormKernel, StreamingStoresWriteTheSameValues) {
  const BatchNormDims rows{1000, 72, 1}, planes{10, 6, 1001};
  for (const BatchNormDims dims : {rows, planes}) {
    Random rng(11);
    std::vector<float> x(static_cast<std::size_t>(dims.size())), dy(x.size());
    for (float& v : x) v = rng.normal();
    for (float& v : dy) v = rng.normal();
    const std::size_t c = static_cast<std::size_t>(dims.channels);
    std::vector<float> gamma(c, 0.7f), beta(c, 0.1f);
    auto run = [&](kernels::StreamingStores mode) {
      kernels::set_streaming_stores(mode);
      std::vector<float> out(c * 4 + x.size() * 2);
      float *mean = out.data(), *var = mean + c, *dg = var + c, *db = dg + c, *y = db + c,
            *dx = y + x.size();
      kernels::batch_norm_forward_training(dims, x.data(), gamma.data(), beta.data(), 1e-3f, false,
                                           mean, var, y);
      kernels::batch_norm_relu_backward(dims, x.data(), dy.data(), mean, var, gamma.data(),
                                        beta.data(), 1e-3f, true, dx, dg, db);
      return out;
    };
    const auto streamed = run(kernels::StreamingStores::always);
    const auto cached = run(kernels::StreamingStores::never);
    kernels::set_streaming_stores(kernels::StreamingStores::automatic);
    EXPECT_EQ(std::memcmp(streamed.data(), cached.data(), cached.size() * sizeof(float)), 0);
  }
}

}  // namespace
}  // namespace bnorm
