// Losses as Keras computes them ("sum_over_batch_size"), fused logits path, accuracy.
#include "bnorm/model/losses.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "kernels/activation.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

Tensor softmax(const Tensor& z) {
  Tensor p(z.shape());
  kernels::activation_forward(ActivationKind::softmax, z.shape()[0], z.size() / z.shape()[0],
                              z.data(), p.data());
  return p;
}

// d compute_loss / d predictions by central differences (no logits).
std::vector<double> numeric_loss_gradient(LossKind kind, Tensor p, const Tensor& y, double h) {
  std::vector<double> g(static_cast<std::size_t>(p.size()));
  for (std::int64_t i = 0; i < p.size(); ++i) {
    const float orig = p[i];
    const float plus = static_cast<float>(orig + h), minus = static_cast<float>(orig - h);
    p[i] = plus;
    const double lp = compute_loss(kind, p, nullptr, y, nullptr);
    p[i] = minus;
    const double lm = compute_loss(kind, p, nullptr, y, nullptr);
    p[i] = orig;
    g[static_cast<std::size_t>(i)] = (lp - lm) / (double(plus) - double(minus));
  }
  return g;
}

TEST(Losses, ParseAndNames) {
  EXPECT_EQ(parse_loss("sparse_categorical_crossentropy"),
            LossKind::sparse_categorical_crossentropy);
  EXPECT_EQ(parse_loss("scce"), LossKind::sparse_categorical_crossentropy);
  EXPECT_EQ(parse_loss("categorical_crossentropy"), LossKind::categorical_crossentropy);
  EXPECT_EQ(parse_loss("cce"), LossKind::categorical_crossentropy);
  EXPECT_EQ(parse_loss("mean_squared_error"), LossKind::mean_squared_error);
  EXPECT_EQ(parse_loss("mse"), LossKind::mean_squared_error);
  for (LossKind k : {LossKind::sparse_categorical_crossentropy, LossKind::categorical_crossentropy,
                     LossKind::mean_squared_error}) {
    EXPECT_EQ(parse_loss(loss_name(k)), k);
  }
  EXPECT_EQ(loss_name(LossKind::sparse_categorical_crossentropy),
            "sparse_categorical_crossentropy");
  try {
    parse_loss("hinge_of_doom");
    FAIL();
  } catch (const ValueError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("hinge_of_doom"), std::string::npos) << msg;
    EXPECT_NE(msg.find("mean_squared_error"), std::string::npos) << msg;
  }
}

TEST(Losses, SparseCategoricalCrossentropyOnProbabilities) {
  // Hand computation: mean over samples of -log(p[label]).
  const Tensor p(Shape{3, 3}, std::vector<float>{0.7f, 0.2f, 0.1f,  //
                                                 0.1f, 0.1f, 0.8f,  //
                                                 0.25f, 0.5f, 0.25f});
  const Tensor y(Shape{3}, std::vector<float>{0, 1, 2});
  const double expected =
      -(std::log(double(0.7f)) + std::log(double(0.1f)) + std::log(double(0.25f))) / 3.0;
  Tensor grad(p.shape());
  EXPECT_NEAR(compute_loss(LossKind::sparse_categorical_crossentropy, p, nullptr, y, &grad),
              expected, 1e-6);
  // Labels as (N, 1) are accepted too.
  EXPECT_NEAR(compute_loss(LossKind::sparse_categorical_crossentropy, p, nullptr,
                           y.reshaped(Shape{3, 1}), nullptr),
              expected, 1e-6);
  test::expect_close(grad.values(),
                     numeric_loss_gradient(LossKind::sparse_categorical_crossentropy, p, y, 1e-4),
                     2e-3, 1e-4);
}

TEST(Losses, CategoricalCrossentropyAndMse) {
  const Tensor p(Shape{2, 3}, std::vector<float>{0.5f, 0.3f, 0.2f, 0.1f, 0.6f, 0.3f});
  const Tensor t(Shape{2, 3}, std::vector<float>{0, 1, 0, 0.2f, 0.8f, 0.0f});
  const double cce = -(std::log(double(0.3f)) +
                       (0.2 * std::log(double(0.1f)) + double(0.8f) * std::log(double(0.6f)))) /
                     2.0;
  Tensor grad(p.shape());
  EXPECT_NEAR(compute_loss(LossKind::categorical_crossentropy, p, nullptr, t, &grad), cce, 1e-6);
  test::expect_close(grad.values(),
                     numeric_loss_gradient(LossKind::categorical_crossentropy, p, t, 1e-4), 2e-3,
                     1e-4);

  double mse = 0.0;
  for (int i = 0; i < 6; ++i) mse += (double(p[i]) - t[i]) * (double(p[i]) - t[i]);
  mse /= 6.0;  // mean over the 3 outputs, then over the 2 samples
  Tensor gmse(p.shape());
  EXPECT_NEAR(compute_loss(LossKind::mean_squared_error, p, nullptr, t, &gmse), mse, 1e-7);
  std::vector<double> expected(6);
  for (int i = 0; i < 6; ++i)
    expected[static_cast<std::size_t>(i)] = 2.0 * (double(p[i]) - t[i]) / 6.0;
  test::expect_close(gmse.values(), expected, 1e-6, 1e-8);
}

