// ZeroPadding2D, DepthwiseConv2D, SeparableConv2D, GlobalMaxPooling2D (and GlobalAveragePooling2D
// keepdims): Keras 3 defaults, weight names, shapes and initializer limits; the layers against
// the float64 reference kernels and against compositions of other layers (SeparableConv2D =
// DepthwiseConv2D without bias, then a 1x1 Conv2D; with depth_multiplier 1 it is one Conv2D with
// the product kernel); channels_first equal to channels_last on transposed data; first-maximum
// gradients; bad arguments named with their values. (Gradient checks by central differences for
// every configuration are in the layer contract.)
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <memory>
#include <string>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/depthwise_conv2d.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/layers/separable_conv2d.hpp"
#include "bnorm/layers/zero_padding2d.hpp"
#include "kernels/conv2d.hpp"
#include "kernels/depthwise_conv2d.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

using test::expect_error;
using test::to_channels_first;
using test::to_channels_last;

double max_abs(const Tensor& t) {
  double m = 0.0;
  for (float v : t.values()) m = std::max(m, std::abs(double(v)));
  return m;
}

void copy_weights(const Layer& from, Layer& to) {
  const auto a = from.weights();
  const auto b = to.weights();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) b[i]->value = a[i]->value;
}

// --- ZeroPadding2D ----------------------------------------------------------------------------

TEST(ZeroPadding2D, KerasPaddingForms) {
  const ZeroPadding2D by_default;
  EXPECT_EQ(by_default.class_name(), "ZeroPadding2D");
  EXPECT_EQ(by_default.name(), "zero_padding2d");
  EXPECT_EQ(by_default.options().padding, (ZeroPadding2D::Padding{{{1, 1}, {1, 1}}}));
  EXPECT_EQ(by_default.options().data_format, "channels_last");
  EXPECT_EQ(ZeroPadding2D(3).options().padding, (ZeroPadding2D::Padding{{{3, 3}, {3, 3}}}));
  EXPECT_EQ(ZeroPadding2D(1, 2).options().padding, (ZeroPadding2D::Padding{{{1, 1}, {2, 2}}}));
  ZeroPadding2D::Options o;
  o.padding = {{{0, 1}, {2, 3}}};
  const ZeroPadding2D asym(o);
  EXPECT_EQ(asym.output_shape(Shape{4, 5, 3}), (Shape{5, 10, 3}));
  EXPECT_EQ(ZeroPadding2D(0).output_shape(Shape{4, 5, 3}), (Shape{4, 5, 3}));
}

TEST(ZeroPadding2D, PadsWithZerosInBothDataFormats) {
  ZeroPadding2D::Options o;
  o.padding = {{{1, 0}, {0, 2}}};
  ZeroPadding2D last(o);
  o.data_format = "channels_first";
  ZeroPadding2D first(o);
  Random rng(3);
  last.build(Shape{3, 4, 2}, rng);
  first.build(Shape{2, 3, 4}, rng);
  const Tensor x = test::random_normal(Shape{2, 3, 4, 2}, rng);
  const Tensor y = test::forward_copy(last, x, Mode::training);
  ASSERT_EQ(y.shape(), (Shape{2, 4, 6, 2}));
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t h = 0; h < 4; ++h)
      for (std::int64_t w = 0; w < 6; ++w)
        for (std::int64_t c = 0; c < 2; ++c) {
          const bool inside = h >= 1 && w < 4;
          const float expected = inside ? x[((n * 3 + h - 1) * 4 + w) * 2 + c] : 0.0f;
          EXPECT_EQ(y[((n * 4 + h) * 6 + w) * 2 + c], expected);
        }
  const Tensor xf = to_channels_first(x);  // alive until backward (the layer contract)
  const Tensor yf = test::forward_copy(first, xf, Mode::training);
  EXPECT_TRUE(test::bitwise_equal(to_channels_last(yf), y));
  // The gradient is the crop of dy at the image's place.
  const Tensor dy = test::random_normal(y.shape(), rng);
  const Tensor dx = last.backward(dy);
  for (std::int64_t i = 0; i < 3; ++i)
    for (std::int64_t j = 0; j < 4; ++j)
      EXPECT_EQ(dx[(i * 4 + j) * 2 + 1], dy[((i + 1) * 6 + j) * 2 + 1]);
  const Tensor dxf = first.backward(to_channels_first(dy));
  EXPECT_TRUE(test::bitwise_equal(to_channels_last(dxf), dx));
}

