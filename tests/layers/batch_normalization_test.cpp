// BatchNormalization: Keras 3 semantics (defaults, weights, batch vs moving statistics, moving
// averages, trainable=False, degenerate batches, validation) and the PyTorch preset.
#include "bnorm/layers/batch_normalization.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

using test::BnView;

std::vector<float> values(const Variable* v) { return test::to_vector(v->value); }
std::vector<double> values64(const Variable* v) { return test::to_double(v->value.values()); }

// A built layer with non-trivial gamma, beta and moving statistics.
BatchNormalization make_bn(const Shape& per_sample, BatchNormalization::Options o = {},
                           bool randomize = true) {
  BatchNormalization bn(o);
  Random rng(17);
  bn.build(per_sample, rng);
  if (randomize) {
    Random r(23);
    if (bn.gamma()) test::fill_uniform(bn.gamma()->value, r, 0.5f, 2.0f);
    if (bn.beta()) test::fill_uniform(bn.beta()->value, r, -1.0f, 1.0f);
    if (bn.moving_mean()) test::fill_uniform(bn.moving_mean()->value, r, -0.5f, 0.5f);
    if (bn.moving_variance()) test::fill_uniform(bn.moving_variance()->value, r, 0.5f, 1.5f);
  }
  return bn;
}

std::vector<float> gamma_or_empty(BatchNormalization& bn) {
  return bn.gamma() ? values(bn.gamma()) : std::vector<float>{};
}
std::vector<float> beta_or_empty(BatchNormalization& bn) {
  return bn.beta() ? values(bn.beta()) : std::vector<float>{};
}

// Expects `what` to throw an Error of type E whose message contains `needle`.
template <class E, class F>
void expect_error_naming(F&& what, const std::string& needle) {
  try {
    what();
    ADD_FAILURE() << "expected an exception naming '" << needle << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message does not name '" << needle << "': " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type; message: " << e.what();
  }
}

TEST(BatchNormalization, KerasDefaults) {
  const BatchNormalization::Options o;
  EXPECT_EQ(o.axis, -1);
  EXPECT_EQ(o.momentum, 0.99);  // a double, like the Python float Keras keeps
  EXPECT_EQ(o.epsilon, 1e-3f);
  EXPECT_TRUE(o.center);
  EXPECT_TRUE(o.scale);
  EXPECT_EQ(o.beta_initializer.kind, Initializer::Kind::zeros);
  EXPECT_EQ(o.gamma_initializer.kind, Initializer::Kind::ones);
  EXPECT_EQ(o.moving_mean_initializer.kind, Initializer::Kind::zeros);
  EXPECT_EQ(o.moving_variance_initializer.kind, Initializer::Kind::ones);
  EXPECT_FALSE(o.unbiased_moving_variance);
  EXPECT_FALSE(o.cumulative_moving_average);
  EXPECT_TRUE(o.track_moving_statistics);
  EXPECT_FALSE(o.error_on_single_value);

  BatchNormalization bn;
  EXPECT_EQ(bn.class_name(), "BatchNormalization");
  EXPECT_EQ(bn.name(), "batch_normalization");
  Random rng(1);
  bn.build(Shape{4}, rng);
  EXPECT_EQ(bn.axis(), 1);
  EXPECT_EQ(bn.channels(), 4);
  EXPECT_EQ(values(bn.gamma()), std::vector<float>(4, 1.0f));
  EXPECT_EQ(values(bn.beta()), std::vector<float>(4, 0.0f));
  EXPECT_EQ(values(bn.moving_mean()), std::vector<float>(4, 0.0f));
  EXPECT_EQ(values(bn.moving_variance()), std::vector<float>(4, 1.0f));
}

