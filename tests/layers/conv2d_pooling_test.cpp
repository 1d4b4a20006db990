// Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D: Keras defaults and weight
// layout, channels_first equal to channels_last on transposed data, the layer against the
// float64 reference kernel, and bad arguments / inputs reported with the layer, the argument
// and the received value. (Gradient checks for every configuration are in the layer contract.)
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/flatten.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/model/sequential.hpp"
#include "kernels/conv2d.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

using test::expect_error;
using test::to_channels_last;

TEST(Conv2D, KerasDefaultsAndWeightLayout) {
  Conv2D conv(32, 3);
  const auto& o = conv.options();
  EXPECT_EQ(conv.class_name(), "Conv2D");
  EXPECT_EQ(conv.name(), "conv2d");
  EXPECT_EQ(o.strides, (std::array<std::int64_t, 2>{1, 1}));
  EXPECT_EQ(o.padding, "valid");
  EXPECT_EQ(o.data_format, "channels_last");
  EXPECT_EQ(o.dilation_rate, (std::array<std::int64_t, 2>{1, 1}));
  EXPECT_EQ(conv.activation(), ActivationKind::linear);
  EXPECT_TRUE(o.use_bias);
  Random rng(4);
  conv.build(Shape{28, 28, 3}, rng);
  const auto w = conv.weights();
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[0]->name, "kernel");
  EXPECT_EQ(w[0]->value.shape(), (Shape{3, 3, 3, 32}));  // (kh, kw, in, filters)
  EXPECT_EQ(w[1]->name, "bias");
  EXPECT_EQ(w[1]->value.shape(), (Shape{32}));
  // glorot_uniform with fan_in = 3*3*3, fan_out = 3*3*32.
  const double limit = std::sqrt(6.0 / (27.0 + 288.0));
  double largest = 0.0;
  for (float v : w[0]->value.values()) largest = std::max(largest, std::abs(double(v)));
  EXPECT_LE(largest, limit);
  EXPECT_GT(largest, 0.95 * limit);
  for (float v : w[1]->value.values()) EXPECT_EQ(v, 0.0f);
  EXPECT_EQ(conv.output_shape(Shape{28, 28, 3}), (Shape{26, 26, 32}));
}

TEST(Conv2D, ForwardAndBackwardMatchTheFloat64Reference) {
  Conv2D::Options o;
  o.filters = 5;
  o.kernel_size = {3, 2};
  o.strides = {2, 1};
  o.padding = "same";
  o.bias_initializer = Initializer::random_uniform(-1.0f, 1.0f);
  Conv2D conv(o);
  Random rng(8);
  conv.build(Shape{7, 6, 3}, rng);
  const Tensor x = test::random_normal(Shape{4, 7, 6, 3}, rng);
  const Tensor y = test::forward_copy(conv, x, Mode::training);
  ASSERT_EQ(y.shape(), (Shape{4, 4, 6, 5}));
  kernels::Conv2dDims d;
  d.batch = 4;
  d.in_h = 7;
  d.in_w = 6;
  d.in_c = 3;
  d.kernel_h = 3;
  d.kernel_w = 2;
  d.filters = 5;
  d.stride_h = 2;
  d.out_h = 4;
  d.out_w = 6;
  d.pad_top = 1;   // total (4-1)*2 + 3 - 7 = 2
  d.pad_left = 0;  // total 1: the extra column goes right
  Tensor y_ref(y.shape());
  kernels::reference::conv2d_forward(d, x.data(), conv.weights()[0]->value.data(),
                                     conv.weights()[1]->value.data(), y_ref.data());
  test::expect_close(y, y_ref, 1e-5, 1e-5);

  const Tensor dy = test::random_normal(y.shape(), rng);
  const Tensor dx = conv.backward(dy);
  Tensor dx_ref(x.shape()), dk_ref(conv.weights()[0]->value.shape()), db_ref(Shape{5});
  kernels::reference::conv2d_backward(d, x.data(), dy.data(), conv.weights()[0]->value.data(),
                                      dx_ref.data(), dk_ref.data(), db_ref.data());
  test::expect_close(dx, dx_ref, 1e-5, 1e-5);
  test::expect_close(conv.weights()[0]->gradient, dk_ref, 1e-5, 1e-4);
  test::expect_close(conv.weights()[1]->gradient, db_ref, 1e-5, 1e-5);
}