TEST(ZeroPadding2D, RejectsNegativePaddingAndBadInputs) {
  expect_error<ValueError>([] { ZeroPadding2D(-1); },
                           "ZeroPadding2D: padding must be >= 0; received ((-1, -1), (-1, -1))");
  ZeroPadding2D::Options o;
  o.padding = {{{0, 1}, {-2, 0}}};
  expect_error<ValueError>([&] { ZeroPadding2D{o}; }, "received ((0, 1), (-2, 0))");
  o = {};
  o.data_format = "NHWC";
  expect_error<ValueError>([&] { ZeroPadding2D{o}; }, "data_format must be");
  ZeroPadding2D pad;
  Random rng(1);
  expect_error<ShapeError>([&] { pad.build(Shape{4, 4}, rng); }, "expected input of rank 4");
}

// --- DepthwiseConv2D --------------------------------------------------------------------------

TEST(DepthwiseConv2D, KerasDefaultsAndWeightLayout) {
  DepthwiseConv2D dw(3);
  const auto& o = dw.options();
  EXPECT_EQ(dw.class_name(), "DepthwiseConv2D");
  EXPECT_EQ(dw.name(), "depthwise_conv2d");
  EXPECT_EQ(o.strides, (std::array<std::int64_t, 2>{1, 1}));
  EXPECT_EQ(o.padding, "valid");
  EXPECT_EQ(o.depth_multiplier, 1);
  EXPECT_EQ(o.data_format, "channels_last");
  EXPECT_EQ(o.dilation_rate, (std::array<std::int64_t, 2>{1, 1}));
  EXPECT_EQ(dw.activation(), ActivationKind::linear);
  EXPECT_TRUE(o.use_bias);
  Random rng(4);
  dw.build(Shape{10, 10, 16}, rng);
  const auto w = dw.weights();
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[0]->name, "kernel");  // Keras 3's name (Keras 2: depthwise_kernel)
  EXPECT_EQ(w[0]->value.shape(), (Shape{3, 3, 16, 1}));
  EXPECT_EQ(w[1]->name, "bias");
  EXPECT_EQ(w[1]->value.shape(), (Shape{16}));
  // glorot_uniform with Keras's fans of a (3, 3, 16, 1) kernel: fan_in 3*3*16, fan_out 3*3*1.
  const double limit = std::sqrt(6.0 / (144.0 + 9.0));
  EXPECT_LE(max_abs(w[0]->value), limit);
  EXPECT_GT(max_abs(w[0]->value), 0.9 * limit);
  EXPECT_EQ(max_abs(w[1]->value), 0.0);
  EXPECT_EQ(dw.output_shape(Shape{10, 10, 16}), (Shape{8, 8, 16}));

  DepthwiseConv2D two(3, 2, "same", 2);
  EXPECT_EQ(two.options().strides, (std::array<std::int64_t, 2>{2, 2}));
  two.build(Shape{7, 7, 3}, rng);
  EXPECT_EQ(two.weights()[0]->value.shape(), (Shape{3, 3, 3, 2}));
  EXPECT_EQ(two.weights()[1]->value.shape(), (Shape{6}));
  EXPECT_EQ(two.output_shape(Shape{7, 7, 3}), (Shape{4, 4, 6}));
}