TEST(Losses, ClippingKeepsTheLossFinite) {
  // A zero probability on the true class costs -log(1e-7) (Keras's epsilon), not infinity.
  const Tensor p(Shape{1, 2}, std::vector<float>{0.0f, 1.0f});
  const Tensor y(Shape{1}, std::vector<float>{0});
  Tensor grad(p.shape());
  const double loss = compute_loss(LossKind::sparse_categorical_crossentropy, p, nullptr, y, &grad);
  EXPECT_NEAR(loss, -std::log(1e-7), 1e-3);
  EXPECT_TRUE(grad.all_finite());
}

TEST(Losses, FusedLogitsPathEqualsProbabilitiesForModerateLogits) {
  Random rng(3);
  const Tensor z = test::random_normal(Shape{8, 5}, rng, 0.0f, 2.0f);
  const Tensor p = softmax(z);
  const Tensor y = test::random_labels(8, 5, rng);
  Tensor onehot(Shape{8, 5});
  for (int r = 0; r < 8; ++r) onehot[r * 5 + static_cast<int>(y[r])] = 1.0f;

  Tensor g_fused(z.shape());
  const double fused = compute_loss(LossKind::sparse_categorical_crossentropy, p, &z, y, &g_fused);
  const double plain =
      compute_loss(LossKind::sparse_categorical_crossentropy, p, nullptr, y, nullptr);
  EXPECT_NEAR(fused, plain, 1e-5 * plain);
  // The fused gradient is dL/dlogits = (softmax(z) - onehot) / N.
  std::vector<double> expected(40);
  for (int i = 0; i < 40; ++i)
    expected[static_cast<std::size_t>(i)] = (double(p[i]) - onehot[i]) / 8.0;
  test::expect_close(g_fused.values(), expected, 1e-5, 1e-7);

  Tensor g_cce(z.shape());
  const double fused_cce = compute_loss(LossKind::categorical_crossentropy, p, &z, onehot, &g_cce);
  EXPECT_NEAR(fused_cce, plain, 1e-5 * plain);
  test::expect_close(g_cce.values(), expected, 1e-5, 1e-7);
}

TEST(Losses, FusedPathSurvivesSaturatedLogits) {
  // softmax(z) underflows to exactly 0 for the true class; the logits path still gives the
  // exact loss 1000 instead of the clipped -log(1e-7).
  const Tensor z(Shape{1, 2}, std::vector<float>{0.0f, 1000.0f});
  const Tensor p = softmax(z);
  const Tensor y(Shape{1}, std::vector<float>{0});
  Tensor g(z.shape());
  EXPECT_NEAR(compute_loss(LossKind::sparse_categorical_crossentropy, p, &z, y, &g), 1000.0, 1e-3);
  EXPECT_NEAR(g[0], -1.0f, 1e-6);
  EXPECT_NEAR(g[1], 1.0f, 1e-6);
}

TEST(Losses, InvalidLabelsAndShapes) {
  const Tensor p(Shape{2, 3}, std::vector<float>{0.2f, 0.3f, 0.5f, 0.1f, 0.1f, 0.8f});
  EXPECT_THROW(compute_loss(LossKind::sparse_categorical_crossentropy, p, nullptr,
                            Tensor(Shape{2}, std::vector<float>{0, 3}), nullptr),
               ValueError);
  EXPECT_THROW(compute_loss(LossKind::sparse_categorical_crossentropy, p, nullptr,
                            Tensor(Shape{2}, std::vector<float>{-1, 0}), nullptr),
               ValueError);
  EXPECT_THROW(compute_loss(LossKind::sparse_categorical_crossentropy, p, nullptr,
                            Tensor(Shape{3}, std::vector<float>{0, 1, 2}), nullptr),
               ShapeError);
  EXPECT_THROW(
      compute_loss(LossKind::categorical_crossentropy, p, nullptr, Tensor(Shape{2, 4}), nullptr),
      ShapeError);
  EXPECT_THROW(compute_loss(LossKind::mean_squared_error, p, nullptr, Tensor(Shape{3, 2}), nullptr),
               ShapeError);
}

TEST(Losses, AccuracyCountsArgmaxMatches) {
  // accuracy_count returns the number of correct samples (Sequential divides by the total).
  const Tensor p(Shape{4, 3}, std::vector<float>{0.7f, 0.2f, 0.1f,  //
                                                 0.1f, 0.1f, 0.8f,  //
                                                 0.3f, 0.4f, 0.3f,  //
                                                 0.5f, 0.1f, 0.4f});
  const Tensor y(Shape{4}, std::vector<float>{0, 2, 0, 0});
  EXPECT_EQ(accuracy_count(LossKind::sparse_categorical_crossentropy, p, y), 3.0);
  Tensor onehot(Shape{4, 3});
  for (int r = 0; r < 4; ++r) onehot[r * 3 + static_cast<int>(y[r])] = 1.0f;
  EXPECT_EQ(accuracy_count(LossKind::categorical_crossentropy, p, onehot), 3.0);
  // One output: thresholded at 0.5 (Keras binary accuracy).
  const Tensor q(Shape{4, 1}, std::vector<float>{0.9f, 0.2f, 0.6f, 0.4f});
  const Tensor t(Shape{4, 1}, std::vector<float>{1, 0, 0, 1});
  EXPECT_EQ(accuracy_count(LossKind::mean_squared_error, q, t), 2.0);
}

}  // namespace
}  // namespace bnorm