TEST(Conv2D, ChannelsFirstEqualsChannelsLastOnTransposedData) {
  for (const char* padding : {"valid", "same"}) {
    Conv2D::Options o;
    o.filters = 4;
    o.kernel_size = {3, 3};
    o.padding = padding;
    o.activation = "relu";
    Conv2D last(o);
    o.data_format = "channels_first";
    Conv2D first(o);
    Random r1(3), r2(3);
    last.build(Shape{6, 5, 2}, r1);
    first.build(Shape{2, 6, 5}, r2);
    Random rng(12);
    const Tensor x_cf = test::random_normal(Shape{3, 2, 6, 5}, rng);
    const Tensor x_cl = to_channels_last(x_cf);
    const Tensor y_cf = test::forward_copy(first, x_cf, Mode::training);
    const Tensor y_cl = test::forward_copy(last, x_cl, Mode::training);
    EXPECT_TRUE(test::bitwise_equal(to_channels_last(y_cf), y_cl)) << padding;
    const Tensor dy_cf = test::random_normal(y_cf.shape(), rng);
    const Tensor dx_cf = first.backward(dy_cf);
    const Tensor dx_cl = last.backward(to_channels_last(dy_cf));
    EXPECT_TRUE(test::bitwise_equal(to_channels_last(dx_cf), dx_cl)) << padding;
    EXPECT_TRUE(test::bitwise_equal(first.weights()[0]->gradient, last.weights()[0]->gradient));
  }
}

// At inference the activation runs in the fast convolution's epilogue: the same output as in
// training, for every activation and both data formats (softmax on channels_first stays a
// separate pass over W); a backward after an inference forward still gets the gradients of a
// training forward.
TEST(Conv2D, InferenceEpilogueGivesTrainingBitsAndBackwardStillWorks) {
  for (const char* activation : {"relu", "gelu", "softmax", "linear"}) {
    for (const char* format : {"channels_last", "channels_first"}) {
      SCOPED_TRACE(std::string(activation) + " " + format);
      Conv2D::Options o;
      o.filters = 5;
      o.kernel_size = {3, 3};
      o.padding = "same";
      o.activation = activation;
      o.data_format = format;
      Conv2D a(o), b(o);
      const Shape in = std::string(format) == "channels_last" ? Shape{7, 6, 3} : Shape{3, 7, 6};
      Random r1(5), r2(5);
      a.build(in, r1);
      b.build(in, r2);
      Random rng(8);
      const Tensor x = test::random_normal(Shape{4, in[0], in[1], in[2]}, rng);
      const Tensor y_train = test::forward_copy(a, x, Mode::training);
      const Tensor y_infer = test::forward_copy(b, x, Mode::inference);
      EXPECT_TRUE(test::bitwise_equal(y_infer, y_train));
      const Tensor dy = test::random_normal(y_train.shape(), rng);
      const Tensor dx_a = a.backward(dy);
      const Tensor dx_b = b.backward(dy);
      EXPECT_TRUE(test::bitwise_equal(dx_b, dx_a));
      EXPECT_TRUE(test::bitwise_equal(b.weights()[0]->gradient, a.weights()[0]->gradient));
    }
  }
}

TEST(Pooling2D, KerasDefaults) {
  MaxPooling2D max;
  EXPECT_EQ(max.name(), "max_pooling2d");
  EXPECT_EQ(max.options().pool_size, (std::array<std::int64_t, 2>{2, 2}));
  EXPECT_FALSE(max.options().strides.has_value());
  EXPECT_EQ(max.strides(), (std::array<std::int64_t, 2>{2, 2}));  // strides=None: pool_size
  EXPECT_EQ(max.options().padding, "valid");
  EXPECT_EQ(max.options().data_format, "channels_last");
  EXPECT_EQ(max.output_shape(Shape{28, 28, 32}), (Shape{14, 14, 32}));
  EXPECT_EQ(max.output_shape(Shape{7, 7, 1}), (Shape{3, 3, 1}));  // valid drops the last row
  EXPECT_EQ(MaxPooling2D(3).strides(), (std::array<std::int64_t, 2>{3, 3}));
  AveragePooling2D avg;
  EXPECT_EQ(avg.name(), "average_pooling2d");
  EXPECT_EQ(avg.class_name(), "AveragePooling2D");
  GlobalAveragePooling2D gap;
  EXPECT_EQ(gap.name(), "global_average_pooling2d");
  EXPECT_FALSE(gap.options().keepdims);
  EXPECT_EQ(gap.output_shape(Shape{7, 7, 64}), (Shape{64}));
}