TEST(BatchNormalization, WeightsInKerasOrder) {
  BatchNormalization bn;
  Random rng(1);
  bn.build(Shape{5, 3}, rng);
  const auto w = bn.weights();
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[0]->name, "gamma");
  EXPECT_EQ(w[1]->name, "beta");
  EXPECT_EQ(w[2]->name, "moving_mean");
  EXPECT_EQ(w[3]->name, "moving_variance");
  EXPECT_TRUE(w[0]->trainable);
  EXPECT_TRUE(w[1]->trainable);
  EXPECT_FALSE(w[2]->trainable);
  EXPECT_FALSE(w[3]->trainable);
  for (const Variable* v : w) EXPECT_EQ(v->value.shape(), Shape{3});
  EXPECT_EQ(bn.gamma(), w[0]);
  EXPECT_EQ(bn.beta(), w[1]);
  EXPECT_EQ(bn.moving_mean(), w[2]);
  EXPECT_EQ(bn.moving_variance(), w[3]);
  EXPECT_EQ(bn.count_params(), 12);
  EXPECT_EQ(bn.count_trainable_params(), 6);
  const auto t = bn.trainable_weights();
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0]->name, "gamma");
  EXPECT_EQ(t[1]->name, "beta");
}

TEST(BatchNormalization, CenterAndScaleOffDropBetaAndGamma) {
  BatchNormalization::Options o;
  o.center = false;
  BatchNormalization no_beta(o);
  Random rng(1);
  no_beta.build(Shape{3}, rng);
  EXPECT_EQ(no_beta.beta(), nullptr);
  ASSERT_EQ(no_beta.weights().size(), 3u);
  EXPECT_EQ(no_beta.weights()[0]->name, "gamma");
  EXPECT_EQ(no_beta.weights()[1]->name, "moving_mean");

  o.center = true;
  o.scale = false;
  BatchNormalization no_gamma(o);
  no_gamma.build(Shape{3}, rng);
  EXPECT_EQ(no_gamma.gamma(), nullptr);
  ASSERT_EQ(no_gamma.weights().size(), 3u);
  EXPECT_EQ(no_gamma.weights()[0]->name, "beta");
}

struct AxisCase {
  Shape per_sample;
  int axis;
};
void PrintTo(const AxisCase& c, std::ostream* os) {
  *os << "per-sample " << c.per_sample.str() << " axis " << c.axis;
}

class BatchNormAxisTest : public ::testing::TestWithParam<AxisCase> {};

TEST_P(BatchNormAxisTest, TrainingUsesBatchStatistics) {
  const AxisCase c = GetParam();
  BatchNormalization::Options o;
  o.axis = c.axis;
  BatchNormalization bn = make_bn(c.per_sample, o);
  EXPECT_TRUE(bn.uses_batch_statistics(Mode::training));
  Random rng(3);
  const Tensor x = test::random_normal(test::with_batch(5, c.per_sample), rng, 2.0f, 3.0f);
  const BnView v = test::bn_view(x.shape(), c.axis);
  EXPECT_EQ(bn.channels(), v.channels);
  const Tensor y = bn.forward(x, Mode::training);
  const auto m = test::naive_bn_moments(v, x.values());
  const auto expected = test::naive_bn_forward(v, x.values(), m.mean, m.variance,
                                               gamma_or_empty(bn), beta_or_empty(bn), 1e-3);
  test::expect_close(y.values(), expected, 1e-5, 1e-5);
}

