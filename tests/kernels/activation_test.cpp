// Activation kernels: values against float64 formulas, backward against finite differences,
// softmax normalization and stability.
#include "kernels/activation.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/activation.hpp"
#include "kernels/gemm.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

double f64(ActivationKind kind, double x) {
  switch (kind) {
    case ActivationKind::linear:
      return x;
    case ActivationKind::relu:
      return x > 0 ? x : 0.0;
    case ActivationKind::sigmoid:
      return 1.0 / (1.0 + std::exp(-x));
    case ActivationKind::tanh:
      return std::tanh(x);
    default:
      return 0.0;
  }
}

}  // namespace
void PrintTo(ActivationKind k, std::ostream* os) { *os << activation_name(k); }
namespace {

class ElementwiseActivationTest : public ::testing::TestWithParam<ActivationKind> {};

TEST_P(ElementwiseActivationTest, ForwardMatchesFloat64) {
  const ActivationKind kind = GetParam();
  const std::int64_t rows = 9, cols = 13;
  Random rng(17);
  std::vector<float> x(rows * cols);
  for (float& v : x) v = 3.0f * rng.normal();
  x[0] = 0.0f;
  x[1] = -0.0f;
  x[2] = 30.0f;
  x[3] = -30.0f;
  std::vector<float> y(x.size(), std::nanf(""));
  kernels::activation_forward(kind, rows, cols, x.data(), y.data());
  std::vector<double> expected(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) expected[i] = f64(kind, x[i]);
  test::expect_close(y, expected, 2e-6, 1e-7);
  // In place (x and y alias).
  std::vector<float> inplace = x;
  kernels::activation_forward(kind, rows, cols, inplace.data(), inplace.data());
  test::expect_close(inplace, y, 0.0, 0.0);
}

TEST_P(ElementwiseActivationTest, BackwardMatchesFiniteDifferences) {
  const ActivationKind kind = GetParam();
  const std::int64_t rows = 4, cols = 25;
  Random rng(23);
  std::vector<float> x(rows * cols), dy(x.size());
  for (float& v : x) {
    v = 2.0f * rng.normal();
    if (kind == ActivationKind::relu && std::abs(v) < 0.05f) v = 0.5f;  // stay off the kink
  }
  for (float& v : dy) v = rng.normal();
  std::vector<float> y(x.size()), dx(x.size(), std::nanf(""));
  kernels::activation_forward(kind, rows, cols, x.data(), y.data());
  kernels::activation_backward(kind, rows, cols, y.data(), dy.data(), dx.data());
  std::vector<double> expected(x.size());
  const double h = 1e-3;
  for (std::size_t i = 0; i < x.size(); ++i) {
    // Central difference of the float64 function, times dy.
    expected[i] = (f64(kind, x[i] + h) - f64(kind, x[i] - h)) / (2 * h) * dy[i];
  }
  test::expect_close(dx, expected, 1e-4, 1e-5);
  // dy and dx may alias.
  std::vector<float> alias = dy;
  kernels::activation_backward(kind, rows, cols, y.data(), alias.data(), alias.data());
  test::expect_close(alias, dx, 0.0, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Kinds, ElementwiseActivationTest,
                         ::testing::Values(ActivationKind::linear, ActivationKind::relu,
                                           ActivationKind::sigmoid, ActivationKind::tanh),
                         [](const auto& info) { return activation_name(info.param); });

TEST(ActivationKernel, ReluBackwardIsZeroAtAndBelowZero) {
  const std::vector<float> x{-2.0f, -0.0f, 0.0f, 1e-30f, 3.0f};
  std::vector<float> y(5), dx(5);
  const std::vector<float> dy(5, 1.0f);
  kernels::activation_forward(ActivationKind::relu, 1, 5, x.data(), y.data());
  kernels::activation_backward(ActivationKind::relu, 1, 5, y.data(), dy.data(), dx.data());
  EXPECT_EQ(dx, (std::vector<float>{0.0f, 0.0f, 0.0f, 1.0f, 1.0f}));
  EXPECT_EQ(y[0], 0.0f);
}

TEST(ActivationKernel, SigmoidAndTanhSaturateWithoutNaN) {
  const std::vector<float> x{-1e4f, -100.0f, 100.0f, 1e4f};
  std::vector<float> s(4), t(4);
  kernels::activation_forward(ActivationKind::sigmoid, 1, 4, x.data(), s.data());
  kernels::activation_forward(ActivationKind::tanh, 1, 4, x.data(), t.data());
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(std::isfinite(s[static_cast<std::size_t>(i)]));
    EXPECT_TRUE(std::isfinite(t[static_cast<std::size_t>(i)]));
  }
  EXPECT_NEAR(s[0], 0.0f, 1e-30);
  EXPECT_EQ(s[3], 1.0f);
  EXPECT_EQ(t[0], -1.0f);
  EXPECT_EQ(t[3], 1.0f);
}

TEST(ActivationKernel, SoftmaxMatchesFloat64AndRowsSumToOne) {
  const std::int64_t rows = 8, cols = 10;
  Random rng(31);
  std::vector<float> z(rows * cols);
  for (float& v : z) v = 4.0f * rng.normal();
  std::vector<float> p(z.size());
  kernels::activation_forward(ActivationKind::softmax, rows, cols, z.data(), p.data());
  test::expect_close(p, test::softmax64(z, rows, cols), 1e-5, 1e-7);
  for (std::int64_t r = 0; r < rows; ++r) {
    double s = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) s += p[static_cast<std::size_t>(r * cols + c)];
    EXPECT_NEAR(s, 1.0, 1e-6) << "row " << r;
  }
  // Softmax is over rows of `cols`: one row of 80 differs from 8 rows of 10.
  std::vector<float> whole(z.size());
  kernels::activation_forward(ActivationKind::softmax, 1, rows * cols, z.data(), whole.data());
  test::expect_close(whole, test::softmax64(z, 1, rows * cols), 1e-5, 1e-8);
}