TEST(Pooling2D, ChannelsFirstEqualsChannelsLastOnTransposedData) {
  for (const char* padding : {"valid", "same"}) {
    Pooling2D::Options o;
    o.pool_size = {3, 2};
    o.strides = std::array<std::int64_t, 2>{2, 1};
    o.padding = padding;
    MaxPooling2D max_last(o);
    AveragePooling2D avg_last(o);
    o.data_format = "channels_first";
    MaxPooling2D max_first(o);
    AveragePooling2D avg_first(o);
    Random rng(1);
    for (Layer* l : {static_cast<Layer*>(&max_last), static_cast<Layer*>(&avg_last)})
      l->build(Shape{7, 5, 3}, rng);
    for (Layer* l : {static_cast<Layer*>(&max_first), static_cast<Layer*>(&avg_first)})
      l->build(Shape{3, 7, 5}, rng);
    const Tensor x_cf = test::random_normal(Shape{2, 3, 7, 5}, rng);
    const Tensor x_cl = to_channels_last(x_cf);
    for (auto [first, last] : {std::pair<Layer*, Layer*>{&max_first, &max_last},
                               std::pair<Layer*, Layer*>{&avg_first, &avg_last}}) {
      const Tensor y_cf = test::forward_copy(*first, x_cf, Mode::inference);
      const Tensor y_cl = test::forward_copy(*last, x_cl, Mode::inference);
      EXPECT_TRUE(test::bitwise_equal(to_channels_last(y_cf), y_cl)) << last->class_name();
      const Tensor dy = test::random_normal(y_cf.shape(), rng);
      const Tensor dx_cf = first->backward(dy);
      const Tensor dx_cl = last->backward(to_channels_last(dy));
      EXPECT_TRUE(test::bitwise_equal(to_channels_last(dx_cf), dx_cl)) << last->class_name();
    }
  }
}

TEST(GlobalAveragePooling2D, AveragesOverHeightAndWidth) {
  GlobalAveragePooling2D gap;
  Random rng(2);
  gap.build(Shape{2, 3, 2}, rng);
  const Tensor x(Shape{1, 2, 3, 2}, std::vector<float>{1, 10, 2, 20, 3, 30, 4, 40, 5, 50, 6, 60});
  const Tensor y = test::forward_copy(gap, x, Mode::inference);
  ASSERT_EQ(y.shape(), (Shape{1, 2}));
  EXPECT_FLOAT_EQ(y[0], 3.5f);
  EXPECT_FLOAT_EQ(y[1], 35.0f);
}

// --- bad arguments and inputs ------------------------------------------------------------------

TEST(Conv2DErrors, BadArgumentsNameTheArgumentAndValue) {
  auto make = [](auto edit) {
    return [edit] {
      Conv2D::Options o;
      o.filters = 8;
      o.kernel_size = {3, 3};
      edit(o);
      Conv2D c(o);
    };
  };
  expect_error<ValueError>(make([](Conv2D::Options& o) { o.filters = 0; }),
                           "Conv2D: filters must be >= 1; received 0");
  expect_error<ValueError>(make([](Conv2D::Options& o) {
                             o.kernel_size = {0, 3};
                           }),
                           "kernel_size must be >= 1; received 0x3");
  expect_error<ValueError>(make([](Conv2D::Options& o) {
                             o.strides = {1, 0};
                           }),
                           "strides must be >= 1; received 1x0");
  expect_error<ValueError>(make([](Conv2D::Options& o) {
                             o.dilation_rate = {0, 0};
                           }),
                           "dilation_rate must be >= 1; received 0x0");
  expect_error<ValueError>(make([](Conv2D::Options& o) {
                             o.strides = {2, 2};
                             o.dilation_rate = {2, 1};
                           }),
                           "strides > 1 is not supported together with dilation_rate > 1");
  expect_error<ValueError>(make([](Conv2D::Options& o) { o.padding = "full"; }),
                           "padding must be 'valid' or 'same'; received 'full'");
  expect_error<ValueError>(make([](Conv2D::Options& o) { o.data_format = "NHWC"; }),
                           "received 'NHWC'");
  expect_error<ValueError>(make([](Conv2D::Options& o) { o.activation = "swishy"; }), "swishy");
  // Keras lower-cases padding and data_format.
  Conv2D::Options o;
  o.filters = 1;
  o.kernel_size = {1, 1};
  o.padding = "SAME";
  o.data_format = "Channels_First";
  EXPECT_EQ(Conv2D(o).options().padding, "same");
  EXPECT_EQ(Conv2D(o).options().data_format, "channels_first");
}

TEST(Conv2DErrors, KernelLargerThanTheInputWithValidPadding) {
  Random rng(1);
  expect_error<ShapeError>(
      [&] {
        Conv2D c(4, 5);
        c.build(Shape{3, 3, 1}, rng);
      },
      "Conv2D 'conv2d': kernel_size 5x5 is larger than the input 3x3 with padding 'valid'");
  Conv2D::Options o;
  o.filters = 2;
  o.kernel_size = {3, 3};
  o.dilation_rate = {2, 2};
  expect_error<ShapeError>(
      [&] {
        Conv2D c(o);
        c.build(Shape{4, 9, 1}, rng);
      },
      "kernel_size 3x3 with dilation_rate 2x2 (a 5x5 window) is larger than the input 4x9");
  // 'same' pads instead.
  Conv2D same(4, 5, "same");
  same.build(Shape{3, 3, 1}, rng);
  EXPECT_EQ(same.output_shape(Shape{3, 3, 1}), (Shape{3, 3, 4}));
}