TEST(DepthwiseConv2D, ForwardAndBackwardMatchTheFloat64Reference) {
  DepthwiseConv2D::Options o;
  o.kernel_size = {3, 2};
  o.strides = {2, 1};
  o.padding = "same";
  o.depth_multiplier = 2;
  o.bias_initializer = Initializer::random_uniform(-1.0f, 1.0f);
  DepthwiseConv2D dw(o);
  Random rng(8);
  dw.build(Shape{7, 6, 3}, rng);
  const Tensor x = test::random_normal(Shape{4, 7, 6, 3}, rng);
  const Tensor y = test::forward_copy(dw, x, Mode::training);
  ASSERT_EQ(y.shape(), (Shape{4, 4, 6, 6}));
  kernels::DepthwiseConv2dDims d;
  d.batch = 4;
  d.in_h = 7;
  d.in_w = 6;
  d.in_c = 3;
  d.kernel_h = 3;
  d.kernel_w = 2;
  d.depth_multiplier = 2;
  d.stride_h = 2;
  d.out_h = 4;
  d.out_w = 6;
  d.pad_top = 1;   // TF 'same': total (4-1)*2 + 3 - 7 = 2, one before
  d.pad_left = 0;  // total 1: the extra column goes right
  const Tensor& kernel = dw.weights()[0]->value;
  const Tensor& bias = dw.weights()[1]->value;
  Tensor y_ref(y.shape());
  kernels::reference::depthwise_conv2d_forward(d, x.data(), kernel.data(), bias.data(),
                                               y_ref.data());
  test::expect_close(y, y_ref, 1e-5, 1e-5);

  const Tensor dy = test::random_normal(y.shape(), rng);
  const Tensor dx = dw.backward(dy);
  Tensor dx_ref(x.shape()), dk_ref(kernel.shape()), db_ref(bias.shape());
  kernels::reference::depthwise_conv2d_backward(d, x.data(), dy.data(), kernel.data(),
                                                dx_ref.data(), dk_ref.data(), db_ref.data());
  test::expect_close(dx, dx_ref, 1e-5, 1e-5);
  test::expect_close(dw.weights()[0]->gradient, dk_ref, 1e-5, 1e-5);
  test::expect_close(dw.weights()[1]->gradient, db_ref, 1e-5, 1e-5);
}

TEST(DepthwiseConv2D, ChannelsFirstEqualsChannelsLastOnTransposedData) {
  for (const char* padding : {"valid", "same"}) {
    DepthwiseConv2D::Options o;
    o.kernel_size = {3, 3};
    o.padding = padding;
    o.depth_multiplier = 2;
    o.activation = "relu";
    o.bias_initializer = Initializer::random_uniform(-0.5f, 0.5f);
    DepthwiseConv2D last(o);
    o.data_format = "channels_first";
    DepthwiseConv2D first(o);
    Random rng(9);
    last.build(Shape{6, 5, 3}, rng);
    first.build(Shape{3, 6, 5}, rng);
    copy_weights(last, first);
    const Tensor x = test::random_normal(Shape{2, 6, 5, 3}, rng);
    const Tensor y = test::forward_copy(last, x, Mode::training);
    const Tensor xf = to_channels_first(x);  // alive until backward (the layer contract)
    const Tensor yf = test::forward_copy(first, xf, Mode::training);
    EXPECT_TRUE(test::bitwise_equal(to_channels_last(yf), y)) << padding;
    const Tensor dy = test::random_normal(y.shape(), rng);
    const Tensor dx = last.backward(dy);
    const Tensor dxf = first.backward(to_channels_first(dy));
    EXPECT_TRUE(test::bitwise_equal(to_channels_last(dxf), dx)) << padding;
    for (std::size_t i = 0; i < 2; ++i)
      EXPECT_TRUE(test::bitwise_equal(first.weights()[i]->gradient, last.weights()[i]->gradient));
  }
}

TEST(DepthwiseConv2D, FrozenLayerLeavesGradientsAndStillGivesDx) {
  DepthwiseConv2D dw(3, 1, "same");
  Random rng(2);
  dw.build(Shape{4, 4, 2}, rng);
  dw.set_trainable(false);
  for (Variable* v : dw.weights()) v->gradient.fill(7.0f);
  const Tensor x = test::random_normal(Shape{2, 4, 4, 2}, rng);
  const Tensor y = test::forward_copy(dw, x, Mode::training);
  const Tensor dx = dw.backward(Tensor::full(y.shape(), 1.0f));
  EXPECT_GT(max_abs(dx), 0.0);
  for (Variable* v : dw.weights()) EXPECT_EQ(max_abs(v->gradient), 7.0);
}

TEST(DepthwiseConv2D, BadArgumentsNameTheArgumentAndValue) {
  auto make = [](auto edit) {
    DepthwiseConv2D::Options o;
    o.kernel_size = {3, 3};
    edit(o);
    DepthwiseConv2D dw(o);
  };
  using O = DepthwiseConv2D::Options;
  expect_error<ValueError>([&] { make([](O& o) { o.depth_multiplier = 0; }); },
                           "DepthwiseConv2D: depth_multiplier must be >= 1; received 0");
  expect_error<ValueError>([&] { make([](O& o) {
                                   o.kernel_size = {0, 3};
                                 }); },
                           "kernel_size must be >= 1; received 0x3");
  expect_error<ValueError>(
      [&] {
        make([](O& o) {
          o.strides = {2, 2};
          o.dilation_rate = {2, 2};
        });
      },
      "strides > 1 is not supported together with dilation_rate > 1");
  expect_error<ValueError>([&] { make([](O& o) { o.padding = "causal"; }); },
                           "padding must be 'valid' or 'same'; received 'causal'");
  expect_error<ValueError>([&] { make([](O& o) { o.activation = "swish9"; }); }, "swish9");
  DepthwiseConv2D dw(5);
  Random rng(1);
  expect_error<ShapeError>(
      [&] {
        dw.build(Shape{4, 6, 2}, rng);
      },
      "kernel_size 5x5 is larger than the input 4x6 with padding 'valid'");
}

