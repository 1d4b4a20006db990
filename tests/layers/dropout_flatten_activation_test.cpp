// Dropout, Flatten and Activation specifics.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/core/parallel.hpp"
#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/dropout.hpp"
#include "bnorm/layers/flatten.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

TEST(Dropout, RateValidation) {
  EXPECT_THROW(Dropout(1.0f), ValueError);
  EXPECT_THROW(Dropout(1.5f), ValueError);
  EXPECT_THROW(Dropout(-0.1f), ValueError);
  EXPECT_THROW(Dropout(std::numeric_limits<float>::quiet_NaN()), ValueError);
  try {
    Dropout bad(2.0f);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("rate"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(Dropout(0.0f));
  EXPECT_NO_THROW(Dropout(0.999f));
  EXPECT_EQ(Dropout(0.25f).rate(), 0.25f);
  EXPECT_EQ(Dropout(0.25f).class_name(), "Dropout");
}

TEST(Dropout, InferenceIsIdentity) {
  Dropout d(0.5f);
  Random rng(1);
  d.build(Shape{10}, rng);
  const Tensor x = test::random_normal(Shape{4, 10}, rng);
  EXPECT_TRUE(test::bitwise_equal(d.forward(x, Mode::inference), x));
  const Tensor dy = test::random_normal(Shape{4, 10}, rng);
  EXPECT_TRUE(test::bitwise_equal(d.backward(dy), dy));
}

TEST(Dropout, TrainingZeroesAFractionRateAndScalesTheRest) {
  const float rate = 0.3f;
  Dropout d(rate);
  Random rng(2);
  d.build(Shape{1000}, rng);
  const Tensor x = test::random_uniform(Shape{100, 1000}, rng, 0.5f, 1.5f);  // no zeros in x
  const Tensor y = d.forward(x, Mode::training);
  std::int64_t zeros = 0;
  const double scale = 1.0 / (1.0 - rate);
  for (std::int64_t i = 0; i < x.size(); ++i) {
    if (y[i] == 0.0f) {
      ++zeros;
    } else {
      ASSERT_NEAR(y[i], x[i] * scale, 1e-6 * x[i] * scale) << "index " << i;
    }
  }
  const double n = static_cast<double>(x.size());
  const double sigma = std::sqrt(n * rate * (1 - rate));
  EXPECT_NEAR(static_cast<double>(zeros), n * rate, 6 * sigma);
  // The expectation is preserved: mean(y) ~ mean(x).
  double sx = 0, sy = 0;
  for (std::int64_t i = 0; i < x.size(); ++i) {
    sx += x[i];
    sy += y[i];
  }
  EXPECT_NEAR(sy / sx, 1.0, 0.01);

  // Backward uses the same mask: dx = dy * (y / x).
  const Tensor dy = Tensor::full(y.shape(), 2.0f);
  const Tensor dx = d.backward(dy);
  for (std::int64_t i = 0; i < x.size(); ++i) {
    if (y[i] == 0.0f) {
      ASSERT_EQ(dx[i], 0.0f) << i;
    } else {
      ASSERT_NEAR(dx[i], 2.0 * scale, 1e-5) << i;
    }
  }
}

TEST(Dropout, NewMaskEachTrainingStepSameSequenceForSameSeed) {
  Dropout a(0.5f), b(0.5f);
  Random ra(3), rb(3);
  a.build(Shape{64}, ra);
  b.build(Shape{64}, rb);
  const Tensor x = Tensor::full(Shape{4, 64}, 1.0f);
  const Tensor a1 = a.forward(x, Mode::training);
  const Tensor a2 = a.forward(x, Mode::training);
  EXPECT_FALSE(test::bitwise_equal(a1, a2)) << "the mask should change between steps";
  EXPECT_TRUE(test::bitwise_equal(b.forward(x, Mode::training), a1));
  EXPECT_TRUE(test::bitwise_equal(b.forward(x, Mode::training), a2));
  Dropout c(0.5f);
  Random rc(4);
  c.build(Shape{64}, rc);
  EXPECT_FALSE(test::bitwise_equal(c.forward(x, Mode::training), a1));
}

// The mask is drawn in parallel from counter-based random numbers: the same masks at 1, 2 and 3
// threads, for a tensor large enough to be split into several blocks.
TEST(Dropout, SameMasksAtOneTwoAndThreeThreads) {
  const int saved = num_threads();
  const Tensor x = Tensor::full(Shape{8, 9000}, 1.0f);
  std::vector<Tensor> steps;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    Dropout d(0.3f);
    Random r(7);
    d.build(Shape{9000}, r);
    for (int step = 0; step < 2; ++step) steps.push_back(d.forward(x, Mode::training));
    const Tensor dx = d.backward(x);
    EXPECT_TRUE(test::bitwise_equal(dx, steps.back()));  // dx = dy * mask with dy = 1
  }
  set_num_threads(saved);
  for (std::size_t i = 2; i < steps.size(); ++i) {
    EXPECT_TRUE(test::bitwise_equal(steps[i], steps[i % 2])) << "step " << i % 2;
  }
  std::int64_t kept = 0;
  for (std::int64_t i = 0; i < steps[0].size(); ++i) kept += steps[0][i] != 0.0f;
  EXPECT_NEAR(static_cast<double>(kept) / static_cast<double>(steps[0].size()), 0.7, 0.01);
}

TEST(Dropout, RateZeroIsIdentityInTraining) {
  Dropout d(0.0f);
  Random rng(5);
  d.build(Shape{7}, rng);
  const Tensor x = test::random_normal(Shape{3, 7}, rng);
  EXPECT_TRUE(test::bitwise_equal(d.forward(x, Mode::training), x));
  EXPECT_EQ(d.count_params(), 0);
}

TEST(Flatten, ShapesAndValues) {
  Flatten f;
  EXPECT_EQ(f.class_name(), "Flatten");
  EXPECT_EQ(f.output_shape(Shape{2, 3, 4}), Shape{24});
  EXPECT_EQ(f.output_shape(Shape{28, 28}), Shape{784});
  EXPECT_EQ(f.output_shape(Shape{5}), Shape{5});
  Random rng(6);
  f.build(Shape{2, 3, 4}, rng);
  const Tensor x = test::random_normal(Shape{5, 2, 3, 4}, rng);
  const Tensor y = f.forward(x, Mode::training);
  EXPECT_EQ(y.shape(), (Shape{5, 24}));
  EXPECT_EQ(test::to_vector(y), test::to_vector(x));  // row-major: same order
  const Tensor dy = test::random_normal(Shape{5, 24}, rng);
  const Tensor dx = f.backward(dy);
  EXPECT_EQ(dx.shape(), x.shape());
  EXPECT_EQ(test::to_vector(dx), test::to_vector(dy));
  EXPECT_EQ(f.count_params(), 0);
}

// Keras Flatten(data_format="channels_first"): (N, C, H, W) is flattened in (H, W, C) order.
TEST(Flatten, ChannelsFirstFlattensInChannelsLastOrder) {
  Flatten f(Flatten::Options{"channels_first"});
  EXPECT_EQ(f.options().data_format, "channels_first");
  EXPECT_EQ(f.output_shape(Shape{3, 2, 4}), Shape{24});
  Random rng(8);
  f.build(Shape{3, 2, 4}, rng);
  const Tensor x = test::random_normal(Shape{2, 3, 2, 4}, rng);
  const Tensor y = f.forward(x, Mode::training);
  ASSERT_EQ(y.shape(), (Shape{2, 24}));
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t c = 0; c < 3; ++c)
      for (std::int64_t s = 0; s < 8; ++s) EXPECT_EQ(y[n * 24 + s * 3 + c], x[n * 24 + c * 8 + s]);
  const Tensor dy = test::random_normal(Shape{2, 24}, rng);
  const Tensor dx = f.backward(dy);
  ASSERT_EQ(dx.shape(), x.shape());
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t c = 0; c < 3; ++c)
      for (std::int64_t s = 0; s < 8; ++s)
        EXPECT_EQ(dx[n * 24 + c * 8 + s], dy[n * 24 + s * 3 + c]);
  // (N, C): nothing to move, as in Keras.
  Flatten g(Flatten::Options{"channels_first"});
  g.build(Shape{5}, rng);
  const Tensor x2 = test::random_normal(Shape{3, 5}, rng);
  EXPECT_EQ(test::to_vector(g.forward(x2, Mode::inference)), test::to_vector(x2));
  EXPECT_EQ(Flatten(Flatten::Options{"Channels_First"}).options().data_format, "channels_first");
  EXPECT_THROW(Flatten(Flatten::Options{"nchw"}), ValueError);
}

