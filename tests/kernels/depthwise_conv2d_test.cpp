// Depthwise convolution (direct NHWC loops) and the pointwise GEMM of a separable convolution
// against their float64 references: depth multipliers 1..3, strides, TF 'same' padding with odd
// sizes and even kernels, dilation, channel blocks that split a depth multiplier's group; bitwise
// determinism across thread counts.
#include "kernels/depthwise_conv2d.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bnorm/core/parallel.hpp"
#include "kernels/conv2d.hpp"
#include "kernels/gemm.hpp"
#include "support/test_support.hpp"
#include "support/window_dims.hpp"

namespace bnorm {
namespace {

using kernels::DepthwiseConv2dDims;

struct DwCase {
  std::string name;
  std::int64_t batch, in_h, in_w, in_c, kernel_h, kernel_w, multiplier;
  std::int64_t stride = 1, dilation = 1;
  bool same = false;
  bool bias = true;
};

DepthwiseConv2dDims dims_of(const DwCase& c) {
  DepthwiseConv2dDims d;
  d.batch = c.batch;
  d.in_h = c.in_h;
  d.in_w = c.in_w;
  d.in_c = c.in_c;
  d.kernel_h = c.kernel_h;
  d.kernel_w = c.kernel_w;
  d.depth_multiplier = c.multiplier;
  test::set_window(d, c.stride, c.dilation, c.same);
  return d;
}

struct DwData {
  DepthwiseConv2dDims d;
  Tensor x, kernel, bias, dy;
};
DwData make_data(const DwCase& c, std::uint64_t seed = 13) {
  DwData t;
  t.d = dims_of(c);
  Random rng(seed);
  t.x = test::random_uniform(Shape{c.batch, c.in_h, c.in_w, c.in_c}, rng);
  t.kernel = test::random_uniform(Shape{c.kernel_h, c.kernel_w, c.in_c, c.multiplier}, rng);
  t.bias = test::random_uniform(Shape{t.d.out_c()}, rng);
  t.dy = test::random_uniform(Shape{c.batch, t.d.out_h, t.d.out_w, t.d.out_c()}, rng);
  return t;
}

class DepthwiseKernelTest : public ::testing::TestWithParam<DwCase> {};

TEST_P(DepthwiseKernelTest, ForwardAndBackwardMatchFloat64Reference) {
  const DwCase& c = GetParam();
  DwData t = make_data(c);
  const DepthwiseConv2dDims& d = t.d;
  ASSERT_GT(d.out_h, 0);
  ASSERT_GT(d.out_w, 0);
  const float* bias = c.bias ? t.bias.data() : nullptr;
  Tensor y(t.dy.shape()), y_ref(t.dy.shape());
  kernels::depthwise_conv2d_forward(d, t.x.data(), t.kernel.data(), bias, y.data());
  kernels::reference::depthwise_conv2d_forward(d, t.x.data(), t.kernel.data(), bias, y_ref.data());
  test::expect_close(y, y_ref, 1e-5, 1e-5);

  Tensor dx(t.x.shape()), dk(t.kernel.shape()), db(t.bias.shape());
  Tensor dx_ref(t.x.shape()), dk_ref(t.kernel.shape()), db_ref(t.bias.shape());
  kernels::depthwise_conv2d_backward(d, t.x.data(), t.dy.data(), t.kernel.data(), dx.data(),
                                     dk.data(), db.data());
  kernels::reference::depthwise_conv2d_backward(d, t.x.data(), t.dy.data(), t.kernel.data(),
                                                dx_ref.data(), dk_ref.data(), db_ref.data());
  test::expect_close(dx, dx_ref, 1e-5, 1e-5);
  test::expect_close(dk, dk_ref, 1e-5, 1e-5);
  test::expect_close(db, db_ref, 1e-5, 1e-5);

  // Each output may be skipped alone, leaving the others unchanged.
  Tensor dk2(t.kernel.shape());
  kernels::depthwise_conv2d_backward(d, t.x.data(), t.dy.data(), t.kernel.data(), nullptr,
                                     dk2.data(), nullptr);
  EXPECT_TRUE(test::bitwise_equal(dk2, dk));
  Tensor dx2(t.x.shape());
  kernels::depthwise_conv2d_backward(d, t.x.data(), t.dy.data(), t.kernel.data(), dx2.data(),
                                     nullptr, nullptr);
  EXPECT_TRUE(test::bitwise_equal(dx2, dx));
}

TEST_P(DepthwiseKernelTest, SameBitsAtAnyThreadCount) {
  const DwCase& c = GetParam();
  const int saved = num_threads();
  std::vector<Tensor> results;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    DwData t = make_data(c);
    Tensor y(t.dy.shape()), dx(t.x.shape()), dk(t.kernel.shape()), db(t.bias.shape());
    kernels::depthwise_conv2d_forward(t.d, t.x.data(), t.kernel.data(), t.bias.data(), y.data());
    kernels::depthwise_conv2d_backward(t.d, t.x.data(), t.dy.data(), t.kernel.data(), dx.data(),
                                       dk.data(), db.data());
    for (Tensor* r : {&y, &dx, &dk, &db}) results.push_back(*r);
  }
  set_num_threads(saved);
  for (std::size_t i = 4; i < results.size(); ++i) {
    EXPECT_TRUE(test::bitwise_equal(results[i], results[i % 4])) << "output " << i % 4;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DepthwiseKernelTest,
    ::testing::Values(DwCase{"k3_valid", 2, 5, 6, 3, 3, 3, 1},
                      DwCase{"k3_same", 2, 5, 6, 3, 3, 3, 1, 1, 1, true},
                      DwCase{"k3_same_stride2_odd", 2, 7, 5, 4, 3, 3, 1, 2, 1, true},
                      DwCase{"k3_valid_stride2", 3, 7, 8, 2, 3, 3, 1, 2},
                      DwCase{"k2_same_even_kernel", 2, 5, 4, 3, 2, 2, 1, 1, 1, true},
                      DwCase{"k4x2_same_stride2", 2, 6, 7, 2, 4, 2, 1, 2, 1, true},
                      DwCase{"k3_dilation2_valid", 2, 8, 7, 2, 3, 3, 1, 1, 2},
                      DwCase{"k3_dilation2_same", 2, 6, 7, 3, 3, 3, 1, 1, 2, true},
                      DwCase{"multiplier2_same", 2, 5, 5, 3, 3, 3, 2, 1, 1, true},
                      DwCase{"multiplier3_stride2_nobias", 2, 6, 5, 2, 3, 3, 3, 2, 1, true, false},
                      DwCase{"k5_on_5_valid", 2, 5, 5, 2, 5, 5, 1},
                      DwCase{"many_samples_chunked", 40, 4, 4, 8, 3, 3, 1, 1, 1, true},
                      DwCase{"wide_channels_blocks", 2, 4, 5, 300, 3, 3, 1, 1, 1, true},
                      // 100 * 3 = 300 outputs: the 256-channel block boundary splits a group.
                      DwCase{"wide_multiplier3_blocks", 2, 4, 4, 100, 3, 3, 3, 1, 1, true}),
    [](const ::testing::TestParamInfo<DwCase>& info) { return info.param.name; });

TEST(DepthwiseKernel, EachOutputChannelReadsOnlyItsInputChannel) {
  // 1x1 image, 1x1 kernel, 2 input channels, multiplier 2: y = [x0*k00, x0*k01, x1*k10, x1*k11].
  DepthwiseConv2dDims d;
  d.in_h = d.in_w = d.out_h = d.out_w = 1;
  d.in_c = 2;
  d.depth_multiplier = 2;
  const float x[2] = {2.0f, 3.0f};
  const float k[4] = {1.0f, 10.0f, 100.0f, 1000.0f};  // (1, 1, in=2, M=2)
  const float b[4] = {0.5f, 0.25f, 0.125f, 0.0625f};
  float y[4];
  kernels::depthwise_conv2d_forward(d, x, k, b, y);
  EXPECT_EQ(y[0], 2.5f);
  EXPECT_EQ(y[1], 20.25f);
  EXPECT_EQ(y[2], 300.125f);
  EXPECT_EQ(y[3], 3000.0625f);
}

TEST(PointwiseKernel, MatchesTheReferenceGemm) {
  Random rng(21);
  const std::int64_t rows = 2100, channels = 7, filters = 5;  // rows span two chunks
  const Tensor mid = test::random_uniform(Shape{rows, channels}, rng);
  const Tensor pw = test::random_uniform(Shape{channels, filters}, rng);
  const Tensor bias = test::random_uniform(Shape{filters}, rng);
  const Tensor dy = test::random_uniform(Shape{rows, filters}, rng);
  Tensor y(dy.shape()), y_ref(dy.shape());
  kernels::pointwise_conv_forward(rows, channels, filters, mid.data(), pw.data(), bias.data(),
                                  y.data());
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t f = 0; f < filters; ++f) y_ref[r * filters + f] = bias[f];
  kernels::reference::gemm({rows, filters, channels}, false, false, 1.0f, mid.data(), channels,
                           pw.data(), filters, 1.0f, y_ref.data(), filters);
  test::expect_close(y, y_ref, 1e-5, 1e-5);

  Tensor dmid(mid.shape()), dpw(pw.shape()), db(bias.shape());
  Tensor dmid_ref(mid.shape()), dpw_ref(pw.shape());
  kernels::pointwise_conv_backward(rows, channels, filters, mid.data(), dy.data(), pw.data(),
                                   dmid.data(), dpw.data(), db.data());
  kernels::reference::gemm({rows, channels, filters}, false, true, 1.0f, dy.data(), filters,
                           pw.data(), filters, 0.0f, dmid_ref.data(), channels);
  kernels::reference::gemm({channels, filters, rows}, true, false, 1.0f, mid.data(), channels,
                           dy.data(), filters, 0.0f, dpw_ref.data(), filters);
  std::vector<double> db_ref(static_cast<std::size_t>(filters), 0.0);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t f = 0; f < filters; ++f)
      db_ref[static_cast<std::size_t>(f)] += dy[r * filters + f];
  test::expect_close(dmid, dmid_ref, 1e-5, 1e-5);
  test::expect_close(dpw, dpw_ref, 1e-4, 1e-4);
  test::expect_close(db.values(), db_ref, 1e-5, 1e-5);
}

}  // namespace
}  // namespace bnorm