// --- SeparableConv2D --------------------------------------------------------------------------

TEST(SeparableConv2D, KerasDefaultsAndWeightLayout) {
  SeparableConv2D sep(8, 3);
  const auto& o = sep.options();
  EXPECT_EQ(sep.class_name(), "SeparableConv2D");
  EXPECT_EQ(sep.name(), "separable_conv2d");
  EXPECT_EQ(o.strides, (std::array<std::int64_t, 2>{1, 1}));
  EXPECT_EQ(o.padding, "valid");
  EXPECT_EQ(o.depth_multiplier, 1);
  EXPECT_EQ(o.data_format, "channels_last");
  EXPECT_EQ(o.dilation_rate, (std::array<std::int64_t, 2>{1, 1}));
  EXPECT_TRUE(o.use_bias);
  SeparableConv2D::Options m = o;
  m.depth_multiplier = 2;
  SeparableConv2D two(m);
  Random rng(5);
  two.build(Shape{9, 9, 16}, rng);
  const auto w = two.weights();
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0]->name, "depthwise_kernel");
  EXPECT_EQ(w[0]->value.shape(), (Shape{3, 3, 16, 2}));
  EXPECT_EQ(w[1]->name, "pointwise_kernel");
  EXPECT_EQ(w[1]->value.shape(), (Shape{1, 1, 32, 8}));
  EXPECT_EQ(w[2]->name, "bias");
  EXPECT_EQ(w[2]->value.shape(), (Shape{8}));
  const double dw_limit = std::sqrt(6.0 / (3 * 3 * 16 + 3 * 3 * 2));
  EXPECT_LE(max_abs(w[0]->value), dw_limit);
  EXPECT_GT(max_abs(w[0]->value), 0.9 * dw_limit);
  const double pw_limit = std::sqrt(6.0 / (32 + 8));
  EXPECT_LE(max_abs(w[1]->value), pw_limit);
  EXPECT_GT(max_abs(w[1]->value), 0.8 * pw_limit);
  EXPECT_EQ(max_abs(w[2]->value), 0.0);
  EXPECT_EQ(two.output_shape(Shape{9, 9, 16}), (Shape{7, 7, 8}));
  EXPECT_EQ(two.count_params(), 3 * 3 * 16 * 2 + 32 * 8 + 8);
  expect_error<ValueError>([] { SeparableConv2D(0, 3); },
                           "SeparableConv2D: filters must be >= 1; received 0");
  SeparableConv2D::Options bad = o;
  bad.depth_multiplier = -1;
  expect_error<ValueError>([&] { SeparableConv2D{bad}; }, "depth_multiplier must be >= 1");
}