TEST_P(BatchNormAxisTest, InferenceUsesMovingStatistics) {
  const AxisCase c = GetParam();
  BatchNormalization::Options o;
  o.axis = c.axis;
  BatchNormalization bn = make_bn(c.per_sample, o);
  EXPECT_FALSE(bn.uses_batch_statistics(Mode::inference));
  Random rng(4);
  const Tensor x = test::random_normal(test::with_batch(5, c.per_sample), rng, 2.0f, 3.0f);
  const auto moving_mean = values(bn.moving_mean());
  const auto moving_var = values(bn.moving_variance());
  const Tensor y = bn.forward(x, Mode::inference);
  const BnView v = test::bn_view(x.shape(), c.axis);
  const auto expected = test::naive_bn_forward(v, x.values(), values64(bn.moving_mean()),
                                               values64(bn.moving_variance()), gamma_or_empty(bn),
                                               beta_or_empty(bn), 1e-3);
  test::expect_close(y.values(), expected, 1e-5, 1e-5);
  // Inference leaves the moving statistics alone.
  EXPECT_EQ(values(bn.moving_mean()), moving_mean);
  EXPECT_EQ(values(bn.moving_variance()), moving_var);
  EXPECT_EQ(bn.num_batches_tracked(), 0);
}

TEST_P(BatchNormAxisTest, TrainingBackwardMatchesExplicitFormula) {
  const AxisCase c = GetParam();
  BatchNormalization::Options o;
  o.axis = c.axis;
  BatchNormalization bn = make_bn(c.per_sample, o);
  Random rng(5);
  const Tensor x = test::random_normal(test::with_batch(6, c.per_sample), rng, -1.0f, 2.0f);
  const Tensor dy = test::random_normal(x.shape(), rng);
  bn.forward(x, Mode::training);
  const Tensor dx = bn.backward(dy);
  const BnView v = test::bn_view(x.shape(), c.axis);
  const auto m = test::naive_bn_moments(v, x.values());
  const auto g = test::naive_bn_backward(v, x.values(), dy.values(), m.mean, m.variance,
                                         gamma_or_empty(bn), 1e-3, true);
  test::expect_close(dx.values(), g.dx, 1e-4, 1e-5);
  test::expect_close(bn.gamma()->gradient.values(), g.dgamma, 1e-4, 1e-5);
  test::expect_close(bn.beta()->gradient.values(), g.dbeta, 1e-5, 1e-5);

  // Inference backward: moving statistics are constants.
  bn.forward(x, Mode::inference);
  const Tensor dx_inf = bn.backward(dy);
  const auto gi =
      test::naive_bn_backward(v, x.values(), dy.values(), values64(bn.moving_mean()),
                              values64(bn.moving_variance()), gamma_or_empty(bn), 1e-3, false);
  test::expect_close(dx_inf.values(), gi.dx, 1e-5, 1e-6);
  test::expect_close(bn.gamma()->gradient.values(), gi.dgamma, 1e-4, 1e-5);
  test::expect_close(bn.beta()->gradient.values(), gi.dbeta, 1e-5, 1e-5);
}

TEST_P(BatchNormAxisTest, MovingStatisticsAfterKStepsEqualTheClosedForm) {
  // moving_k = m^k moving_0 + (1 - m) sum_i m^(k-1-i) batch_i, batch variance biased.
  const AxisCase c = GetParam();
  BatchNormalization::Options o;
  o.axis = c.axis;
  o.momentum = 0.8f;  // a visible effect in a few steps
  BatchNormalization bn = make_bn(c.per_sample, o);
  const int k = 5;
  const double mom = o.momentum;
  std::vector<double> mm = values64(bn.moving_mean());
  std::vector<double> mv = values64(bn.moving_variance());
  for (auto& x : mm) x *= std::pow(mom, k);
  for (auto& x : mv) x *= std::pow(mom, k);
  Random rng(6);
  for (int step = 0; step < k; ++step) {
    const Tensor x = test::random_normal(test::with_batch(4 + step, c.per_sample), rng, 1.0f + step,
                                         1.0f + step);
    bn.forward(x, Mode::training);
    const auto m = test::naive_bn_moments(test::bn_view(x.shape(), c.axis), x.values());
    const double w = (1.0 - mom) * std::pow(mom, k - 1 - step);
    for (std::size_t ch = 0; ch < mm.size(); ++ch) {
      mm[ch] += w * m.mean[ch];
      mv[ch] += w * m.variance[ch];
    }
  }
  test::expect_close(bn.moving_mean()->value.values(), mm, 1e-5, 1e-6);
  test::expect_close(bn.moving_variance()->value.values(), mv, 1e-5, 1e-6);
  EXPECT_EQ(bn.num_batches_tracked(), k);
}

