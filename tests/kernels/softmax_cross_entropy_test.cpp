// Loss kernels: values against float64 hand computation, gradients against finite differences.
#include "kernels/softmax_cross_entropy.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "support/test_support.hpp"

namespace bnorm {
namespace {

// Central differences of a float64-returning function of float32 inputs.
std::vector<double> numeric_gradient(std::vector<float> v,
                                     const std::function<double(const std::vector<float>&)>& f,
                                     double h) {
  std::vector<double> g(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const float orig = v[i];
    const float plus = static_cast<float>(orig + h), minus = static_cast<float>(orig - h);
    v[i] = plus;
    const double fp = f(v);
    v[i] = minus;
    const double fm = f(v);
    v[i] = orig;
    g[i] = (fp - fm) / (double(plus) - double(minus));
  }
  return g;
}

TEST(SparseSoftmaxCrossEntropy, MatchesFloat64) {
  const std::int64_t rows = 6, classes = 5;
  Random rng(8);
  std::vector<float> z(rows * classes);
  for (float& v : z) v = 3.0f * rng.normal();
  const std::vector<std::int32_t> labels{0, 4, 2, 2, 1, 3};
  const auto ls = test::log_softmax64(z, rows, classes);
  double expected_loss = 0.0;
  std::vector<double> expected_probs(z.size()), expected_grad(z.size());
  const double scale = 1.0 / rows;
  for (std::int64_t r = 0; r < rows; ++r) {
    expected_loss -=
        ls[static_cast<std::size_t>(r * classes + labels[static_cast<std::size_t>(r)])];
    for (std::int64_t c = 0; c < classes; ++c) {
      const auto i = static_cast<std::size_t>(r * classes + c);
      expected_probs[i] = std::exp(ls[i]);
      expected_grad[i] =
          (expected_probs[i] - (c == labels[static_cast<std::size_t>(r)] ? 1.0 : 0.0)) * scale;
    }
  }
  std::vector<float> probs(z.size()), grad(z.size());
  const double loss = kernels::sparse_softmax_cross_entropy(
      rows, classes, z.data(), labels.data(), static_cast<float>(scale), probs.data(), grad.data());
  EXPECT_NEAR(loss, expected_loss, 1e-5 * expected_loss);
  test::expect_close(probs, expected_probs, 1e-5, 1e-8);
  test::expect_close(grad, expected_grad, 1e-5, 1e-8);
  // Optional outputs.
  const double loss_only = kernels::sparse_softmax_cross_entropy(
      rows, classes, z.data(), labels.data(), 1.0f, nullptr, nullptr);
  EXPECT_EQ(loss_only, loss);
}

TEST(SparseSoftmaxCrossEntropy, GradientMatchesFiniteDifferences) {
  const std::int64_t rows = 4, classes = 7;
  Random rng(9);
  std::vector<float> z(rows * classes);
  for (float& v : z) v = 2.0f * rng.normal();
  const std::vector<std::int32_t> labels{6, 0, 3, 3};
  std::vector<float> grad(z.size());
  kernels::sparse_softmax_cross_entropy(rows, classes, z.data(), labels.data(), 1.0f, nullptr,
                                        grad.data());
  const auto numeric = numeric_gradient(
      z,
      [&](const std::vector<float>& v) {
        return kernels::sparse_softmax_cross_entropy(rows, classes, v.data(), labels.data(), 1.0f,
                                                     nullptr, nullptr);
      },
      1e-3);
  test::expect_close(grad, numeric, 1e-3, 1e-4);
}

TEST(SparseSoftmaxCrossEntropy, StableForHugeLogits) {
  // Logits +-1e4: log-sum-exp stays finite; a confident wrong answer costs ~2e4, not inf.
  const std::vector<float> z{1e4f, -1e4f, 0.0f, -1e4f, 1e4f, 0.0f};
  const std::vector<std::int32_t> labels{0, 0};
  std::vector<float> probs(6), grad(6);
  const double loss = kernels::sparse_softmax_cross_entropy(2, 3, z.data(), labels.data(), 1.0f,
                                                            probs.data(), grad.data());
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_NEAR(loss, 2e4, 1e-2);  // row 0 costs 0, row 1 costs 1e4 - (-1e4)
  for (float g : grad) EXPECT_TRUE(std::isfinite(g));
  EXPECT_NEAR(grad[3], -1.0f, 1e-6);
  EXPECT_NEAR(grad[4], 1.0f, 1e-6);
}

TEST(SoftmaxCrossEntropy, DenseTargetsMatchFloat64) {
  const std::int64_t rows = 3, classes = 4;
  Random rng(10);
  std::vector<float> z(rows * classes);
  for (float& v : z) v = 2.0f * rng.normal();
  // Row 0 one-hot, row 1 smoothed, row 2 sums to 2 (dlogits = probs * sum(t) - t).
  const std::vector<float> t{0, 1, 0, 0, 0.1f, 0.7f, 0.1f, 0.1f, 0.5f, 0.5f, 1.0f, 0.0f};
  const auto ls = test::log_softmax64(z, rows, classes);
  double expected_loss = 0.0;
  std::vector<double> expected_grad(z.size());
  const float scale = 0.5f;
  for (std::int64_t r = 0; r < rows; ++r) {
    double tsum = 0.0;
    for (std::int64_t c = 0; c < classes; ++c) tsum += t[static_cast<std::size_t>(r * classes + c)];
    for (std::int64_t c = 0; c < classes; ++c) {
      const auto i = static_cast<std::size_t>(r * classes + c);
      expected_loss -= t[i] * ls[i];
      expected_grad[i] = (std::exp(ls[i]) * tsum - t[i]) * scale;
    }
  }
  std::vector<float> probs(z.size()), grad(z.size());
  const double loss = kernels::softmax_cross_entropy(rows, classes, z.data(), t.data(), scale,
                                                     probs.data(), grad.data());
  EXPECT_NEAR(loss, expected_loss, 1e-5 * std::abs(expected_loss));
  test::expect_close(grad, expected_grad, 1e-5, 1e-8);
  // Gradient of the loss (scale 1) by finite differences.
  std::vector<float> grad1(z.size());
  kernels::softmax_cross_entropy(rows, classes, z.data(), t.data(), 1.0f, nullptr, grad1.data());
  const auto numeric = numeric_gradient(
      z,
      [&](const std::vector<float>& v) {
        return kernels::softmax_cross_entropy(rows, classes, v.data(), t.data(), 1.0f, nullptr,
                                              nullptr);
      },
      1e-3);
  test::expect_close(grad1, numeric, 1e-3, 1e-4);
}

TEST(ProbabilityCrossEntropy, RenormalizesAndClips) {
  const float eps = 1e-7f;
  // Row 0: p sums to 0.4, renormalized to (0.5, 0.5) -> loss log 2.
  // Row 1: target class has p = 0 -> clipped to eps -> loss -log(eps).
  // Row 2: ordinary.
  const std::vector<float> p{0.2f, 0.2f, 0.0f, 1.0f, 0.3f, 0.7f};
  const std::vector<float> t{1, 0, 1, 0, 0, 1};
  std::vector<float> dp(6, std::nanf(""));
  const double loss =
      kernels::probability_cross_entropy(3, 2, p.data(), t.data(), eps, 1.0f, dp.data());
  const double expected =
      std::log(2.0) - std::log(static_cast<double>(eps)) - std::log(static_cast<double>(0.7f));
  EXPECT_NEAR(loss, expected, 1e-5 * expected);
  // Where the clip is active the gradient is exactly zero.
  EXPECT_EQ(dp[2], 0.0f);
  for (float g : dp) EXPECT_TRUE(std::isfinite(g));
}

TEST(ProbabilityCrossEntropy, GradientMatchesFiniteDifferencesAwayFromClip) {
  const std::int64_t rows = 4, classes = 5;
  Random rng(12);
  std::vector<float> p(rows * classes), t(p.size(), 0.0f);
  for (float& v : p) v = 0.05f + rng.uniform();  // unnormalized, away from the clip
  for (std::int64_t r = 0; r < rows; ++r) {
    t[static_cast<std::size_t>(r * classes + (r * 2) % classes)] = 0.75f;
    t[static_cast<std::size_t>(r * classes + (r * 2 + 1) % classes)] = 0.25f;
  }
  std::vector<float> dp(p.size());
  const float eps = 1e-7f;
  kernels::probability_cross_entropy(rows, classes, p.data(), t.data(), eps, 1.0f, dp.data());
  const auto numeric = numeric_gradient(
      p,
      [&](const std::vector<float>& v) {
        return kernels::probability_cross_entropy(rows, classes, v.data(), t.data(), eps, 1.0f,
                                                  nullptr);
      },
      1e-4);
  test::expect_close(dp, numeric, 2e-3, 1e-4);
  // grad_scale multiplies the gradient.
  std::vector<float> dp2(p.size());
  kernels::probability_cross_entropy(rows, classes, p.data(), t.data(), eps, 0.25f, dp2.data());
  std::vector<double> quarter(dp.begin(), dp.end());
  for (double& v : quarter) v *= 0.25;
  test::expect_close(dp2, quarter, 1e-6, 1e-9);
}

TEST(ProbabilityCrossEntropy, EqualsFusedPathForModerateLogits) {
  const std::int64_t rows = 5, classes = 4;
  Random rng(13);
  std::vector<float> z(rows * classes);
  for (float& v : z) v = rng.normal();
  const std::vector<std::int32_t> labels{1, 3, 0, 2, 2};
  std::vector<float> probs(z.size()), onehot(z.size(), 0.0f);
  for (std::int64_t r = 0; r < rows; ++r)
    onehot[static_cast<std::size_t>(r * classes + labels[static_cast<std::size_t>(r)])] = 1.0f;
  const double fused = kernels::sparse_softmax_cross_entropy(rows, classes, z.data(), labels.data(),
                                                             1.0f, probs.data(), nullptr);
  const double from_probs = kernels::probability_cross_entropy(rows, classes, probs.data(),
                                                               onehot.data(), 1e-7f, 1.0f, nullptr);
  EXPECT_NEAR(from_probs, fused, 1e-5 * fused);
}

TEST(MeanSquaredError, ValueAndGradient) {
  const std::int64_t rows = 3, cols = 4;
  Random rng(14);
  std::vector<float> p(rows * cols), t(p.size());
  for (float& v : p) v = rng.normal();
  for (float& v : t) v = rng.normal();
  double expected = 0.0;
  std::vector<double> expected_grad(p.size());
  const float scale = 1.0f / rows;
  for (std::int64_t r = 0; r < rows; ++r) {
    double row = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) {
      const auto i = static_cast<std::size_t>(r * cols + c);
      const double d = double(p[i]) - t[i];
      row += d * d;
      expected_grad[i] = 2.0 * d / cols * scale;
    }
    expected += row / cols;
  }
  std::vector<float> dp(p.size());
  const double loss = kernels::mean_squared_error(rows, cols, p.data(), t.data(), scale, dp.data());
  EXPECT_NEAR(loss, expected, 1e-6 * expected);
  test::expect_close(dp, expected_grad, 1e-5, 1e-8);
  std::vector<float> dp1(p.size());
  kernels::mean_squared_error(rows, cols, p.data(), t.data(), 1.0f, dp1.data());
  const auto numeric = numeric_gradient(
      p,
      [&](const std::vector<float>& v) {
        return kernels::mean_squared_error(rows, cols, v.data(), t.data(), 1.0f, nullptr);
      },
      1e-3);
  test::expect_close(dp1, numeric, 1e-3, 1e-5);
}

}  // namespace
}  // namespace bnorm
