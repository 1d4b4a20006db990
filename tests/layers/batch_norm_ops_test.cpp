// The functional BN API (bnorm/layers/batch_norm_ops.hpp): numerics against the float64 naive
// reference over several axes, Keras's float32 rounding of the moving update, agreement with
// the BatchNormalization layer. (Argument validation is covered by tests/badinput.)
#include "bnorm/layers/batch_norm_ops.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "kernels/batch_norm.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

struct OpsCase {
  Shape shape;
  int axis;
};
void PrintTo(const OpsCase& c, std::ostream* os) { *os << c.shape.str() << " axis " << c.axis; }

class BatchNormOpsTest : public ::testing::TestWithParam<OpsCase> {
 protected:
  void SetUp() override {
    const OpsCase c = GetParam();
    Random rng(31);
    x = test::random_normal(c.shape, rng, 1.5f, 2.0f);
    view = test::bn_view(c.shape, c.axis);
    scale = test::random_uniform(Shape{view.channels}, rng, 0.5f, 1.5f);
    offset = test::random_uniform(Shape{view.channels}, rng, -1.0f, 1.0f);
    dy = test::random_normal(c.shape, rng);
  }
  Tensor x, scale, offset, dy;
  test::BnView view;
};

TEST_P(BatchNormOpsTest, MomentsMatchFloat64) {
  const auto s = batch_norm_moments(x, GetParam().axis);
  const auto m = test::naive_bn_moments(view, x.values());
  EXPECT_EQ(s.batch_mean.shape(), Shape{view.channels});
  test::expect_close(s.batch_mean.values(), m.mean, 1e-6, 1e-6);
  test::expect_close(s.batch_variance.values(), m.variance, 1e-5, 1e-7);
}

TEST_P(BatchNormOpsTest, TrainingAndInferenceMatchFloat64) {
  const int axis = GetParam().axis;
  const auto t = batch_norm_training(x, &scale, &offset, 1e-3f, axis);
  const auto m = test::naive_bn_moments(view, x.values());
  test::expect_close(t.batch_mean.values(), m.mean, 1e-6, 1e-6);
  test::expect_close(t.batch_variance.values(), m.variance, 1e-5, 1e-7);
  test::expect_close(t.y.values(),
                     test::naive_bn_forward(view, x.values(), m.mean, m.variance, scale.values(),
                                            offset.values(), 1e-3),
                     1e-5, 1e-5);
  // Without scale/offset (Keras scale=False, center=False).
  const auto bare = batch_norm_training(x, nullptr, nullptr, 1e-3f, axis);
  test::expect_close(bare.y.values(),
                     test::naive_bn_forward(view, x.values(), m.mean, m.variance, {}, {}, 1e-3),
                     1e-5, 1e-5);
  // Inference with given statistics.
  Random rng(5);
  const Tensor mean = test::random_normal(Shape{view.channels}, rng);
  const Tensor var = test::random_uniform(Shape{view.channels}, rng, 0.5f, 2.0f);
  const Tensor y = batch_norm_inference(x, mean, var, &scale, &offset, 1e-3f, axis);
  test::expect_close(
      y.values(),
      test::naive_bn_forward(view, x.values(), test::to_double(mean.values()),
                             test::to_double(var.values()), scale.values(), offset.values(), 1e-3),
      1e-5, 1e-5);
}

TEST_P(BatchNormOpsTest, BackwardMatchesFloat64) {
  const int axis = GetParam().axis;
  const auto t = batch_norm_training(x, &scale, nullptr, 1e-3f, axis);
  const auto g =
      batch_norm_backward(x, dy, t.batch_mean, t.batch_variance, &scale, 1e-3f, true, axis);
  const auto e = test::naive_bn_backward(
      view, x.values(), dy.values(), test::to_double(t.batch_mean.values()),
      test::to_double(t.batch_variance.values()), scale.values(), 1e-3, true);
  EXPECT_EQ(g.dx.shape(), x.shape());
  test::expect_close(g.dx.values(), e.dx, 1e-4, 1e-5);
  test::expect_close(g.dscale.values(), e.dgamma, 1e-4, 1e-5);
  test::expect_close(g.doffset.values(), e.dbeta, 1e-5, 1e-5);
  const auto gi =
      batch_norm_backward(x, dy, t.batch_mean, t.batch_variance, &scale, 1e-3f, false, axis);
  const auto ei = test::naive_bn_backward(
      view, x.values(), dy.values(), test::to_double(t.batch_mean.values()),
      test::to_double(t.batch_variance.values()), scale.values(), 1e-3, false);
  test::expect_close(gi.dx.values(), ei.dx, 1e-5, 1e-6);
}

