// Max/average/global-average pooling kernels against the float64 references: 'valid' and TF
// 'same' windows (average over positions inside the input only), first-maximum gradient routing
// on ties, thread-count determinism.
#include "kernels/pooling.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "bnorm/core/parallel.hpp"
#include "kernels/conv2d.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

using kernels::Pool2dDims;

struct PoolCase {
  std::string name;
  std::int64_t batch, in_h, in_w, channels, pool, stride;
  bool same = false;
};

Pool2dDims dims_of(const PoolCase& c) {
  Pool2dDims d;
  d.batch = c.batch;
  d.in_h = c.in_h;
  d.in_w = c.in_w;
  d.channels = c.channels;
  d.pool_h = d.pool_w = c.pool;
  d.stride_h = d.stride_w = c.stride;
  const auto gh = kernels::conv_axis_geometry(c.in_h, c.pool, c.stride, 1, c.same);
  const auto gw = kernels::conv_axis_geometry(c.in_w, c.pool, c.stride, 1, c.same);
  d.out_h = gh.out;
  d.out_w = gw.out;
  d.pad_top = gh.pad_before;
  d.pad_left = gw.pad_before;
  return d;
}

class PoolingKernelTest : public ::testing::TestWithParam<PoolCase> {};

TEST_P(PoolingKernelTest, MatchFloat64Reference) {
  const Pool2dDims d = dims_of(GetParam());
  Random rng(5);
  const Tensor x = test::random_uniform(Shape{d.batch, d.in_h, d.in_w, d.channels}, rng);
  const Tensor dy = test::random_uniform(Shape{d.batch, d.out_h, d.out_w, d.channels}, rng);
  Tensor y(dy.shape()), y_ref(dy.shape()), dx(x.shape()), dx_ref(x.shape());

  kernels::max_pool2d_forward(d, x.data(), y.data());
  kernels::reference::max_pool2d_forward(d, x.data(), y_ref.data());
  EXPECT_TRUE(test::bitwise_equal(y, y_ref));
  kernels::max_pool2d_backward(d, x.data(), dy.data(), dx.data());
  kernels::reference::max_pool2d_backward(d, x.data(), dy.data(), dx_ref.data());
  test::expect_close(dx, dx_ref, 1e-6, 1e-6);

  kernels::avg_pool2d_forward(d, x.data(), y.data());
  kernels::reference::avg_pool2d_forward(d, x.data(), y_ref.data());
  test::expect_close(y, y_ref, 1e-6, 1e-6);
  kernels::avg_pool2d_backward(d, dy.data(), dx.data());
  kernels::reference::avg_pool2d_backward(d, dy.data(), dx_ref.data());
  test::expect_close(dx, dx_ref, 1e-6, 1e-6);
}

TEST_P(PoolingKernelTest, SameBitsAtAnyThreadCount) {
  const Pool2dDims d = dims_of(GetParam());
  Random rng(6);
  const Tensor x = test::random_uniform(Shape{d.batch, d.in_h, d.in_w, d.channels}, rng);
  const Tensor dy = test::random_uniform(Shape{d.batch, d.out_h, d.out_w, d.channels}, rng);
  const int saved = num_threads();
  std::vector<Tensor> out;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    Tensor y(dy.shape()), dx(x.shape()), ya(dy.shape()), dxa(x.shape());
    kernels::max_pool2d_forward(d, x.data(), y.data());
    kernels::max_pool2d_backward(d, x.data(), dy.data(), dx.data());
    kernels::avg_pool2d_forward(d, x.data(), ya.data());
    kernels::avg_pool2d_backward(d, dy.data(), dxa.data());
    for (Tensor* t : {&y, &dx, &ya, &dxa}) out.push_back(*t);
  }
  set_num_threads(saved);
  for (std::size_t i = 4; i < out.size(); ++i) EXPECT_TRUE(test::bitwise_equal(out[i], out[i % 4]));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PoolingKernelTest,
    ::testing::Values(PoolCase{"p2_valid", 2, 6, 6, 3, 2, 2},
                      PoolCase{"p2_valid_odd_drops_last", 2, 7, 5, 3, 2, 2},
                      PoolCase{"p2_same_odd", 2, 7, 5, 3, 2, 2, true},
                      PoolCase{"p3_stride1_same_overlap", 2, 5, 6, 2, 3, 1, true},
                      PoolCase{"p3_stride2_same", 3, 7, 7, 4, 3, 2, true},
                      PoolCase{"p3_stride1_valid_overlap", 2, 5, 5, 2, 3, 1},
                      PoolCase{"many_channels", 2, 4, 4, 300, 2, 2},
                      PoolCase{"many_samples", 40, 4, 4, 70, 2, 2}),
    [](const ::testing::TestParamInfo<PoolCase>& info) { return info.param.name; });

