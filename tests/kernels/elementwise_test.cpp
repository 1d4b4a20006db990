// The activations added for Keras 3 architectures (silu, gelu, hard_sigmoid, hard_silu, elu,
// leaky_relu, relu6) and the elementwise layers' kernels (ReLU, Rescaling, Normalization): values
// against float64 formulas written here from the Keras definitions, gradients against central
// differences of those formulas, and TensorFlow's values at the kinks.
#include "kernels/elementwise.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/core/random.hpp"
#include "bnorm/layers/activation.hpp"
#include "kernels/activation.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

double relu6_64(double t) { return std::min(std::max(t, 0.0), 6.0); }

// Float64 definitions (Keras 3 docs / TensorFlow ops).
double f64(ActivationKind kind, double x) {
  switch (kind) {
    case ActivationKind::silu:
      return x / (1.0 + std::exp(-x));
    case ActivationKind::gelu:
      return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case ActivationKind::hard_sigmoid:
      return relu6_64(x + 3.0) / 6.0;
    case ActivationKind::hard_silu:
      return x * relu6_64(x + 3.0) / 6.0;
    case ActivationKind::elu:
      return x > 0 ? x : std::expm1(x);
    case ActivationKind::leaky_relu:
      return x > 0 ? x : 0.2 * x;
    case ActivationKind::relu6:
      return relu6_64(x);
    default:
      return std::numeric_limits<double>::quiet_NaN();
  }
}

// Distance from x to the nearest kink of f (where central differences are meaningless).
double kink_distance(ActivationKind kind, double x) {
  switch (kind) {
    case ActivationKind::hard_sigmoid:
    case ActivationKind::hard_silu:
      return std::min(std::abs(x + 3.0), std::abs(x - 3.0));
    case ActivationKind::elu:
    case ActivationKind::leaky_relu:
      return std::abs(x);
    case ActivationKind::relu6:
      return std::min(std::abs(x), std::abs(x - 6.0));
    default:
      return 1e9;
  }
}

const std::vector<ActivationKind> kNewKinds = {
    ActivationKind::silu,      ActivationKind::gelu, ActivationKind::hard_sigmoid,
    ActivationKind::hard_silu, ActivationKind::elu,  ActivationKind::leaky_relu,
    ActivationKind::relu6};

class NewActivationTest : public ::testing::TestWithParam<ActivationKind> {};

TEST_P(NewActivationTest, ForwardMatchesFloat64) {
  const ActivationKind kind = GetParam();
  const std::int64_t rows = 7, cols = 19;
  Random rng(101);
  std::vector<float> x(rows * cols);
  for (float& v : x) v = 4.0f * rng.normal();
  const std::vector<float> specials{0.0f, -0.0f, 3.0f, -3.0f, 6.0f, 30.0f, -30.0f, 1e-6f, -1e-6f};
  std::copy(specials.begin(), specials.end(), x.begin());
  std::vector<float> y(x.size(), std::nanf(""));
  kernels::activation_forward(kind, rows, cols, x.data(), y.data());
  std::vector<double> expected(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) expected[i] = f64(kind, x[i]);
  test::expect_close(y, expected, 2e-6, 1e-7);
  std::vector<float> inplace = x;
  kernels::activation_forward(kind, rows, cols, inplace.data(), inplace.data());
  test::expect_close(inplace, y, 0.0, 0.0);
  // The Dense epilogue computes the same values, and keeps z + bias for the backward.
  std::vector<float> bias(cols, 0.25f), z = x, yb(x.size());
  std::vector<float> shifted = x;
  for (std::int64_t i = 0; i < rows * cols; ++i) shifted[static_cast<std::size_t>(i)] += 0.25f;
  std::vector<float> expected_b(x.size());
  kernels::activation_forward(kind, rows, cols, shifted.data(), expected_b.data());
  kernels::bias_activation_forward(kind, rows, cols, bias.data(), z.data(), yb.data());
  EXPECT_EQ(yb, expected_b);
  EXPECT_EQ(z, shifted);
}