// DepthwiseConv2D (no bias) then a 1x1 Conv2D with the separable layer's pointwise kernel and
// bias: the same function, computed through Conv2D's im2col + GEMM path.
TEST(SeparableConv2D, EqualsDepthwiseThenPointwiseConv2D) {
  for (const char* activation : {"linear", "tanh"}) {
    SeparableConv2D::Options o;
    o.filters = 5;
    o.kernel_size = {3, 3};
    o.strides = {2, 2};
    o.padding = "same";
    o.depth_multiplier = 2;
    o.activation = activation;
    o.bias_initializer = Initializer::random_uniform(-0.5f, 0.5f);
    SeparableConv2D sep(o);
    DepthwiseConv2D::Options dwo;
    dwo.kernel_size = {3, 3};
    dwo.strides = {2, 2};
    dwo.padding = "same";
    dwo.depth_multiplier = 2;
    dwo.use_bias = false;
    DepthwiseConv2D dw(dwo);
    Conv2D::Options pwo;
    pwo.filters = 5;
    pwo.kernel_size = {1, 1};
    pwo.activation = activation;
    Conv2D pw(pwo);
    Random rng(12);
    sep.build(Shape{7, 6, 3}, rng);
    dw.build(Shape{7, 6, 3}, rng);
    pw.build(Shape{4, 3, 6}, rng);
    dw.weights()[0]->value = sep.weights()[0]->value;
    pw.weights()[0]->value = sep.weights()[1]->value;
    pw.weights()[1]->value = sep.weights()[2]->value;

    const Tensor x = test::random_normal(Shape{3, 7, 6, 3}, rng);
    const Tensor y = test::forward_copy(sep, x, Mode::training);
    const Tensor mid = test::forward_copy(dw, x, Mode::training);
    const Tensor y2 = test::forward_copy(pw, mid, Mode::training);
    test::expect_close(y, y2, 1e-5, 1e-6);

    const Tensor dy = test::random_normal(y.shape(), rng);
    const Tensor dx = sep.backward(dy);
    const Tensor dmid = pw.backward(dy);
    const Tensor dx2 = dw.backward(dmid);
    test::expect_close(dx, dx2, 1e-5, 1e-5);
    test::expect_close(sep.weights()[0]->gradient, dw.weights()[0]->gradient, 1e-5, 1e-5);
    test::expect_close(sep.weights()[1]->gradient, pw.weights()[0]->gradient, 1e-5, 1e-5);
    test::expect_close(sep.weights()[2]->gradient, pw.weights()[1]->gradient, 1e-5, 1e-5);
  }
}

// With depth_multiplier 1, a separable convolution is the Conv2D whose kernel is the product
// kernel[i, j, c, f] = depthwise[i, j, c, 0] * pointwise[0, 0, c, f].
TEST(SeparableConv2D, EqualsConv2DWithTheProductKernel) {
  SeparableConv2D::Options o;
  o.filters = 4;
  o.kernel_size = {3, 2};
  o.padding = "same";
  o.dilation_rate = {2, 1};
  o.bias_initializer = Initializer::random_uniform(-0.5f, 0.5f);
  SeparableConv2D sep(o);
  Conv2D::Options co;
  co.filters = 4;
  co.kernel_size = {3, 2};
  co.padding = "same";
  co.dilation_rate = {2, 1};
  Conv2D conv(co);
  Random rng(14);
  sep.build(Shape{6, 5, 3}, rng);
  conv.build(Shape{6, 5, 3}, rng);
  const Tensor& dk = sep.weights()[0]->value;
  const Tensor& pk = sep.weights()[1]->value;
  Tensor& kernel = conv.weights()[0]->value;
  for (std::int64_t t = 0; t < 6; ++t)
    for (std::int64_t c = 0; c < 3; ++c)
      for (std::int64_t f = 0; f < 4; ++f)
        kernel[(t * 3 + c) * 4 + f] =
            static_cast<float>(double(dk[t * 3 + c]) * double(pk[c * 4 + f]));
  conv.weights()[1]->value = sep.weights()[2]->value;
  const Tensor x = test::random_normal(Shape{2, 6, 5, 3}, rng);
  test::expect_close(test::forward_copy(sep, x, Mode::inference),
                     test::forward_copy(conv, x, Mode::inference), 1e-5, 1e-5);
}

TEST(SeparableConv2D, ChannelsFirstEqualsChannelsLastOnTransposedData) {
  SeparableConv2D::Options o;
  o.filters = 4;
  o.kernel_size = {3, 3};
  o.padding = "same";
  o.depth_multiplier = 2;
  o.activation = "sigmoid";
  o.bias_initializer = Initializer::random_uniform(-0.5f, 0.5f);
  SeparableConv2D last(o);
  o.data_format = "channels_first";
  SeparableConv2D first(o);
  Random rng(15);
  last.build(Shape{5, 6, 3}, rng);
  first.build(Shape{3, 5, 6}, rng);
  copy_weights(last, first);
  const Tensor x = test::random_normal(Shape{2, 5, 6, 3}, rng);
  const Tensor y = test::forward_copy(last, x, Mode::training);
  const Tensor xf = to_channels_first(x);  // alive until backward (the layer contract)
  const Tensor yf = test::forward_copy(first, xf, Mode::training);
  EXPECT_TRUE(test::bitwise_equal(to_channels_last(yf), y));
  const Tensor dy = test::random_normal(y.shape(), rng);
  const Tensor dx = last.backward(dy);
  const Tensor dxf = first.backward(to_channels_first(dy));
  EXPECT_TRUE(test::bitwise_equal(to_channels_last(dxf), dx));
  for (std::size_t i = 0; i < 3; ++i)
    EXPECT_TRUE(test::bitwise_equal(first.weights()[i]->gradient, last.weights()[i]->gradient));
}