TEST(ActivationKernel, SoftmaxIsStableForHugeLogits) {
  const std::vector<float> z{1e4f,  -1e4f, 0.0f,  1e4f - 1.0f,  // row 0
                             -1e4f, -1e4f, -1e4f, -1e4f};       // row 1: all equal
  std::vector<float> p(z.size());
  kernels::activation_forward(ActivationKind::softmax, 2, 4, z.data(), p.data());
  for (float v : p) ASSERT_TRUE(std::isfinite(v));
  const double e = std::exp(-1.0);
  EXPECT_NEAR(p[0], 1.0 / (1.0 + e), 1e-6);
  EXPECT_EQ(p[1], 0.0f);
  EXPECT_EQ(p[2], 0.0f);
  EXPECT_NEAR(p[3], e / (1.0 + e), 1e-6);
  for (int c = 4; c < 8; ++c) EXPECT_NEAR(p[static_cast<std::size_t>(c)], 0.25, 1e-7);
}

TEST(ActivationKernel, SoftmaxBackwardMatchesFiniteDifferences) {
  // L = sum(softmax(z) * r); dL/dz from the backward kernel vs central differences in float64.
  const std::int64_t rows = 3, cols = 6;
  Random rng(41);
  std::vector<float> z(rows * cols), r(z.size());
  for (float& v : z) v = 2.0f * rng.normal();
  for (float& v : r) v = rng.normal();
  std::vector<float> p(z.size()), dz(z.size());
  kernels::activation_forward(ActivationKind::softmax, rows, cols, z.data(), p.data());
  kernels::activation_backward(ActivationKind::softmax, rows, cols, p.data(), r.data(), dz.data());
  std::vector<double> expected(z.size());
  const double h = 1e-4;
  for (std::size_t i = 0; i < z.size(); ++i) {
    auto loss = [&](double delta) {
      std::vector<float> zz = z;
      // Evaluate in float64 to keep the difference quotient clean.
      std::vector<double> zd(zz.begin(), zz.end());
      zd[i] += delta;
      double total = 0.0;
      for (std::int64_t row = 0; row < rows; ++row) {
        double mx = -INFINITY, s = 0.0;
        for (std::int64_t c = 0; c < cols; ++c) mx = std::max(mx, zd[row * cols + c]);
        for (std::int64_t c = 0; c < cols; ++c) s += std::exp(zd[row * cols + c] - mx);
        for (std::int64_t c = 0; c < cols; ++c)
          total +=
              std::exp(zd[row * cols + c] - mx) / s * r[static_cast<std::size_t>(row * cols + c)];
      }
      return total;
    };
    expected[i] = (loss(h) - loss(-h)) / (2 * h);
  }
  test::expect_close(dz, expected, 1e-4, 1e-6);
}

// The Dense epilogue is "add the bias, then the activation" in one pass: same bits as the two
// passes, in place or into another buffer (which then keeps z + bias), with or without a bias.
TEST(ActivationKernel, BiasActivationEqualsBiasAddThenActivation) {
  const std::int64_t rows = 5, cols = 12;
  Random rng(53);
  std::vector<float> z(rows * cols), bias(cols);
  for (float& v : z) v = 3.0f * rng.normal();
  for (float& v : bias) v = rng.normal();
  for (ActivationKind kind : {ActivationKind::linear, ActivationKind::relu, ActivationKind::sigmoid,
                              ActivationKind::tanh, ActivationKind::softmax}) {
    SCOPED_TRACE(activation_name(kind));
    std::vector<float> zb = z;
    kernels::add_row_bias(rows, cols, bias.data(), zb.data());
    std::vector<float> expected(z.size()), expected_nobias(z.size());
    kernels::activation_forward(kind, rows, cols, zb.data(), expected.data());
    kernels::activation_forward(kind, rows, cols, z.data(), expected_nobias.data());

    std::vector<float> zz = z, y(z.size(), std::nanf(""));
    kernels::bias_activation_forward(kind, rows, cols, bias.data(), zz.data(), y.data());
    EXPECT_EQ(y, expected);
    EXPECT_EQ(zz, zb) << "z keeps z + bias when y is another buffer";

    std::vector<float> inplace = z;
    kernels::bias_activation_forward(kind, rows, cols, bias.data(), inplace.data(), inplace.data());
    EXPECT_EQ(inplace, expected);

    std::vector<float> nobias = z;
    kernels::bias_activation_forward(kind, rows, cols, nullptr, nobias.data(), nobias.data());
    EXPECT_EQ(nobias, expected_nobias);
  }
}

TEST(ActivationKernel, ParseAndNameRoundTrip) {
  for (ActivationKind k : {ActivationKind::linear, ActivationKind::relu, ActivationKind::sigmoid,
                           ActivationKind::tanh, ActivationKind::softmax}) {
    EXPECT_EQ(parse_activation(activation_name(k)), k);
  }
  EXPECT_EQ(activation_name(ActivationKind::relu), "relu");
  EXPECT_EQ(activation_name(ActivationKind::softmax), "softmax");
  try {
    parse_activation("gelu_fancy");
    FAIL() << "expected ValueError";
  } catch (const ValueError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("gelu_fancy"), std::string::npos) << msg;
    EXPECT_NE(msg.find("relu"), std::string::npos) << "should list the valid names: " << msg;
  }
}

}  // namespace
}  // namespace bnorm