INSTANTIATE_TEST_SUITE_P(Axes, BatchNormAxisTest,
                         ::testing::Values(AxisCase{Shape{6}, -1}, AxisCase{Shape{6}, 1},
                                           AxisCase{Shape{3, 4, 5}, 1},   // (N, C, H, W)
                                           AxisCase{Shape{4, 5, 3}, -1},  // (N, H, W, C)
                                           AxisCase{Shape{4, 5, 3}, 3}, AxisCase{Shape{4, 3, 5}, 2},
                                           AxisCase{Shape{7, 2}, -2},
                                           // Convolution outputs: NHWC axis=-1, NCHW axis=1,
                                           // channels beyond one SIMD vector
                                           AxisCase{Shape{6, 7, 33}, -1},
                                           AxisCase{Shape{33, 6, 7}, 1}),
                         [](const auto& info) {
                           std::string s = "rank" +
                                           std::to_string(info.param.per_sample.rank() + 1) +
                                           "_axis" + std::to_string(info.param.axis);
                           if (info.param.per_sample.size() > 200) s += "_conv_sized";
                           for (char& ch : s)
                             if (ch == '-') ch = 'm';
                           return s;
                         });

TEST(BatchNormalization, ScaleAndCenterOffInTraining) {
  BatchNormalization::Options o;
  o.center = false;
  o.scale = false;
  BatchNormalization bn = make_bn(Shape{3}, o);
  Random rng(8);
  const Tensor x = test::random_normal(Shape{10, 3}, rng, 5.0f, 2.0f);
  const Tensor y = bn.forward(x, Mode::training);
  const BnView v = test::bn_view(x.shape(), -1);
  const auto m = test::naive_bn_moments(v, x.values());
  test::expect_close(y.values(),
                     test::naive_bn_forward(v, x.values(), m.mean, m.variance, {}, {}, 1e-3), 1e-5,
                     1e-5);
  // Each channel of y now has mean 0 and variance var / (var + eps).
  const auto my = test::naive_bn_moments(v, y.values());
  for (int ch = 0; ch < 3; ++ch) {
    EXPECT_NEAR(my.mean[ch], 0.0, 1e-5);
    EXPECT_NEAR(my.variance[ch], m.variance[ch] / (m.variance[ch] + 1e-3), 1e-5);
  }
}

TEST(BatchNormalization, FrozenLayerUsesAndKeepsMovingStatistics) {
  // Keras: trainable=False runs BN in inference mode even when training=True.
  BatchNormalization bn = make_bn(Shape{4});
  bn.set_trainable(false);
  EXPECT_FALSE(bn.uses_batch_statistics(Mode::training));
  EXPECT_TRUE(bn.trainable_weights().empty());
  EXPECT_EQ(bn.count_trainable_params(), 0);
  EXPECT_EQ(bn.count_params(), 16);
  const auto mm = values(bn.moving_mean());
  const auto mv = values(bn.moving_variance());
  Random rng(9);
  const Tensor x = test::random_normal(Shape{8, 4}, rng, 3.0f, 2.0f);
  const Tensor y = bn.forward(x, Mode::training);
  const Tensor y_inf = bn.forward(x, Mode::inference);
  EXPECT_TRUE(test::bitwise_equal(y, y_inf));
  const BnView v = test::bn_view(x.shape(), -1);
  test::expect_close(y.values(),
                     test::naive_bn_forward(v, x.values(), values64(bn.moving_mean()),
                                            values64(bn.moving_variance()), values(bn.gamma()),
                                            values(bn.beta()), 1e-3),
                     1e-5, 1e-5);
  EXPECT_EQ(values(bn.moving_mean()), mm);
  EXPECT_EQ(values(bn.moving_variance()), mv);
  EXPECT_EQ(bn.num_batches_tracked(), 0);
  // Unfreezing restores batch statistics in training.
  bn.set_trainable(true);
  EXPECT_TRUE(bn.uses_batch_statistics(Mode::training));
  EXPECT_EQ(bn.trainable_weights().size(), 2u);
}