// --- Global pooling ---------------------------------------------------------------------------

TEST(GlobalMaxPooling2D, MaximumOverHeightAndWidthInBothDataFormats) {
  GlobalMaxPooling2D last;
  EXPECT_EQ(last.class_name(), "GlobalMaxPooling2D");
  EXPECT_EQ(last.name(), "global_max_pooling2d");
  EXPECT_EQ(last.options().data_format, "channels_last");
  EXPECT_FALSE(last.options().keepdims);
  GlobalMaxPooling2D first({"channels_first", true});
  Random rng(6);
  last.build(Shape{3, 4, 5}, rng);
  first.build(Shape{5, 3, 4}, rng);
  EXPECT_EQ(first.output_shape(Shape{5, 3, 4}), (Shape{5, 1, 1}));
  const Tensor x = test::random_normal(Shape{2, 3, 4, 5}, rng);
  const Tensor y = test::forward_copy(last, x, Mode::inference);
  ASSERT_EQ(y.shape(), (Shape{2, 5}));
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t c = 0; c < 5; ++c) {
      float m = x[(n * 12) * 5 + c];
      for (std::int64_t s = 0; s < 12; ++s) m = std::max(m, x[(n * 12 + s) * 5 + c]);
      EXPECT_EQ(y[n * 5 + c], m);
    }
  const Tensor xf = to_channels_first(x);  // alive until backward (the layer contract)
  const Tensor yf = test::forward_copy(first, xf, Mode::inference);
  ASSERT_EQ(yf.shape(), (Shape{2, 5, 1, 1}));
  for (std::int64_t i = 0; i < 10; ++i) EXPECT_EQ(yf[i], y[i]);
  // dx is dy at each channel's maximum, zero elsewhere, in either layout.
  const Tensor dy = test::random_normal(y.shape(), rng);
  const Tensor dx = last.backward(dy);
  const Tensor dxf = first.backward(dy.reshaped(Shape{2, 5, 1, 1}));
  EXPECT_TRUE(test::bitwise_equal(to_channels_last(dxf), dx));
  for (std::int64_t i = 0; i < x.size(); ++i) {
    const std::int64_t n = i / 60, c = i % 5;
    EXPECT_EQ(dx[i], x[i] == y[n * 5 + c] ? dy[n * 5 + c] : 0.0f) << i;
  }
}

TEST(GlobalMaxPooling2D, TiedMaximaShareTheGradientAsTensorFlowsReduceMax) {
  GlobalMaxPooling2D pool;
  Random rng(1);
  pool.build(Shape{2, 2, 1}, rng);
  // Maximum 3 at (0, 1) and (1, 0): each takes half of the gradient (Keras's ops.max).
  const Tensor x(Shape{1, 2, 2, 1}, std::vector<float>{1.0f, 3.0f, 3.0f, -2.0f});
  const Tensor y = test::forward_copy(pool, x, Mode::training);
  EXPECT_EQ(y[0], 3.0f);
  const Tensor dx = pool.backward(Tensor::full(y.shape(), 2.0f));
  EXPECT_EQ(dx[0], 0.0f);
  EXPECT_EQ(dx[1], 1.0f);
  EXPECT_EQ(dx[2], 1.0f);
  EXPECT_EQ(dx[3], 0.0f);
}

TEST(GlobalAveragePooling2D, KeepdimsChannelsFirst) {
  GlobalAveragePooling2D pool({"channels_first", true});
  Random rng(2);
  pool.build(Shape{3, 2, 2}, rng);
  EXPECT_EQ(pool.output_shape(Shape{3, 2, 2}), (Shape{3, 1, 1}));
  const Tensor x(Shape{1, 3, 2, 2}, std::vector<float>{1, 2, 3, 4, 0, 0, 0, 8, -1, -1, -1, -1});
  const Tensor y = test::forward_copy(pool, x, Mode::inference);
  ASSERT_EQ(y.shape(), (Shape{1, 3, 1, 1}));
  EXPECT_EQ(y[0], 2.5f);
  EXPECT_EQ(y[1], 2.0f);
  EXPECT_EQ(y[2], -1.0f);
}

}  // namespace
}  // namespace bnorm