TEST_P(BatchNormOpsTest, AgreesWithTheLayer) {
  const OpsCase c = GetParam();
  BatchNormalization::Options o;
  o.axis = c.axis;
  BatchNormalization layer(o);
  Random rng(1);
  std::vector<std::int64_t> per_sample(c.shape.dims().begin() + 1, c.shape.dims().end());
  layer.build(Shape(per_sample), rng);
  layer.gamma()->value = scale;
  layer.beta()->value = offset;
  const Tensor y = layer.forward(x, Mode::training);
  const auto t = batch_norm_training(x, &scale, &offset, 1e-3f, c.axis);
  EXPECT_TRUE(test::bitwise_equal(y, t.y));
  Tensor mm = Tensor(Shape{view.channels}), mv = Tensor::full(Shape{view.channels}, 1.0f);
  batch_norm_update_moving(mm, mv, t.batch_mean, t.batch_variance, 0.99);
  EXPECT_TRUE(test::bitwise_equal(layer.moving_mean()->value, mm));
  EXPECT_TRUE(test::bitwise_equal(layer.moving_variance()->value, mv));
}

INSTANTIATE_TEST_SUITE_P(Axes, BatchNormOpsTest,
                         ::testing::Values(OpsCase{Shape{16, 5}, -1}, OpsCase{Shape{16, 5}, 1},
                                           OpsCase{Shape{3, 4, 5, 2}, 1},
                                           OpsCase{Shape{3, 4, 5, 2}, -1},
                                           OpsCase{Shape{2, 3, 7}, 2}, OpsCase{Shape{1, 6}, -1}),
                         [](const auto& info) { return "case" + std::to_string(info.index); });

TEST(BatchNormOps, MovingUpdateRoundsMomentumLikeKeras) {
  // Keras: moving * momentum + batch * (1 - momentum) with the Python floats momentum and
  // 1 - momentum each cast to float32, then float32 products and sum.
  Random rng(9);
  const std::int64_t c = 257;
  const Tensor batch_mean = test::random_normal(Shape{c}, rng, 0.0f, 3.0f);
  const Tensor batch_var = test::random_uniform(Shape{c}, rng, 0.0f, 4.0f);
  for (double momentum : {0.99, 0.9, 0.999, 0.5, 0.0, 1.0}) {
    SCOPED_TRACE("momentum " + std::to_string(momentum));
    Tensor mm = test::random_normal(Shape{c}, rng),
           mv = test::random_uniform(Shape{c}, rng, 0.1f, 2.0f);
    Tensor mm_k = mm, mv_k = mv;
    const volatile float m32 = static_cast<float>(momentum);
    const volatile float one_minus = static_cast<float>(1.0 - momentum);
    Tensor expected_mean(Shape{c}), expected_var(Shape{c});
    for (std::int64_t i = 0; i < c; ++i) {
      const volatile float a = mm[i] * m32;
      const volatile float b = batch_mean[i] * one_minus;
      expected_mean[i] = a + b;
      const volatile float va = mv[i] * m32;
      const volatile float vb = batch_var[i] * one_minus;
      expected_var[i] = va + vb;
    }
    batch_norm_update_moving(mm, mv, batch_mean, batch_var, momentum);
    EXPECT_TRUE(test::bitwise_equal(mm, expected_mean));
    EXPECT_TRUE(test::bitwise_equal(mv, expected_var));
    kernels::batch_norm_update_moving(c, batch_mean.data(), batch_var.data(), momentum, 1.0f,
                                      mm_k.data(), mv_k.data());
    EXPECT_TRUE(test::bitwise_equal(mm_k, expected_mean));
    EXPECT_TRUE(test::bitwise_equal(mv_k, expected_var));
  }
  // The visible difference: 1 - 0.99f in float32 is 0.00999999046, Keras uses 0.01f.
  Tensor zero(Shape{1}), one = Tensor::full(Shape{1}, 1.0f), mv1 = Tensor::full(Shape{1}, 0.0f);
  batch_norm_update_moving(zero, mv1, one, one, 0.99);
  EXPECT_EQ(zero[0], 0.01f);
}

TEST(BatchNormOps, ErrorsLeaveMovingStatisticsBitIdentical) {
  Random rng(10);
  Tensor mm = test::random_normal(Shape{4}, rng),
         mv = test::random_uniform(Shape{4}, rng, 0.5f, 1.0f);
  const Tensor mm0 = mm, mv0 = mv;
  Tensor bad_mean = test::random_normal(Shape{4}, rng);
  bad_mean[2] = std::numeric_limits<float>::quiet_NaN();
  const Tensor var = Tensor::full(Shape{4}, 1.0f);
  EXPECT_THROW(batch_norm_update_moving(mm, mv, bad_mean, var, 0.99), NonFiniteError);
  EXPECT_THROW(batch_norm_update_moving(mm, mv, var, var, 1.5), ValueError);
  EXPECT_THROW(batch_norm_update_moving(mm, mv, Tensor(Shape{3}), var, 0.99), ShapeError);
  EXPECT_TRUE(test::bitwise_equal(mm, mm0));
  EXPECT_TRUE(test::bitwise_equal(mv, mv0));
}

}  // namespace
}  // namespace bnorm