TEST(BatchNormalization, OneValuePerChannelOutputsBetaExactly) {
  // Keras: batch variance 0, y = (x - x) * gamma / sqrt(eps) + beta = beta; PyTorch would raise.
  BatchNormalization bn = make_bn(Shape{5});
  const auto beta = values(bn.beta());
  const auto mm0 = values64(bn.moving_mean());
  const auto mv0 = values64(bn.moving_variance());
  const Tensor x(Shape{1, 5}, std::vector<float>{3.0f, -2.0f, 1e4f, 0.0f, 0.5f});
  const Tensor y = bn.forward(x, Mode::training);
  EXPECT_EQ(test::to_vector(y), beta);
  // The moving statistics take the batch mean (x itself) and batch variance 0.
  std::vector<double> em(5), ev(5);
  for (std::size_t c = 0; c < 5; ++c) {
    em[c] = 0.99 * mm0[c] + 0.01 * x[static_cast<std::int64_t>(c)];
    ev[c] = 0.99 * mv0[c];
  }
  test::expect_close(bn.moving_mean()->value.values(), em, 1e-5, 1e-6);
  test::expect_close(bn.moving_variance()->value.values(), ev, 1e-6, 1e-7);
  // Gradients are finite: dx = 0 (count 1) up to rounding of gamma / sqrt(eps) * dy (~50 here),
  // dbeta = dy, dgamma = 0.
  const Tensor dy = Tensor::full(y.shape(), 1.5f);
  const Tensor dx = bn.backward(dy);
  EXPECT_TRUE(dx.all_finite());
  for (float d : dx.values()) EXPECT_NEAR(d, 0.0f, 1e-5);
  for (float d : bn.beta()->gradient.values()) EXPECT_EQ(d, 1.5f);
  for (float d : bn.gamma()->gradient.values()) EXPECT_EQ(d, 0.0f);
}

TEST(BatchNormalization, OneValuePerChannelOnFourDimensionalInput) {
  BatchNormalization::Options o;
  o.axis = 1;
  BatchNormalization bn = make_bn(Shape{3, 1, 1}, o);
  const auto beta = values(bn.beta());
  const Tensor x(Shape{1, 3, 1, 1}, std::vector<float>{7.0f, -7.0f, 0.25f});
  EXPECT_EQ(test::to_vector(bn.forward(x, Mode::training)), beta);
}

TEST(BatchNormalization, EmptyBatchIsAShapeError) {
  BatchNormalization bn = make_bn(Shape{4});
  const Tensor empty(Shape{0, 4});
  EXPECT_THROW(bn.forward(empty, Mode::training), ShapeError);
  EXPECT_THROW(bn.forward(empty, Mode::inference), ShapeError);
}

TEST(BatchNormalization, InvalidEpsilonAndMomentumNameTheArgument) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  auto make = [](BatchNormalization::Options o) {
    return [o] {
      BatchNormalization bn(o);
      Random rng(1);
      bn.build(Shape{4}, rng);
    };
  };
  for (float eps : {0.0f, -1e-3f, nan, -inf}) {
    BatchNormalization::Options o;
    o.epsilon = eps;
    SCOPED_TRACE("epsilon " + std::to_string(eps));
    expect_error_naming<ValueError>(make(o), "epsilon");
  }
  for (float m : {-0.01f, 1.01f, nan, inf}) {
    BatchNormalization::Options o;
    o.momentum = m;
    SCOPED_TRACE("momentum " + std::to_string(m));
    expect_error_naming<ValueError>(make(o), "momentum");
  }
  // The boundaries are valid.
  for (float m : {0.0f, 1.0f}) {
    BatchNormalization::Options o;
    o.momentum = m;
    EXPECT_NO_THROW(make(o)());
  }
}