TEST_P(NewActivationTest, BackwardMatchesFiniteDifferences) {
  const ActivationKind kind = GetParam();
  const std::int64_t rows = 5, cols = 30;
  Random rng(103);
  std::vector<float> x(rows * cols), dy(x.size());
  for (float& v : x) {
    v = 3.0f * rng.normal();
    if (kink_distance(kind, v) < 0.01) v += 0.1f;
  }
  for (float& v : dy) v = rng.normal();
  std::vector<float> y(x.size()), dx(x.size(), std::nanf(""));
  kernels::activation_forward(kind, rows, cols, x.data(), y.data());
  kernels::activation_backward(kind, rows, cols, x.data(), y.data(), dy.data(), dx.data());
  std::vector<double> expected(x.size());
  const double h = 1e-4;
  for (std::size_t i = 0; i < x.size(); ++i)
    expected[i] = (f64(kind, x[i] + h) - f64(kind, x[i] - h)) / (2 * h) * dy[i];
  test::expect_close(dx, expected, 1e-4, 1e-5);
  std::vector<float> alias = dy;
  kernels::activation_backward(kind, rows, cols, x.data(), y.data(), alias.data(), alias.data());
  test::expect_close(alias, dx, 0.0, 0.0);
  // The y-only form gives the same for kinds that do not need x, and NaN (loud) for the others.
  std::vector<float> from_y(x.size());
  kernels::activation_backward(kind, rows, cols, y.data(), dy.data(), from_y.data());
  if (kernels::activation_backward_needs_input(kind)) {
    for (float v : from_y) ASSERT_TRUE(std::isnan(v));
  } else {
    EXPECT_EQ(from_y, dx);
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, NewActivationTest, ::testing::ValuesIn(kNewKinds),
                         [](const auto& info) { return activation_name(info.param); });

// TensorFlow's gradients at the kinks (Relu6Grad, LeakyReluGrad, EluGrad, relu6 inside
// hard_sigmoid): open intervals, and 0.2 / 1 at zero.
TEST(NewActivationKernel, GradientsAtTheKinks) {
  auto grad = [](ActivationKind kind, float x) {
    float y = 0.0f, dx = 0.0f;
    const float one = 1.0f;
    kernels::activation_forward(kind, 1, 1, &x, &y);
    kernels::activation_backward(kind, 1, 1, &x, &y, &one, &dx);
    return dx;
  };
  EXPECT_EQ(grad(ActivationKind::relu6, 0.0f), 0.0f);
  EXPECT_EQ(grad(ActivationKind::relu6, 6.0f), 0.0f);
  EXPECT_EQ(grad(ActivationKind::relu6, 5.9999995f), 1.0f);
  EXPECT_EQ(grad(ActivationKind::leaky_relu, 0.0f), 0.2f);
  EXPECT_EQ(grad(ActivationKind::elu, 0.0f), 1.0f);
  EXPECT_EQ(grad(ActivationKind::hard_sigmoid, -3.0f), 0.0f);
  EXPECT_EQ(grad(ActivationKind::hard_sigmoid, 3.0f), 0.0f);
  EXPECT_EQ(grad(ActivationKind::hard_sigmoid, 2.9999995f), 1.0f / 6.0f);
  EXPECT_EQ(grad(ActivationKind::hard_sigmoid, 2.9999998f), 0.0f);  // x + 3 rounds to 6
  EXPECT_EQ(grad(ActivationKind::hard_sigmoid, -2.9999998f), 1.0f / 6.0f);
  EXPECT_EQ(grad(ActivationKind::hard_silu, 3.0f), 1.0f);   // hard_sigmoid(3) + 3 * 0
  EXPECT_EQ(grad(ActivationKind::hard_silu, -3.0f), 0.0f);  // 0 + (-3) * 0
  EXPECT_NEAR(grad(ActivationKind::gelu, 0.0f), 0.5f, 1e-7);
  EXPECT_NEAR(grad(ActivationKind::silu, 0.0f), 0.5f, 1e-7);
}

TEST(NewActivationKernel, KerasValues) {
  // Keras 3: hard_sigmoid(1.5) = 1.5 / 6 + 0.5 = 0.75 (Keras 2's 0.2 * x + 0.5 would give 0.8).
  auto f = [](ActivationKind kind, float x) {
    float y = 0.0f;
    kernels::activation_forward(kind, 1, 1, &x, &y);
    return y;
  };
  EXPECT_EQ(f(ActivationKind::hard_sigmoid, 1.5f), 0.75f);
  EXPECT_EQ(f(ActivationKind::hard_sigmoid, 4.0f), 1.0f);
  EXPECT_EQ(f(ActivationKind::hard_sigmoid, -4.0f), 0.0f);
  EXPECT_EQ(f(ActivationKind::leaky_relu, -1.0f), -0.2f);
  EXPECT_EQ(f(ActivationKind::relu6, 7.0f), 6.0f);
  EXPECT_EQ(f(ActivationKind::hard_silu, 4.0f), 4.0f);
  EXPECT_NEAR(f(ActivationKind::gelu, 1.0f), 0.8413447460685429, 1e-7);  // 1 * Phi(1)
  EXPECT_NEAR(f(ActivationKind::elu, -1.0f), std::exp(-1.0) - 1.0, 1e-7);
  EXPECT_TRUE(std::isnan(f(ActivationKind::gelu, std::nanf(""))));
}

TEST(NewActivationKernel, NamesAndKerasAliases) {
  for (ActivationKind k : kNewKinds) EXPECT_EQ(parse_activation(activation_name(k)), k);
  EXPECT_EQ(activation_name(ActivationKind::silu), "silu");
  EXPECT_EQ(activation_name(ActivationKind::hard_silu), "hard_silu");
  EXPECT_EQ(parse_activation("swish"), ActivationKind::silu);
  EXPECT_EQ(parse_activation("hard_swish"), ActivationKind::hard_silu);
  EXPECT_EQ(parse_activation("GELU"), ActivationKind::gelu);
  EXPECT_EQ(parse_activation("relu6"), ActivationKind::relu6);
  EXPECT_EQ(parse_activation("leaky_relu"), ActivationKind::leaky_relu);
  EXPECT_EQ(parse_activation("elu"), ActivationKind::elu);
  EXPECT_EQ(parse_activation("hard_sigmoid"), ActivationKind::hard_sigmoid);
  try {
    parse_activation("selu");
    FAIL() << "expected ValueError";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("hard_swish"), std::string::npos) << e.what();
  }
}