TEST(ActivationLayer, NamesAndValidation) {
  Activation a("tanh");
  EXPECT_EQ(a.class_name(), "Activation");
  EXPECT_EQ(a.name(), "activation");
  EXPECT_EQ(a.activation(), ActivationKind::tanh);
  EXPECT_THROW(Activation("bogus"), ValueError);
  EXPECT_EQ(a.output_shape(Shape{3, 4}), (Shape{3, 4}));
}

TEST(ActivationLayer, SoftmaxExposesLogitsAndBackwardFromLogitsPassesThrough) {
  Activation s("softmax");
  Random rng(7);
  s.build(Shape{5}, rng);
  const Tensor z = test::random_normal(Shape{3, 5}, rng);
  const Tensor p = s.forward(z, Mode::training);
  ASSERT_NE(s.softmax_logits(), nullptr);
  EXPECT_TRUE(test::bitwise_equal(*s.softmax_logits(), z));
  for (int r = 0; r < 3; ++r) {
    double sum = 0;
    for (int c = 0; c < 5; ++c) sum += p[r * 5 + c];
    EXPECT_NEAR(sum, 1.0, 1e-6);
  }
  const Tensor dz = test::random_normal(Shape{3, 5}, rng);
  EXPECT_TRUE(test::bitwise_equal(s.backward_from_logits(dz), dz));

  Activation relu("relu");
  relu.build(Shape{5}, rng);
  relu.forward(z, Mode::training);
  EXPECT_EQ(relu.softmax_logits(), nullptr);
  EXPECT_THROW(relu.backward_from_logits(dz), Error);
}

TEST(ActivationLayer, ReluValues) {
  Activation r("relu");
  Random rng(8);
  r.build(Shape{4}, rng);
  const Tensor x(Shape{1, 4}, std::vector<float>{-1.0f, 0.0f, 2.0f, -3.0f});
  EXPECT_EQ(test::to_vector(r.forward(x, Mode::inference)), (std::vector<float>{0, 0, 2, 0}));
}

}  // namespace
}  // namespace bnorm
