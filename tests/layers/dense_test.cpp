// Dense: Keras initialization, forward against float64, weights, validation, logits path.
#include "bnorm/layers/dense.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "kernels/activation.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

TEST(Dense, KerasDefaultsAndWeights) {
  Dense d(10);
  EXPECT_EQ(d.class_name(), "Dense");
  EXPECT_EQ(d.name(), "dense");
  EXPECT_EQ(d.options().activation, "linear");
  EXPECT_TRUE(d.options().use_bias);
  EXPECT_EQ(d.options().kernel_initializer.kind, Initializer::Kind::glorot_uniform);
  EXPECT_EQ(d.options().bias_initializer.kind, Initializer::Kind::zeros);
  Random rng(1);
  d.build(Shape{7}, rng);
  const auto w = d.weights();
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[0]->name, "kernel");
  EXPECT_EQ(w[0]->value.shape(), (Shape{7, 10}));  // Keras layout (input_dim, units)
  EXPECT_EQ(w[1]->name, "bias");
  EXPECT_EQ(w[1]->value.shape(), Shape{10});
  for (float b : w[1]->value.values()) EXPECT_EQ(b, 0.0f);
  EXPECT_EQ(d.count_params(), 80);
  EXPECT_EQ(d.output_shape(Shape{7}), Shape{10});
  EXPECT_EQ(d.output_shape(Shape{3, 7}), (Shape{3, 10}));
}

TEST(Dense, GlorotUniformLimit) {
  // limit = sqrt(6 / (fan_in + fan_out)); uniform on [-limit, limit]: variance limit^2 / 3.
  Dense d(200);
  Random rng(2);
  d.build(Shape{300}, rng);
  const Tensor& k = d.weights()[0]->value;
  const double limit = std::sqrt(6.0 / (300 + 200));
  double max_abs = 0.0, sum = 0.0, sum_sq = 0.0;
  for (float v : k.values()) {
    ASSERT_LE(std::abs(v), limit * (1 + 1e-6));
    max_abs = std::max(max_abs, static_cast<double>(std::abs(v)));
    sum += v;
    sum_sq += static_cast<double>(v) * v;
  }
  const double n = static_cast<double>(k.size());
  EXPECT_GT(max_abs, 0.99 * limit);
  EXPECT_NEAR(sum / n, 0.0, 0.01 * limit);
  EXPECT_NEAR(sum_sq / n, limit * limit / 3.0, 0.02 * limit * limit / 3.0);
}

// Keras VarianceScaling: variance scale / fan; the truncated normal is redrawn outside two
// (corrected) standard deviations, so its samples have exactly the requested variance.
TEST(Dense, VarianceScalingMatchesKerasMoments) {
  using M = Initializer::Mode;
  using D = Initializer::Distribution;
  struct Case {
    Initializer init;
    double variance;  // fan_in 300, fan_out 200
    double bound;     // 0: unbounded
  };
  const double he = 2.0 / 300, avg = 1.0 / 250;
  const Case cases[] = {
      {Initializer::variance_scaling(2.0f, M::fan_in, D::truncated_normal), he,
       2.0 * std::sqrt(he) / 0.87962566103423978},
      {Initializer::variance_scaling(2.0f, M::fan_in, D::uniform), he, std::sqrt(3.0 * he)},
      {Initializer::variance_scaling(1.0f, M::fan_avg, D::untruncated_normal), avg, 0.0},
      {Initializer::variance_scaling(3.0f, M::fan_out, D::uniform), 3.0 / 200,
       std::sqrt(9.0 / 200)},
      {Initializer::truncated_normal(0.0f, 0.1f), 0.1 * 0.1 * 0.7737413, 0.2},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.init.str());
    Dense::Options o;
    o.units = 200;
    o.kernel_initializer = c.init;
    Dense d(o);
    Random rng(5);
    d.build(Shape{300}, rng);
    double sum_sq = 0.0;
    for (float v : d.weights()[0]->value.values()) {
      if (c.bound > 0) ASSERT_LE(std::abs(v), c.bound * (1 + 1e-6));
      sum_sq += double(v) * v;
    }
    EXPECT_NEAR(sum_sq / 60000.0, c.variance, 0.03 * c.variance);
  }
}

