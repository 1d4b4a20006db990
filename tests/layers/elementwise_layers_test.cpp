// ReLU, Reshape, Rescaling, Normalization, Identity, Dropout's noise_shape and seed, and
// BatchNormalization's one-element axis list: Keras 3 arguments, defaults, weights and errors.
#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/dropout.hpp"
#include "bnorm/layers/elementwise.hpp"
#include "bnorm/layers/normalization.hpp"
#include "bnorm/layers/reshape.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ReLULayer, KerasDefaultsNamesAndValidation) {
  ReLU r;
  EXPECT_EQ(r.class_name(), "ReLU");
  EXPECT_EQ(r.name(), "re_lu");  // Keras's snake case of "ReLU"
  EXPECT_FALSE(r.options().max_value.has_value());
  EXPECT_EQ(r.options().negative_slope, 0.0f);
  EXPECT_EQ(r.options().threshold, 0.0f);
  EXPECT_THROW(ReLU(ReLU::Options{-1.0f, 0.0f, 0.0f}), ValueError);
  EXPECT_THROW(ReLU(ReLU::Options{std::nullopt, -0.1f, 0.0f}), ValueError);
  EXPECT_THROW(ReLU(ReLU::Options{std::nullopt, 0.0f, -0.5f}), ValueError);
  EXPECT_THROW(ReLU(ReLU::Options{std::nullopt, std::nanf(""), 0.0f}), ValueError);
  const std::string msg = error_of([] { ReLU(ReLU::Options{-2.0f, 0.0f, 0.0f}); });
  EXPECT_NE(msg.find("max_value"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

TEST(ReLULayer, PiecewiseValuesAndGradient) {
  ReLU r(ReLU::Options{2.0f, 0.5f, 1.0f});
  Random rng(1);
  r.build(Shape{6}, rng);
  const Tensor x(Shape{1, 6}, std::vector<float>{-1.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f});
  const Tensor& y = r.forward(x, Mode::training);
  // x <= threshold: 0.5 * (x - 1); threshold < x: min(x, 2).
  EXPECT_EQ(test::to_vector(y), (std::vector<float>{-1.0f, -0.25f, 0.0f, 1.5f, 2.0f, 2.0f}));
  const Tensor dy = Tensor::full(Shape{1, 6}, 1.0f);
  // At x == max_value clip_by_value passes (1); above it 0; at the threshold 0.
  EXPECT_EQ(test::to_vector(r.backward(dy)),
            (std::vector<float>{0.5f, 0.5f, 0.0f, 1.0f, 1.0f, 0.0f}));
}

TEST(ReshapeLayer, ShapesInferenceAndErrors) {
  Reshape r({-1, 4});
  EXPECT_EQ(r.class_name(), "Reshape");
  EXPECT_EQ(r.output_shape(Shape{2, 3, 4}), (Shape{6, 4}));
  EXPECT_EQ(Reshape({3, 8}).output_shape(Shape{24}), (Shape{3, 8}));
  EXPECT_THROW(Reshape({-1, -1}), ValueError);
  EXPECT_THROW(Reshape({2, -3}), ValueError);
  EXPECT_THROW(Reshape(std::vector<std::int64_t>{}), ValueError);
  const std::string msg = error_of([] { Reshape({5, -1}).output_shape(Shape{12}); });
  EXPECT_NE(msg.find("(12,)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(5, -1)"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_THROW(Reshape({5, 3}).output_shape(Shape{12}), ShapeError);
  Random rng(2);
  Reshape bad({7});
  EXPECT_THROW(bad.build(Shape{3, 2}, rng), ShapeError);

  r.build(Shape{2, 3, 4}, rng);
  const Tensor x = test::random_normal(Shape{2, 2, 3, 4}, rng);
  const Tensor y = r.forward(x, Mode::inference);
  EXPECT_EQ(y.shape(), (Shape{2, 6, 4}));
  EXPECT_EQ(test::to_vector(y), test::to_vector(x));
  const Tensor dy = test::random_normal(y.shape(), rng);
  const Tensor dx = r.backward(dy);
  EXPECT_EQ(dx.shape(), x.shape());
  EXPECT_EQ(test::to_vector(dx), test::to_vector(dy));
}

TEST(RescalingLayer, ScalarPerChannelAndErrors) {
  Rescaling s(1.0f / 127.5f, -1.0f);  // the usual [0, 255] -> [-1, 1]
  EXPECT_EQ(s.class_name(), "Rescaling");
  EXPECT_EQ(s.name(), "rescaling");
  Random rng(3);
  s.build(Shape{2, 2, 3}, rng);
  const Tensor x = Tensor::full(Shape{1, 2, 2, 3}, 255.0f);
  for (float v : s.forward(x, Mode::inference).values()) EXPECT_NEAR(v, 1.0f, 1e-6f);
  EXPECT_EQ(s.count_params(), 0);
  Rescaling per(Rescaling::Options{.scale = {1.0f, 2.0f, 3.0f}, .offset = {0.0f}});
  per.build(Shape{2, 3}, rng);
  const Tensor ones = Tensor::full(Shape{1, 2, 3}, 1.0f);
  EXPECT_EQ(test::to_vector(per.forward(ones, Mode::inference)),
            (std::vector<float>{1, 2, 3, 1, 2, 3}));
  EXPECT_EQ(test::to_vector(per.backward(ones)), (std::vector<float>{1, 2, 3, 1, 2, 3}));
  Rescaling wrong(Rescaling::Options{.scale = {1.0f, 2.0f}, .offset = {0.0f}});
  EXPECT_THROW(wrong.build(Shape{2, 3}, rng), ShapeError);
  EXPECT_THROW(Rescaling(Rescaling::Options{.scale = {}, .offset = {0.0f}}), ValueError);
  EXPECT_THROW(Rescaling(std::nanf("")), ValueError);
}

TEST(NormalizationLayer, AdaptModeWeightsKerasOrderAndValues) {
  Normalization n;
  EXPECT_EQ(n.class_name(), "Normalization");
  EXPECT_EQ(n.name(), "normalization");
  Random rng(4);
  const Tensor data = test::random_normal(Shape{200, 3}, rng, 5.0f, 2.0f);
  n.adapt(data);  // builds for (3,)
  ASSERT_TRUE(n.built());
  const auto w = n.weights();
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0]->name, "mean");
  EXPECT_EQ(w[1]->name, "variance");
  EXPECT_EQ(w[2]->name, "count");
  for (const Variable* v : w) EXPECT_FALSE(v->trainable);
  EXPECT_EQ(w[0]->value.shape(), (Shape{3}));
  EXPECT_EQ(w[2]->value[0], 0.0f);  // Keras 3's adapt leaves count alone
  EXPECT_EQ(n.count_trainable_params(), 0);
  // Normalized data: mean 0, biased variance 1 per channel.
  const Tensor y = n.forward(data, Mode::inference);
  for (std::int64_t c = 0; c < 3; ++c) {
    double s = 0, ss = 0;
    for (std::int64_t i = 0; i < 200; ++i) s += y[i * 3 + c];
    for (std::int64_t i = 0; i < 200; ++i)
      ss += (y[i * 3 + c] - s / 200) * (y[i * 3 + c] - s / 200);
    EXPECT_NEAR(s / 200, 0.0, 1e-5);
    EXPECT_NEAR(ss / 200, 1.0, 1e-5);
  }
  // Exactly (x - mean) / max(sqrt(variance), 1e-7) in float32.
  for (std::int64_t i = 0; i < data.size(); ++i) {
    const float d = std::max(std::sqrt(w[1]->value[i % 3]), 1e-7f);
    ASSERT_EQ(y[i], (data[i] - w[0]->value[i % 3]) / d);
  }
  // Adapting again with other data replaces the statistics; mismatched kept dims are refused.
  n.adapt(Tensor::full(Shape{4, 3}, 2.0f));
  EXPECT_EQ(w[0]->value[0], 2.0f);
  EXPECT_EQ(w[1]->value[0], 0.0f);
  const Tensor twos = Tensor::full(Shape{1, 3}, 2.0f);
  EXPECT_EQ(n.forward(twos, Mode::inference)[0], 0.0f);
  EXPECT_THROW(n.adapt(Tensor(Shape{4, 5})), ShapeError);
}

TEST(NormalizationLayer, AxesFixedStatisticsInvertAndErrors) {
  Random rng(5);
  Normalization::Options o;
  o.axis = {1, 2};
  Normalization hw(o);
  const Tensor data = test::random_normal(Shape{10, 2, 3, 4}, rng, 1.0f, 3.0f);
  hw.adapt(data);
  EXPECT_EQ(hw.weights()[0]->value.shape(), (Shape{2, 3}));
  Normalization none(
      Normalization::Options{.axis = {}, .mean = {}, .variance = {}, .invert = false});
  none.adapt(data);
  EXPECT_EQ(none.weights()[0]->value.shape(), (Shape{1}));

  Normalization fixed(
      Normalization::Options{.axis = {-1}, .mean = {3.0f}, .variance = {2.0f}, .invert = false});
  EXPECT_TRUE(fixed.fixed_statistics());
  fixed.build(Shape{1}, rng);
  EXPECT_EQ(fixed.count_params(), 0);  // Keras: constants, no weights
  const Tensor x(Shape{3, 1}, std::vector<float>{1.0f, 2.0f, 3.0f});
  const Tensor y = fixed.forward(x, Mode::inference);
  EXPECT_NEAR(y[0], -1.41421354f, 1e-6);  // Keras docs example: [[-1.4142], [-0.7071], [0.]]
  EXPECT_NEAR(y[1], -0.70710677f, 1e-6);
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_THROW(fixed.adapt(x), ValueError);
  Normalization inverse(
      Normalization::Options{.axis = {-1}, .mean = {3.0f}, .variance = {2.0f}, .invert = true});
  inverse.build(Shape{1}, rng);
  const Tensor back = inverse.forward(y, Mode::inference);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(back[i], x[i], 1e-6);

  EXPECT_THROW(Normalization(Normalization::Options{
                   .axis = {-1}, .mean = {1.0f}, .variance = {}, .invert = false}),
               ValueError);
  EXPECT_THROW(Normalization(Normalization::Options{
                   .axis = {-1}, .mean = {1.0f}, .variance = {-1.0f}, .invert = false}),
               ValueError);
  Normalization batch_axis(
      Normalization::Options{.axis = {0}, .mean = {}, .variance = {}, .invert = false});
  EXPECT_THROW(batch_axis.build(Shape{3}, rng), ValueError);
  Normalization apart(
      Normalization::Options{.axis = {1, 3}, .mean = {}, .variance = {}, .invert = false});
  EXPECT_THROW(apart.build(Shape{2, 3, 4}, rng), ValueError);
  Normalization three(Normalization::Options{
      .axis = {-1}, .mean = {1.0f, 2.0f}, .variance = {1.0f, 1.0f}, .invert = false});
  EXPECT_THROW(three.build(Shape{3}, rng), ShapeError);
}

TEST(IdentityLayer, CopiesBothWays) {
  Identity id;
  EXPECT_EQ(id.class_name(), "Identity");
  Random rng(6);
  id.build(Shape{4}, rng);
  const Tensor x = test::random_normal(Shape{3, 4}, rng);
  EXPECT_TRUE(test::bitwise_equal(id.forward(x, Mode::training), x));
  EXPECT_TRUE(test::bitwise_equal(id.backward(x), x));
  EXPECT_NE(id.clone(), nullptr);
}

// The mask without noise_shape is the pre-existing per-value draw: a noise_shape of all None
// (or the full sizes) gives the same bits; the seeded layer is independent of the model seed.
TEST(DropoutNoiseShape, WithoutNoiseShapeTheBitsAreUnchanged) {
  const Tensor x = Tensor::full(Shape{4, 3, 5}, 1.5f);
  Dropout plain(0.4f);
  Dropout::Options o;
  o.rate = 0.4f;
  o.noise_shape = {std::nullopt, std::nullopt, 5};
  Dropout full(o);
  Random r1(9), r2(9);
  plain.build(Shape{3, 5}, r1);
  full.build(Shape{3, 5}, r2);
  for (int step = 0; step < 3; ++step)
    EXPECT_TRUE(
        test::bitwise_equal(plain.forward(x, Mode::training), full.forward(x, Mode::training)));
}

TEST(DropoutNoiseShape, SharedAlongAxesOfOneAndValidated) {
  Dropout::Options o;
  o.rate = 0.5f;
  o.noise_shape = {std::nullopt, 1, 1, std::nullopt};  // SpatialDropout2D: whole channels
  Dropout d(o);
  Random rng(10);
  d.build(Shape{3, 4, 6}, rng);
  const Tensor x = Tensor::full(Shape{5, 3, 4, 6}, 1.0f);
  const Tensor y = d.forward(x, Mode::training);
  std::int64_t dropped = 0;
  for (std::int64_t n = 0; n < 5; ++n)
    for (std::int64_t c = 0; c < 6; ++c) {
      const float first = y[((n * 3) * 4) * 6 + c];
      EXPECT_TRUE(first == 0.0f || first == 2.0f);
      dropped += first == 0.0f;
      for (std::int64_t h = 0; h < 3; ++h)
        for (std::int64_t w = 0; w < 4; ++w) ASSERT_EQ(y[((n * 3 + h) * 4 + w) * 6 + c], first);
    }
  EXPECT_GT(dropped, 0);
  EXPECT_LT(dropped, 30);
  const Tensor dx = d.backward(Tensor::full(y.shape(), 1.0f));
  EXPECT_TRUE(test::bitwise_equal(dx, y));  // x is all ones: dx = mask = y

  // One mask for the whole batch: noise_shape batch entry 1.
  Dropout::Options b = o;
  b.noise_shape = {1, std::nullopt, std::nullopt, std::nullopt};
  Dropout shared(b);
  shared.build(Shape{3, 4, 6}, rng);
  const Tensor ys = shared.forward(x, Mode::training);
  for (std::int64_t i = 0; i < 72; ++i)
    for (std::int64_t n = 1; n < 5; ++n) ASSERT_EQ(ys[n * 72 + i], ys[i]);

  Dropout::Options bad = o;
  bad.noise_shape = {std::nullopt, 2, 1, std::nullopt};
  Dropout wrong(bad);
  EXPECT_THROW(wrong.build(Shape{3, 4, 6}, rng), ShapeError);
  bad.noise_shape = {std::nullopt, 1};
  Dropout rank(bad);
  EXPECT_THROW(rank.build(Shape{3, 4, 6}, rng), ShapeError);
  bad.noise_shape = {std::nullopt, 0};
  EXPECT_THROW(Dropout{bad}, ValueError);
}

TEST(DropoutNoiseShape, SeedFixesTheStream) {
  Dropout::Options o;
  o.rate = 0.5f;
  o.seed = 1234;
  Dropout a(o), b(o);
  Random ra(1), rb(2);  // different model generators
  a.build(Shape{64}, ra);
  b.build(Shape{64}, rb);
  const Tensor x = Tensor::full(Shape{2, 64}, 1.0f);
  EXPECT_TRUE(test::bitwise_equal(a.forward(x, Mode::training), b.forward(x, Mode::training)));
  // The model's generator advances as for an unseeded Dropout.
  Random rc(1), rd(1);
  Dropout unseeded(0.5f);
  Dropout seeded(o);
  unseeded.build(Shape{64}, rc);
  seeded.build(Shape{64}, rd);
  EXPECT_EQ(rc.next_u64(), rd.next_u64());
}

TEST(BatchNormalizationAxisList, OneElementListIsThatAxis) {
  const auto o = BatchNormalization::with_axis({3});
  EXPECT_EQ(o.axis, 3);
  BatchNormalization::Options base;
  base.momentum = 0.9;
  EXPECT_EQ(BatchNormalization::with_axis({-1}, base).momentum, 0.9);
  BatchNormalization bn(BatchNormalization::with_axis({3}));
  Random rng(7);
  bn.build(Shape{2, 2, 5}, rng);
  EXPECT_EQ(bn.channels(), 5);
  const std::string msg = error_of([] { BatchNormalization::with_axis({1, 2}); });
  EXPECT_NE(msg.find("[1, 2]"), std::string::npos) << msg;
  EXPECT_THROW(BatchNormalization::with_axis({}), ValueError);
}

// Dense and Activation with a kind that needs the pre-activation give the same gradient (Dense
// keeps z; Activation reads its input).
TEST(PreActivationKinds, DenseEqualsDenseLinearThenActivation) {
  for (const char* act : {"gelu", "silu", "hard_silu"}) {
    SCOPED_TRACE(act);
    Random r1(11), r2(11), rx(12);
    Dense fused(4, act), linear(4, "linear");
    Activation a(act);
    fused.build(Shape{5}, r1);
    linear.build(Shape{5}, r2);
    a.build(Shape{4}, r2);
    const Tensor x = test::random_normal(Shape{6, 5}, rx, 0.0f, 2.0f);
    const Tensor& z = linear.forward(x, Mode::training);
    const Tensor y2 = a.forward(z, Mode::training);
    EXPECT_TRUE(test::bitwise_equal(fused.forward(x, Mode::training), y2));
    const Tensor dy = test::random_normal(y2.shape(), rx);
    const Tensor dz = a.backward(dy);
    EXPECT_TRUE(test::bitwise_equal(fused.backward(dy), linear.backward(dz)));
  }
}

}  // namespace
}  // namespace bnorm