TEST(BatchNormalization, AxisOutOfRangeIsRejectedAtBuild) {
  for (int axis : {2, 5, -3}) {
    BatchNormalization::Options o;
    o.axis = axis;
    BatchNormalization bn(o);
    Random rng(1);
    SCOPED_TRACE("axis " + std::to_string(axis));
    expect_error_naming<ShapeError>([&] { bn.build(Shape{4}, rng); }, "axis");
  }
}

TEST(BatchNormalization, BatchAxisIsRejectedAtBuild) {
  // axis 0 (or -rank) would normalize over the batch axis only; Keras's BN is per feature.
  for (auto [axis, shape] :
       {std::pair{0, Shape{4}}, std::pair{-2, Shape{4}}, std::pair{-4, Shape{3, 2, 2}}}) {
    BatchNormalization::Options o;
    o.axis = axis;
    BatchNormalization bn(o);
    Random rng(1);
    SCOPED_TRACE("axis " + std::to_string(axis));
    try {
      bn.build(shape, rng);
      ADD_FAILURE() << "axis " << axis << " accepted";
    } catch (const Error& e) {
      const bool typed = dynamic_cast<const ShapeError*>(&e) || dynamic_cast<const ValueError*>(&e);
      EXPECT_TRUE(typed) << e.what();
      EXPECT_NE(std::string(e.what()).find("axis"), std::string::npos) << e.what();
    }
  }
}

TEST(BatchNormalization, ChannelMismatchAtForwardIsAShapeError) {
  BatchNormalization bn = make_bn(Shape{4});
  Random rng(2);
  const Tensor five = test::random_normal(Shape{8, 5}, rng);
  const Tensor three = test::random_normal(Shape{8, 3}, rng);
  const Tensor rank3 = test::random_normal(Shape{8, 4, 1}, rng);
  EXPECT_THROW(bn.forward(five, Mode::training), ShapeError);
  EXPECT_THROW(bn.forward(three, Mode::inference), ShapeError);
  EXPECT_THROW(bn.forward(rank3, Mode::training), ShapeError);
  // The message names the layer.
  expect_error_naming<ShapeError>([&] { bn.forward(five, Mode::training); }, "batch_normalization");
}

TEST(BatchNormalization, NonFiniteBatchRaisesAndLeavesMovingStatisticsUntouched) {
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    BatchNormalization bn = make_bn(Shape{4});
    const auto mm = values(bn.moving_mean());
    const auto mv = values(bn.moving_variance());
    Random rng(3);
    Tensor x = test::random_normal(Shape{8, 4}, rng);
    x[13] = bad;
    EXPECT_THROW(bn.forward(x, Mode::training), NonFiniteError);
    EXPECT_EQ(values(bn.moving_mean()), mm);
    EXPECT_EQ(values(bn.moving_variance()), mv);
    EXPECT_EQ(bn.num_batches_tracked(), 0);
    // A good batch afterwards trains normally.
    x[13] = 0.5f;
    EXPECT_NO_THROW(bn.forward(x, Mode::training));
    EXPECT_TRUE(bn.moving_mean()->value.all_finite());
    EXPECT_EQ(bn.num_batches_tracked(), 1);
  }
}