TEST(Dense, NoBiasHasOnlyAKernel) {
  Dense d(Dense::Options{.units = 3, .activation = "relu", .use_bias = false});
  Random rng(3);
  d.build(Shape{4}, rng);
  ASSERT_EQ(d.weights().size(), 1u);
  EXPECT_EQ(d.weights()[0]->name, "kernel");
  EXPECT_EQ(d.count_params(), 12);
}

TEST(Dense, ForwardMatchesFloat64ForEachActivation) {
  for (const char* act : {"linear", "relu", "sigmoid", "tanh", "softmax"}) {
    SCOPED_TRACE(act);
    Dense d(Dense::Options{.units = 6,
                           .activation = act,
                           .bias_initializer = Initializer::random_uniform(-1.0f, 1.0f)});
    Random rng(4);
    d.build(Shape{9}, rng);
    const Tensor& k = d.weights()[0]->value;
    const Tensor& b = d.weights()[1]->value;
    const Tensor x = test::random_normal(Shape{5, 9}, rng);
    const Tensor y = d.forward(x, Mode::inference);
    ASSERT_EQ(y.shape(), (Shape{5, 6}));
    std::vector<double> expected(30);
    for (int r = 0; r < 5; ++r) {
      double mx = -INFINITY;
      for (int u = 0; u < 6; ++u) {
        double z = b[u];
        for (int i = 0; i < 9; ++i) z += static_cast<double>(x[r * 9 + i]) * k[i * 6 + u];
        expected[static_cast<std::size_t>(r * 6 + u)] = z;
        mx = std::max(mx, z);
      }
      double s = 0.0;
      for (int u = 0; u < 6; ++u) {
        double& z = expected[static_cast<std::size_t>(r * 6 + u)];
        const std::string a = act;
        if (a == "relu") z = std::max(z, 0.0);
        if (a == "sigmoid") z = 1.0 / (1.0 + std::exp(-z));
        if (a == "tanh") z = std::tanh(z);
        if (a == "softmax") {
          z = std::exp(z - mx);
          s += z;
        }
      }
      if (std::string(act) == "softmax")
        for (int u = 0; u < 6; ++u) expected[static_cast<std::size_t>(r * 6 + u)] /= s;
    }
    test::expect_close(y.values(), expected, 1e-5, 1e-6);
    EXPECT_EQ(d.activation(), parse_activation(act));
  }
}

TEST(Dense, AppliesToTheLastAxisOfHigherRankInput) {
  Dense d(3);
  Random rng(5);
  d.build(Shape{2, 4}, rng);
  const Tensor x = test::random_normal(Shape{5, 2, 4}, rng);
  const Tensor y = d.forward(x, Mode::inference);
  ASSERT_EQ(y.shape(), (Shape{5, 2, 3}));
  // Same as the 2-D layer applied to the (10, 4) view.
  Dense flat(3);
  Random rng2(5);
  flat.build(Shape{4}, rng2);
  flat.weights()[0]->value = d.weights()[0]->value;
  const Tensor x2 = x.reshaped(Shape{10, 4});
  const Tensor y2 = flat.forward(x2, Mode::inference);
  test::expect_close(y.reshaped(Shape{10, 3}), y2, 1e-6, 1e-7);
}

TEST(Dense, WrongFeatureCountIsAShapeError) {
  Dense d(4);
  Random rng(6);
  d.build(Shape{5}, rng);
  const Tensor six(Shape{3, 6}), four(Shape{3, 4});
  EXPECT_THROW(d.forward(six, Mode::inference), ShapeError);
  EXPECT_THROW(d.forward(four, Mode::training), ShapeError);
  try {
    d.forward(six, Mode::inference);
  } catch (const ShapeError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("dense"), std::string::npos) << msg;
    EXPECT_NE(msg.find('5'), std::string::npos) << "expected size missing: " << msg;
    EXPECT_NE(msg.find('6'), std::string::npos) << "received size missing: " << msg;
  }
}