TEST(Conv2DErrors, WrongRankAndChannelMismatch) {
  Random rng(1);
  expect_error<ShapeError>(
      [&] {
        Conv2D c(4, 3);
        c.build(Shape{784}, rng);
      },
      "Conv2D 'conv2d': expected input of rank 4 (batch, height, width, channels); received "
      "shape (None, 784)");
  Conv2D c(4, 3);
  c.build(Shape{5, 5, 3}, rng);
  const Tensor wrong(Shape{2, 5, 5, 4});
  expect_error<ShapeError>([&] { c.forward(wrong, Mode::inference); }, "(None, 5, 5, 3)");
  // In a model, the message names the layer that cannot take the previous output.
  Sequential m(1);
  m.add(Input{Shape{784}});
  expect_error<ShapeError>([&] { m.add(Conv2D(8, 3)); }, "Conv2D 'conv2d'");
}

TEST(Pooling2DErrors, BadArgumentsAndInputs) {
  Pooling2D::Options o;
  o.pool_size = {0, 2};
  expect_error<ValueError>([&] { MaxPooling2D p(o); },
                           "MaxPooling2D: pool_size must be >= 1; received 0x2");
  o.pool_size = {2, 2};
  o.strides = std::array<std::int64_t, 2>{0, 1};
  expect_error<ValueError>([&] { AveragePooling2D p(o); },
                           "AveragePooling2D: strides must be >= 1; received 0x1");
  o.strides.reset();
  o.padding = "causal";
  expect_error<ValueError>([&] { MaxPooling2D p(o); }, "received 'causal'");
  Random rng(1);
  expect_error<ShapeError>(
      [&] {
        MaxPooling2D p(3);
        p.build(Shape{2, 2, 4}, rng);
      },
      "MaxPooling2D 'max_pooling2d': pool_size 3x3 is larger than the input 2x2 with padding "
      "'valid'");
  expect_error<ShapeError>(
      [&] {
        AveragePooling2D p;
        p.build(Shape{8, 8}, rng);
      },
      "AveragePooling2D 'average_pooling2d': expected input of rank 4");
  expect_error<ShapeError>(
      [&] {
        GlobalAveragePooling2D g;
        g.build(Shape{64}, rng);
      },
      "GlobalAveragePooling2D 'global_average_pooling2d': expected input of rank 4");
  GlobalAveragePooling2D::Options g;
  g.data_format = "channels_middle";
  expect_error<ValueError>([&] { GlobalAveragePooling2D l(g); }, "channels_middle");
}

// BatchNormalization after a convolution (4-D input, axis=-1 and axis=1 for channels_first)
// normalizes each channel over (batch, height, width), as the float64 reference does.
TEST(ConvBatchNorm, NormalizesEachChannelOverBatchHeightAndWidth) {
  for (bool channels_first : {false, true}) {
    Sequential m(5);
    m.add(Input{channels_first ? Shape{3, 6, 6} : Shape{6, 6, 3}});
    Conv2D::Options co;
    co.filters = 8;
    co.kernel_size = {3, 3};
    co.padding = "same";
    co.data_format = channels_first ? "channels_first" : "channels_last";
    m.add(Conv2D(co));
    BatchNormalization::Options bo;
    bo.axis = channels_first ? 1 : -1;
    m.add(BatchNormalization(bo));
    m.build();
    Random rng(9);
    const Tensor x = test::random_normal(test::with_batch(5, *m.input_shape()), rng, 2.0f, 3.0f);
    Layer& conv = m.layer(std::size_t{0});
    Layer& bn = m.layer(std::size_t{1});
    const Tensor& z = conv.forward(x, Mode::training);
    const Tensor y = test::forward_copy(bn, z, Mode::training);
    const auto v = test::bn_view(z.shape(), bo.axis);
    EXPECT_EQ(v.channels, 8);
    EXPECT_EQ(v.count(), 5 * 36);
    const auto mom = test::naive_bn_moments(v, z.values());
    test::expect_close(y.values(),
                       test::naive_bn_forward(v, z.values(), mom.mean, mom.variance, {}, {}, 1e-3),
                       1e-5, 1e-5);
  }
}

}  // namespace
}  // namespace bnorm