TEST(BatchNormalization, GammaL2RegularizerAddsLossAndGradient) {
  BatchNormalization::Options o;
  o.gamma_l2 = 0.01f;
  o.beta_l2 = 0.1f;
  BatchNormalization bn = make_bn(Shape{3}, o);
  EXPECT_EQ(bn.gamma()->l2, 0.01f);
  EXPECT_EQ(bn.beta()->l2, 0.1f);
  const auto gamma = values64(bn.gamma());
  const auto beta = values64(bn.beta());
  double expected = 0.0;
  for (double g : gamma) expected += 0.01 * g * g;
  for (double b : beta) expected += 0.1 * b * b;
  EXPECT_NEAR(bn.regularization_loss(), expected, 1e-6 * expected);

  Random rng(4);
  const Tensor x = test::random_normal(Shape{6, 3}, rng);
  const Tensor dy = test::random_normal(Shape{6, 3}, rng);
  bn.forward(x, Mode::training);
  bn.backward(dy);
  const Tensor dgamma = bn.gamma()->gradient;
  const Tensor dbeta = bn.beta()->gradient;
  bn.add_regularization_gradients();
  std::vector<double> eg(3), eb(3);
  for (std::size_t c = 0; c < 3; ++c) {
    eg[c] = dgamma[static_cast<std::int64_t>(c)] + 2 * 0.01 * gamma[c];
    eb[c] = dbeta[static_cast<std::int64_t>(c)] + 2 * 0.1 * beta[c];
  }
  test::expect_close(bn.gamma()->gradient.values(), eg, 1e-6, 1e-7);
  test::expect_close(bn.beta()->gradient.values(), eb, 1e-6, 1e-7);
  // Moving statistics are never regularized.
  EXPECT_EQ(bn.moving_mean()->l2, 0.0f);
  EXPECT_EQ(bn.moving_variance()->l2, 0.0f);

  BatchNormalization plain = make_bn(Shape{3});
  EXPECT_EQ(plain.regularization_loss(), 0.0);
}

// --- PyTorch conventions -------------------------------------------------------------------

TEST(BatchNormalizationPyTorch, PresetValues) {
  const auto o = BatchNormalization::pytorch_defaults();
  EXPECT_DOUBLE_EQ(o.momentum, 0.9);  // 1 - PyTorch's 0.1
  EXPECT_FLOAT_EQ(o.epsilon, 1e-5f);
  EXPECT_TRUE(o.unbiased_moving_variance);
  EXPECT_TRUE(o.error_on_single_value);
  EXPECT_FALSE(o.cumulative_moving_average);
  EXPECT_TRUE(o.track_moving_statistics);
  EXPECT_TRUE(o.center);
  EXPECT_TRUE(o.scale);
}

TEST(BatchNormalizationPyTorch, OneStepStoresBesselCorrectedVariance) {
  // running_var = 0.9 * 1 + 0.1 * var * n / (n - 1), running_mean = 0.1 * mean; n = N * H * W.
  BatchNormalization::Options o = BatchNormalization::pytorch_defaults();
  o.axis = 1;
  BatchNormalization bn = make_bn(Shape{3, 2, 2}, o, /*randomize=*/false);
  Random rng(5);
  const Tensor x = test::random_normal(Shape{4, 3, 2, 2}, rng, 1.0f, 2.0f);
  const Tensor y = bn.forward(x, Mode::training);
  const BnView v = test::bn_view(x.shape(), 1);
  const auto m = test::naive_bn_moments(v, x.values());
  const double n = static_cast<double>(v.count());
  std::vector<double> em(3), ev(3);
  for (std::size_t c = 0; c < 3; ++c) {
    em[c] = 0.1 * m.mean[c];
    ev[c] = 0.9 * 1.0 + 0.1 * m.variance[c] * n / (n - 1);
  }
  test::expect_close(bn.moving_mean()->value.values(), em, 1e-5, 1e-6);
  test::expect_close(bn.moving_variance()->value.values(), ev, 1e-5, 1e-6);
  // Normalization itself uses the biased batch variance and epsilon 1e-5.
  test::expect_close(y.values(),
                     test::naive_bn_forward(v, x.values(), m.mean, m.variance, {}, {}, 1e-5), 1e-5,
                     1e-5);
}