TEST(Dense, InvalidUnitsOrActivation) {
  EXPECT_THROW(Dense(0), ValueError);
  EXPECT_THROW(Dense(-3), ValueError);
  EXPECT_THROW(Dense(4, "swishy"), ValueError);
}

TEST(Dense, KernelL2Regularization) {
  Dense d(Dense::Options{.units = 3, .kernel_l2 = 0.05f, .bias_l2 = 0.5f});
  Random rng(7);
  d.build(Shape{4}, rng);
  d.weights()[1]->value.fill(0.25f);
  double expected = 0.0;
  for (float v : d.weights()[0]->value.values()) expected += 0.05 * v * v;
  expected += 0.5 * 3 * 0.0625;
  EXPECT_NEAR(d.regularization_loss(), expected, 1e-6 * expected);
}

TEST(Dense, SoftmaxLogitsAndBackwardFromLogits) {
  // A softmax Dense exposes its logits; backward_from_logits(dz) equals a linear Dense's
  // backward(dz).
  Dense soft(4, "softmax");
  Dense lin(4, "linear");
  Random r1(8), r2(8);
  soft.build(Shape{5}, r1);
  lin.build(Shape{5}, r2);
  Random rng(9);
  const Tensor x = test::random_normal(Shape{3, 5}, rng);
  const Tensor y = soft.forward(x, Mode::training);
  const Tensor z = lin.forward(x, Mode::training);
  ASSERT_NE(soft.softmax_logits(), nullptr);
  EXPECT_EQ(lin.softmax_logits(), nullptr);
  test::expect_close(*soft.softmax_logits(), z, 1e-6, 1e-7);
  // The output is the softmax of those logits.
  Tensor p(z.shape());
  kernels::activation_forward(ActivationKind::softmax, 3, 4, z.data(), p.data());
  test::expect_close(y, p, 1e-6, 1e-7);

  const Tensor dz = test::random_normal(z.shape(), rng);
  const Tensor dx_soft = soft.backward_from_logits(dz);
  const Tensor dx_lin = lin.backward(dz);
  test::expect_close(dx_soft, dx_lin, 1e-6, 1e-7);
  test::expect_close(soft.weights()[0]->gradient, lin.weights()[0]->gradient, 1e-6, 1e-7);
  test::expect_close(soft.weights()[1]->gradient, lin.weights()[1]->gradient, 1e-6, 1e-7);
  // A non-softmax layer refuses backward_from_logits.
  EXPECT_THROW(lin.backward_from_logits(dz), Error);
}

TEST(Dense, BackwardWithoutDxStillWritesWeightGradients) {
  Dense d(3, "tanh");
  Random rng(10);
  d.build(Shape{4}, rng);
  const Tensor x = test::random_normal(Shape{6, 4}, rng);
  const Tensor dy = test::random_normal(Shape{6, 3}, rng);
  d.forward(x, Mode::training);
  d.backward(dy, true);
  const Tensor gk = d.weights()[0]->gradient;
  const Tensor gb = d.weights()[1]->gradient;
  d.weights()[0]->gradient.fill(0.0f);
  d.weights()[1]->gradient.fill(0.0f);
  d.forward(x, Mode::training);
  d.backward(dy, false);
  EXPECT_TRUE(test::bitwise_equal(d.weights()[0]->gradient, gk));
  EXPECT_TRUE(test::bitwise_equal(d.weights()[1]->gradient, gb));
}

TEST(Dense, GradientsOverwriteRatherThanAccumulate) {
  Dense d(3);
  Random rng(11);
  d.build(Shape{4}, rng);
  const Tensor x = test::random_normal(Shape{2, 4}, rng);
  const Tensor dy = test::random_normal(Shape{2, 3}, rng);
  d.forward(x, Mode::training);
  d.backward(dy);
  const Tensor g1 = d.weights()[0]->gradient;
  d.forward(x, Mode::training);
  d.backward(dy);
  EXPECT_TRUE(test::bitwise_equal(d.weights()[0]->gradient, g1));
}

}  // namespace
}  // namespace bnorm
