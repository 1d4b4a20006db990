// Zero padding against its reference: asymmetric pads, zero pads, one channel (the channels-first
// view) and many; the backward is the crop; same bits at any thread count.
#include "kernels/padding.hpp"

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "bnorm/core/parallel.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

using kernels::ZeroPad2dDims;

ZeroPad2dDims dims(std::int64_t batch, std::int64_t h, std::int64_t w, std::int64_t c,
                   std::array<std::int64_t, 4> pads) {
  ZeroPad2dDims d;
  d.batch = batch;
  d.in_h = h;
  d.in_w = w;
  d.channels = c;
  d.top = pads[0];
  d.bottom = pads[1];
  d.left = pads[2];
  d.right = pads[3];
  return d;
}

TEST(ZeroPadKernel, MatchesReferenceAndCropsTheGradient) {
  Random rng(4);
  for (const ZeroPad2dDims& d : {dims(2, 3, 4, 2, {1, 1, 1, 1}), dims(3, 5, 5, 3, {0, 1, 0, 1}),
                                 dims(2, 4, 3, 1, {3, 0, 2, 0}), dims(1, 2, 2, 5, {0, 0, 0, 0}),
                                 dims(70, 3, 3, 40, {1, 2, 3, 4})}) {
    const Tensor x = test::random_uniform(Shape{d.batch, d.in_h, d.in_w, d.channels}, rng);
    const Tensor dy = test::random_uniform(Shape{d.batch, d.out_h(), d.out_w(), d.channels}, rng);
    Tensor y = Tensor::full(dy.shape(), 9.0f), y_ref(dy.shape());  // stale values overwritten
    kernels::zero_pad2d_forward(d, x.data(), y.data());
    kernels::reference::zero_pad2d_forward(d, x.data(), y_ref.data());
    EXPECT_TRUE(test::bitwise_equal(y, y_ref));
    Tensor dx(x.shape()), dx_ref(x.shape());
    kernels::zero_pad2d_backward(d, dy.data(), dx.data());
    kernels::reference::zero_pad2d_backward(d, dy.data(), dx_ref.data());
    EXPECT_TRUE(test::bitwise_equal(dx, dx_ref));
  }
}

TEST(ZeroPadKernel, PlacesTheImageAfterTopAndLeft) {
  const ZeroPad2dDims d = dims(1, 1, 2, 1, {1, 0, 0, 2});  // 1x2 -> 2x4
  const float x[2] = {5.0f, 6.0f};
  float y[8];
  kernels::zero_pad2d_forward(d, x, y);
  const float expected[8] = {0, 0, 0, 0, 5, 6, 0, 0};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(y[i], expected[i]) << i;
  const float dy[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  float dx[2];
  kernels::zero_pad2d_backward(d, dy, dx);
  EXPECT_EQ(dx[0], 5.0f);
  EXPECT_EQ(dx[1], 6.0f);
}

TEST(ZeroPadKernel, SameBitsAtAnyThreadCount) {
  const ZeroPad2dDims d = dims(90, 5, 4, 30, {1, 2, 0, 1});
  Random rng(7);
  const Tensor x = test::random_uniform(Shape{d.batch, d.in_h, d.in_w, d.channels}, rng);
  const int saved = num_threads();
  std::vector<Tensor> out;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    Tensor y(Shape{d.batch, d.out_h(), d.out_w(), d.channels}), dx(x.shape());
    kernels::zero_pad2d_forward(d, x.data(), y.data());
    kernels::zero_pad2d_backward(d, y.data(), dx.data());
    EXPECT_TRUE(test::bitwise_equal(dx, x));  // crop(pad(x)) = x
    out.push_back(y);
  }
  set_num_threads(saved);
  for (std::size_t i = 1; i < out.size(); ++i) EXPECT_TRUE(test::bitwise_equal(out[i], out[0]));
}

}  // namespace
}  // namespace bnorm