TEST(BatchNormalizationPyTorch, ErrorOnSingleValuePerChannel) {
  BatchNormalization bn = make_bn(Shape{4}, BatchNormalization::pytorch_defaults());
  const auto mm = values(bn.moving_mean());
  const Tensor x(Shape{1, 4}, std::vector<float>{1, 2, 3, 4});
  try {
    bn.forward(x, Mode::training);
    ADD_FAILURE() << "expected an error for one value per channel";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("value"), std::string::npos) << e.what();
  }
  EXPECT_EQ(values(bn.moving_mean()), mm);
  EXPECT_NO_THROW(bn.forward(x, Mode::inference));  // inference is fine
  // More than one value per channel through the spatial dims is fine (N = 1, H * W = 4).
  BatchNormalization::Options o = BatchNormalization::pytorch_defaults();
  o.axis = 1;
  BatchNormalization spatial = make_bn(Shape{2, 2, 2}, o);
  const Tensor one_sample = Tensor::full(Shape{1, 2, 2, 2}, 1.0f);
  EXPECT_NO_THROW(spatial.forward(one_sample, Mode::training));
}

TEST(BatchNormalizationPyTorch, CumulativeMovingAverage) {
  // PyTorch momentum=None: running = average of all batch statistics seen (initial value dropped).
  BatchNormalization::Options o;
  o.cumulative_moving_average = true;
  BatchNormalization bn = make_bn(Shape{3}, o);
  Random rng(6);
  std::vector<double> sum_mean(3, 0.0), sum_var(3, 0.0);
  const int k = 4;
  for (int step = 1; step <= k; ++step) {
    const Tensor x = test::random_normal(Shape{5, 3}, rng, static_cast<float>(step), 1.0f + step);
    bn.forward(x, Mode::training);
    const auto m = test::naive_bn_moments(test::bn_view(x.shape(), -1), x.values());
    for (std::size_t c = 0; c < 3; ++c) {
      sum_mean[c] += m.mean[c];
      sum_var[c] += m.variance[c];
    }
    std::vector<double> em(3), ev(3);
    for (std::size_t c = 0; c < 3; ++c) {
      em[c] = sum_mean[c] / step;
      ev[c] = sum_var[c] / step;
    }
    SCOPED_TRACE("after " + std::to_string(step) + " batches");
    test::expect_close(bn.moving_mean()->value.values(), em, 1e-5, 1e-6);
    test::expect_close(bn.moving_variance()->value.values(), ev, 1e-5, 1e-6);
    EXPECT_EQ(bn.num_batches_tracked(), step);
  }
}

TEST(BatchNormalizationPyTorch, NoTrackingUsesBatchStatisticsInInference) {
  BatchNormalization::Options o;
  o.track_moving_statistics = false;
  BatchNormalization bn(o);
  Random rng(1);
  bn.build(Shape{4}, rng);
  EXPECT_TRUE(bn.uses_batch_statistics(Mode::inference));
  EXPECT_TRUE(bn.uses_batch_statistics(Mode::training));
  Random r(7);
  const Tensor x = test::random_normal(Shape{9, 4}, r, 3.0f, 2.0f);
  const Tensor y_train = bn.forward(x, Mode::training);
  const Tensor y_inf = bn.forward(x, Mode::inference);
  const BnView v = test::bn_view(x.shape(), -1);
  const auto m = test::naive_bn_moments(v, x.values());
  const auto expected = test::naive_bn_forward(v, x.values(), m.mean, m.variance, {}, {}, 1e-3);
  test::expect_close(y_inf.values(), expected, 1e-5, 1e-5);
  test::expect_close(y_train.values(), expected, 1e-5, 1e-5);
  // Backward in inference then differentiates through the batch statistics.
  EXPECT_TRUE(test::check_layer_gradients(bn, x, {.mode = Mode::inference}));
}

}  // namespace
}  // namespace bnorm