// --- ReLU(max_value, negative_slope, threshold) ------------------------------------------------

struct ReluCase {
  const char* name;
  kernels::ReluParams p;
};

double relu64(const kernels::ReluParams& p, double x) {
  if (x > p.threshold) return p.has_max_value ? std::min(x, double(p.max_value)) : x;
  return double(p.negative_slope) * (x - p.threshold);
}
// Kinks: threshold (and 0 when threshold is 0), max_value.
double relu_kink_distance(const kernels::ReluParams& p, double x) {
  double d = std::abs(x - p.threshold);
  if (p.has_max_value) d = std::min(d, std::abs(x - p.max_value));
  return d;
}

const ReluCase kReluCases[] = {
    {"plain", {false, 0.0f, 0.0f, 0.0f}},      {"leaky", {false, 0.0f, 0.3f, 0.0f}},
    {"max6", {true, 6.0f, 0.0f, 0.0f}},        {"max2_5", {true, 2.5f, 0.0f, 0.0f}},
    {"threshold", {false, 0.0f, 0.0f, 0.7f}},  {"all", {true, 2.0f, 0.1f, 0.5f}},
    {"max6_slope", {true, 6.0f, 0.25f, 0.0f}}, {"threshold_above_max", {true, 1.0f, 0.5f, 1.5f}},
};

class ReluKernelTest : public ::testing::TestWithParam<ReluCase> {};