TEST(MaxPoolKernel, TiesRouteTheGradientToTheFirstMaximum) {
  // One 2x2 window, every value equal: TensorFlow gives the whole gradient to position (0, 0).
  Pool2dDims d;
  d.in_h = d.in_w = 2;
  d.channels = 1;
  d.pool_h = d.pool_w = 2;
  d.stride_h = d.stride_w = 2;
  d.out_h = d.out_w = 1;
  const float x[4] = {0.5f, 0.5f, 0.5f, 0.5f};
  const float dy[1] = {3.0f};
  float dx[4];
  kernels::max_pool2d_backward(d, x, dy, dx);
  EXPECT_EQ(dx[0], 3.0f);
  EXPECT_EQ(dx[1] + dx[2] + dx[3], 0.0f);
  const float x2[4] = {0.1f, 0.7f, 0.2f, 0.7f};  // tie between (0, 1) and (1, 1)
  kernels::max_pool2d_backward(d, x2, dy, dx);
  EXPECT_EQ(dx[1], 3.0f);
  EXPECT_EQ(dx[3], 0.0f);
  // -0 and +0 are equal: the first one keeps the gradient, whichever sign it has.
  const float zeros[4] = {-0.0f, 0.0f, -1.0f, 0.0f};
  kernels::max_pool2d_backward(d, zeros, dy, dx);
  EXPECT_EQ(dx[0], 3.0f);
  EXPECT_EQ(dx[1] + dx[3], 0.0f);
  // NaN is never greater: a NaN after the first position is skipped, a NaN first position is
  // the maximum (as the forward pass reports it) and takes the gradient, once.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float later_nan[4] = {0.1f, nan, 0.9f, nan};
  kernels::max_pool2d_backward(d, later_nan, dy, dx);
  EXPECT_EQ(dx[2], 3.0f);
  EXPECT_EQ(dx[0] + dx[1] + dx[3], 0.0f);
  const float first_nan[4] = {nan, 0.5f, nan, 2.0f};
  float y[1];
  kernels::max_pool2d_forward(d, first_nan, y);
  EXPECT_TRUE(std::isnan(y[0]));
  kernels::max_pool2d_backward(d, first_nan, dy, dx);
  EXPECT_EQ(dx[0], 3.0f);
  EXPECT_EQ(dx[1] + dx[2] + dx[3], 0.0f);
}

TEST(AvgPoolKernel, SamePaddingAveragesOnlyInsideTheInput) {
  // 1x3 input, pool 1x2, stride 2, same: windows {x0, x1} and {x2} (TF: mean of 1 value).
  Pool2dDims d;
  d.in_h = 1;
  d.in_w = 3;
  d.channels = 1;
  d.pool_h = 1;
  d.pool_w = 2;
  d.stride_h = 1;
  d.stride_w = 2;
  d.out_h = 1;
  d.out_w = 2;
  const float x[3] = {1.0f, 2.0f, 4.0f};
  float y[2];
  kernels::avg_pool2d_forward(d, x, y);
  EXPECT_FLOAT_EQ(y[0], 1.5f);
  EXPECT_FLOAT_EQ(y[1], 4.0f);
}

TEST(GlobalAvgPoolKernel, MatchesReferenceForBothLayouts) {
  Random rng(8);
  for (auto [outer, spatial, channels] :
       {std::array<std::int64_t, 3>{3, 10, 5}, std::array<std::int64_t, 3>{12, 49, 1},
        std::array<std::int64_t, 3>{2, 9, 300}}) {
    const Tensor x = test::random_uniform(Shape{outer, spatial, channels}, rng);
    const Tensor dy = test::random_uniform(Shape{outer, channels}, rng);
    Tensor y(dy.shape()), y_ref(dy.shape()), dx(x.shape()), dx_ref(x.shape());
    kernels::global_avg_pool_forward(outer, spatial, channels, x.data(), y.data());
    kernels::reference::global_avg_pool_forward(outer, spatial, channels, x.data(), y_ref.data());
    test::expect_close(y, y_ref, 1e-6, 1e-7);
    kernels::global_avg_pool_backward(outer, spatial, channels, dy.data(), dx.data());
    kernels::reference::global_avg_pool_backward(outer, spatial, channels, dy.data(),
                                                 dx_ref.data());
    test::expect_close(dx, dx_ref, 1e-6, 1e-7);
  }
}

}  // namespace
}  // namespace bnorm