TEST_P(ReluKernelTest, ForwardMatchesThePiecewiseFormula) {
  const auto& p = GetParam().p;
  Random rng(7);
  std::vector<float> x(200);
  for (float& v : x) v = 4.0f * rng.normal();
  x[0] = p.threshold;
  x[1] = p.max_value;
  x[2] = 0.0f;
  std::vector<float> y(x.size());
  kernels::relu_forward(p, static_cast<std::int64_t>(x.size()), x.data(), y.data());
  std::vector<double> expected(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) expected[i] = relu64(p, x[i]);
  test::expect_close(y, expected, 1e-6, 1e-7);
  // Keras's code keeps x only strictly above the threshold: at x == threshold, y = 0.
  EXPECT_EQ(y[0], 0.0f);
}

TEST_P(ReluKernelTest, BackwardMatchesFiniteDifferences) {
  const auto& p = GetParam().p;
  Random rng(9);
  std::vector<float> x(200), dy(200);
  for (float& v : x) {
    v = 4.0f * rng.normal();
    if (relu_kink_distance(p, v) < 0.01) v += 0.05f;
  }
  for (float& v : dy) v = rng.normal();
  std::vector<float> dx(x.size());
  kernels::relu_backward(p, static_cast<std::int64_t>(x.size()), x.data(), dy.data(), dx.data());
  std::vector<double> expected(x.size());
  const double h = 1e-4;
  for (std::size_t i = 0; i < x.size(); ++i)
    expected[i] = (relu64(p, x[i] + h) - relu64(p, x[i] - h)) / (2 * h) * dy[i];
  test::expect_close(dx, expected, 1e-4, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Params, ReluKernelTest, ::testing::ValuesIn(kReluCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ReluKernel, GradientsAtTheKinksFollowTensorFlow) {
  auto grad = [](const kernels::ReluParams& p, float x) {
    const float one = 1.0f;
    float dx = 0.0f;
    kernels::relu_backward(p, 1, &x, &one, &dx);
    return dx;
  };
  // relu6 (max_value 6, no threshold): Relu6Grad's open interval.
  EXPECT_EQ(grad({true, 6.0f, 0.0f, 0.0f}, 6.0f), 0.0f);
  // Other max_value: clip_by_value passes its closed interval.
  EXPECT_EQ(grad({true, 2.5f, 0.0f, 0.0f}, 2.5f), 1.0f);
  EXPECT_EQ(grad({true, 2.5f, 0.0f, 0.0f}, 0.0f), 0.0f);
  // Leaky path (tf.nn.leaky_relu): slope at 0; the general path: 0 at the threshold.
  EXPECT_EQ(grad({false, 0.0f, 0.3f, 0.0f}, 0.0f), 0.3f);
  EXPECT_EQ(grad({false, 0.0f, 0.3f, 0.5f}, 0.5f), 0.0f);
  EXPECT_EQ(grad({false, 0.0f, 0.3f, 0.5f}, 0.4f), 0.3f);
}

// --- Rescaling and Normalization -------------------------------------------------------------

TEST(RescaleKernel, ScalarAndPerChannelMatchFloat64) {
  const std::int64_t rows = 6, cols = 5;
  Random rng(11);
  const Tensor x = test::random_normal(Shape{rows, cols}, rng, 0.0f, 100.0f);
  const std::vector<float> scale{0.5f, -2.0f, 1.0f / 255.0f, 3.0f, 0.1f}, offset{-1.0f};
  std::vector<float> y(static_cast<std::size_t>(x.size())), dx(y.size());
  kernels::rescale_forward(rows, cols, scale.data(), true, offset.data(), false, x.data(),
                           y.data());
  std::vector<double> expected(y.size());
  for (std::int64_t i = 0; i < x.size(); ++i)
    expected[static_cast<std::size_t>(i)] = double(x[i]) * scale[i % cols] + offset[0];
  test::expect_close(y, expected, 1e-6, 1e-6);
  // Two float32 roundings (Mul, then Add), no fused multiply-add: exactly fl(fl(x * s) + o).
  for (std::int64_t i = 0; i < x.size(); ++i) {
    const float m = x[i] * scale[static_cast<std::size_t>(i % cols)];
    ASSERT_EQ(y[static_cast<std::size_t>(i)], m + offset[0]);
  }
  const std::vector<float> dy(y.size(), 2.0f);
  kernels::rescale_backward(rows, cols, scale.data(), true, dy.data(), dx.data());
  for (std::int64_t i = 0; i < x.size(); ++i)
    EXPECT_EQ(dx[static_cast<std::size_t>(i)], 2.0f * scale[static_cast<std::size_t>(i % cols)]);
  const float s1 = 0.25f, o1 = 3.0f;
  kernels::rescale_forward(rows, cols, &s1, false, &o1, false, x.data(), y.data());
  for (std::int64_t i = 0; i < x.size(); ++i)
    EXPECT_NEAR(y[static_cast<std::size_t>(i)], double(x[i]) * 0.25 + 3.0, 1e-4);
}

TEST(NormalizationKernel, ForwardInvertBackwardAndMomentsMatchFloat64) {
  const std::int64_t outer = 4, channels = 3, inner = 5;
  Random rng(13);
  const Tensor x = test::random_normal(Shape{outer, channels, inner}, rng, 10.0f, 3.0f);
  std::vector<float> mean(channels), variance(channels), denom(channels);
  kernels::normalization_moments(outer, channels, inner, x.data(), mean.data(), variance.data());
  for (std::int64_t c = 0; c < channels; ++c) {
    double s = 0, ss = 0;
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t i = 0; i < inner; ++i) s += x[(o * channels + c) * inner + i];
    const double m = s / (outer * inner);
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t i = 0; i < inner; ++i) {
        const double d = x[(o * channels + c) * inner + i] - m;
        ss += d * d;
      }
    EXPECT_NEAR(mean[static_cast<std::size_t>(c)], m, 1e-6 * std::abs(m));
    EXPECT_NEAR(variance[static_cast<std::size_t>(c)], ss / (outer * inner), 1e-6 * ss);
  }
  variance[1] = 0.0f;  // max(sqrt(0), 1e-7) = 1e-7
  kernels::normalization_denominator(channels, variance.data(), denom.data());
  EXPECT_EQ(denom[1], 1e-7f);
  EXPECT_EQ(denom[0], std::sqrt(variance[0]));
  std::vector<float> y(static_cast<std::size_t>(x.size())), back(y.size()), dx(y.size());
  kernels::normalization_forward(outer, channels, inner, mean.data(), denom.data(), false, x.data(),
                                 y.data());
  std::vector<double> expected(y.size());
  for (std::int64_t i = 0; i < x.size(); ++i) {
    const auto c = static_cast<std::size_t>((i / inner) % channels);
    const double d = std::max(std::sqrt(double(variance[c])), 1e-7);
    expected[static_cast<std::size_t>(i)] = (double(x[i]) - mean[c]) / d;
  }
  test::expect_close(y, expected, 1e-5, 1e-5);
  // invert undoes it (up to rounding).
  kernels::normalization_forward(outer, channels, inner, mean.data(), denom.data(), true, y.data(),
                                 back.data());
  test::expect_close(back, x.values(), 1e-5, 1e-5);
  const std::vector<float> dy(y.size(), 1.0f);
  kernels::normalization_backward(outer, channels, inner, denom.data(), false, dy.data(),
                                  dx.data());
  for (std::int64_t i = 0; i < x.size(); ++i)
    EXPECT_EQ(dx[static_cast<std::size_t>(i)],
              1.0f / denom[static_cast<std::size_t>((i / inner) % channels)]);
  kernels::normalization_backward(outer, channels, inner, denom.data(), true, dy.data(), dx.data());
  EXPECT_EQ(dx[0], denom[0]);
}

}  // namespace
}  // namespace bnorm
