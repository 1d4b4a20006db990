// conv2d (im2col + GEMM) and the fast path (oneDNN, kernels/conv2d_fast.hpp) against the direct
// float64 reference; output geometry of Keras/TF 'valid' and 'same' padding; bitwise determinism
// across thread counts; layout transposes.
#include "kernels/conv2d.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bnorm/core/parallel.hpp"
#include "kernels/activation.hpp"
#include "kernels/conv2d_fast.hpp"
#include "support/test_support.hpp"
#include "support/window_dims.hpp"

namespace bnorm {
namespace {

using kernels::Conv2dDims;

struct ConvCase {
  std::string name;
  std::int64_t batch, in_h, in_w, in_c, kernel_h, kernel_w, filters;
  std::int64_t stride = 1, dilation = 1;
  bool same = false;
  bool bias = true;
};
void PrintTo(const ConvCase& c, std::ostream* os) { *os << c.name; }

Conv2dDims dims_of(const ConvCase& c) {
  Conv2dDims d;
  d.batch = c.batch;
  d.in_h = c.in_h;
  d.in_w = c.in_w;
  d.in_c = c.in_c;
  d.kernel_h = c.kernel_h;
  d.kernel_w = c.kernel_w;
  d.filters = c.filters;
  test::set_window(d, c.stride, c.dilation, c.same);
  return d;
}

struct ConvData {
  Conv2dDims d;
  Tensor x, kernel, bias, dy;
};
ConvData make_data(const ConvCase& c, std::uint64_t seed = 11) {
  ConvData t;
  t.d = dims_of(c);
  Random rng(seed);
  t.x = test::random_uniform(Shape{c.batch, c.in_h, c.in_w, c.in_c}, rng);
  t.kernel = test::random_uniform(Shape{c.kernel_h, c.kernel_w, c.in_c, c.filters}, rng);
  t.bias = test::random_uniform(Shape{c.filters}, rng);
  t.dy = test::random_uniform(Shape{c.batch, t.d.out_h, t.d.out_w, c.filters}, rng);
  return t;
}

class Conv2dKernelTest : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Conv2dKernelTest, ForwardAndBackwardMatchFloat64Reference) {
  const ConvCase& c = GetParam();
  ConvData t = make_data(c);
  const Conv2dDims& d = t.d;
  ASSERT_GT(d.out_h, 0);
  ASSERT_GT(d.out_w, 0);
  const float* bias = c.bias ? t.bias.data() : nullptr;
  std::vector<float> cols(static_cast<std::size_t>(kernels::conv2d_cols_size(d)));
  Tensor y(t.dy.shape()), y_ref(t.dy.shape());
  kernels::conv2d_forward(d, t.x.data(), t.kernel.data(), bias, cols.data(), y.data());
  kernels::reference::conv2d_forward(d, t.x.data(), t.kernel.data(), bias, y_ref.data());
  test::expect_close(y, y_ref, 1e-5, 1e-5);

  Tensor dx(t.x.shape()), dk(t.kernel.shape()), db(t.bias.shape());
  Tensor dx_ref(t.x.shape()), dk_ref(t.kernel.shape()), db_ref(t.bias.shape());
  std::vector<float> dcols(cols.size());
  kernels::conv2d_backward(d, t.dy.data(), t.kernel.data(), cols.data(), dcols.data(), dx.data(),
                           dk.data(), db.data());
  // cols is left intact: a second backward gives the same gradients.
  Tensor dk2(t.kernel.shape());
  kernels::conv2d_backward(d, t.dy.data(), t.kernel.data(), cols.data(), dcols.data(), nullptr,
                           dk2.data(), nullptr);
  EXPECT_TRUE(test::bitwise_equal(dk2, dk));
  kernels::reference::conv2d_backward(d, t.x.data(), t.dy.data(), t.kernel.data(), dx_ref.data(),
                                      dk_ref.data(), db_ref.data());
  test::expect_close(dx, dx_ref, 1e-5, 1e-5);
  test::expect_close(dk, dk_ref, 1e-5, 1e-4);
  test::expect_close(db, db_ref, 1e-5, 1e-5);
}

// run(data, y, dx, dkernel, dbias) at 1, 2 and 3 threads: the four results bit for bit alike.
template <class Run>
void expect_same_bits_at_one_two_and_three_threads(const ConvCase& c, Run run) {
  const int saved = num_threads();
  std::vector<Tensor> results;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    ConvData t = make_data(c);
    Tensor y(t.dy.shape()), dx(t.x.shape()), dk(t.kernel.shape()), db(t.bias.shape());
    run(t, y, dx, dk, db);
    for (Tensor* r : {&y, &dx, &dk, &db}) results.push_back(*r);
  }
  set_num_threads(saved);
  for (std::size_t i = 4; i < results.size(); ++i) {
    EXPECT_TRUE(test::bitwise_equal(results[i], results[i % 4])) << "output " << i % 4;
  }
}

TEST_P(Conv2dKernelTest, SameBitsAtOneAndTwoThreads) {
  expect_same_bits_at_one_two_and_three_threads(GetParam(), [](ConvData& t, Tensor& y, Tensor& dx,
                                                               Tensor& dk, Tensor& db) {
    std::vector<float> cols(static_cast<std::size_t>(kernels::conv2d_cols_size(t.d)));
    kernels::conv2d_forward(t.d, t.x.data(), t.kernel.data(), t.bias.data(), cols.data(), y.data());
    std::vector<float> dcols(cols.size());
    kernels::conv2d_backward(t.d, t.dy.data(), t.kernel.data(), cols.data(), dcols.data(),
                             dx.data(), dk.data(), db.data());
  });
}

// The fast path: same cases, same reference, same tolerances. Where bnorm is built without
// oneDNN, prepare() must decline every shape (and the layer falls back to the path above).
TEST_P(Conv2dKernelTest, FastPathMatchesFloat64Reference) {
  const ConvCase& c = GetParam();
  ConvData t = make_data(c);
  const Conv2dDims& d = t.d;
  const float* bias = c.bias ? t.bias.data() : nullptr;
  kernels::Conv2dFast fast;
  const bool ready = fast.prepare(d, c.bias, true);
  if (!kernels::conv2d_fast_built_in()) {
    EXPECT_FALSE(ready);
    GTEST_SKIP() << "built without oneDNN";
  }
  ASSERT_TRUE(ready) << "oneDNN declined " << c.name;
  Tensor y(t.dy.shape()), y_ref(t.dy.shape());
  fast.forward(t.x.data(), t.kernel.data(), bias, y.data());
  kernels::reference::conv2d_forward(d, t.x.data(), t.kernel.data(), bias, y_ref.data());
  test::expect_close(y, y_ref, 1e-5, 1e-5);

  Tensor dx(t.x.shape()), dk(t.kernel.shape()), db(t.bias.shape());
  Tensor dx_ref(t.x.shape()), dk_ref(t.kernel.shape()), db_ref(t.bias.shape());
  fast.backward(t.x.data(), t.dy.data(), t.kernel.data(), dx.data(), dk.data(),
                c.bias ? db.data() : nullptr);
  kernels::reference::conv2d_backward(d, t.x.data(), t.dy.data(), t.kernel.data(), dx_ref.data(),
                                      dk_ref.data(), db_ref.data());
  test::expect_close(dx, dx_ref, 1e-5, 1e-5);
  test::expect_close(dk, dk_ref, 1e-5, 1e-4);
  if (c.bias) test::expect_close(db, db_ref, 1e-5, 1e-5);
  // Backward can be repeated, and each gradient alone is the same as all three together.
  Tensor dk2(t.kernel.shape()), dx2(t.x.shape());
  fast.backward(t.x.data(), t.dy.data(), t.kernel.data(), nullptr, dk2.data(), nullptr);
  fast.backward(t.x.data(), t.dy.data(), t.kernel.data(), dx2.data(), nullptr, nullptr);
  EXPECT_TRUE(test::bitwise_equal(dk2, dk));
  EXPECT_TRUE(test::bitwise_equal(dx2, dx));

  // The inference setup gives the training forward's bits.
  kernels::Conv2dFast infer;
  ASSERT_TRUE(infer.prepare(d, c.bias, false));
  Tensor y_infer(t.dy.shape());
  infer.forward(t.x.data(), t.kernel.data(), bias, y_infer.data());
  EXPECT_TRUE(test::bitwise_equal(y_infer, y));
  // The per-chunk epilogue gives the bits of a separate activation pass over y.
  for (ActivationKind kind :
       {ActivationKind::relu, ActivationKind::softmax, ActivationKind::gelu}) {
    Tensor fused(t.dy.shape()), separate(t.dy.shape());
    infer.forward(t.x.data(), t.kernel.data(), bias, fused.data(), kind);
    kernels::activation_forward(kind, y.size() / c.filters, c.filters, y.data(), separate.data());
    EXPECT_TRUE(test::bitwise_equal(fused, separate)) << static_cast<int>(kind);
  }
}

TEST_P(Conv2dKernelTest, FastPathSameBitsAtOneTwoAndThreeThreads) {
  if (!kernels::conv2d_fast_built_in()) GTEST_SKIP() << "built without oneDNN";
  expect_same_bits_at_one_two_and_three_threads(
      GetParam(), [](ConvData& t, Tensor& y, Tensor& dx, Tensor& dk, Tensor& db) {
        kernels::Conv2dFast fast;  // set up at this thread count
        ASSERT_TRUE(fast.prepare(t.d, true, true));
        fast.forward(t.x.data(), t.kernel.data(), t.bias.data(), y.data());
        fast.backward(t.x.data(), t.dy.data(), t.kernel.data(), dx.data(), dk.data(), db.data());
      });
}

std::string case_name(const ::testing::TestParamInfo<ConvCase>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(
    Shapes, Conv2dKernelTest,
    ::testing::Values(ConvCase{"k3_valid", 2, 5, 6, 3, 3, 3, 4},
                      ConvCase{"k3_same", 2, 5, 6, 3, 3, 3, 4, 1, 1, true},
                      ConvCase{"k3_same_stride2_odd", 2, 7, 5, 2, 3, 3, 3, 2, 1, true},
                      ConvCase{"k3_valid_stride2", 3, 7, 8, 2, 3, 3, 5, 2, 1, false},
                      ConvCase{"k2_same_even_kernel", 2, 5, 4, 2, 2, 2, 3, 1, 1, true},
                      ConvCase{"k4x2_same_stride2", 2, 6, 7, 2, 4, 2, 3, 2, 1, true},
                      ConvCase{"k3_dilation2_valid", 2, 8, 7, 2, 3, 3, 3, 1, 2, false},
                      ConvCase{"k3_dilation2_same", 2, 6, 7, 2, 3, 3, 3, 1, 2, true},
                      ConvCase{"k1_pointwise_nobias", 2, 4, 4, 5, 1, 1, 6, 1, 1, false, false},
                      ConvCase{"k5_on_5_valid", 2, 5, 5, 1, 5, 5, 2},
                      ConvCase{"many_samples_chunked", 9, 3, 3, 2, 3, 3, 2, 1, 1, true},
                      ConvCase{"wide_channels", 2, 6, 6, 40, 3, 3, 70, 1, 1, true},
                      // 16x16 outputs: the fast path's chunks of 4 samples, and a last one of 3.
                      ConvCase{"chunks_with_a_shorter_last", 7, 16, 16, 3, 3, 3, 8, 1, 1, true},
                      ConvCase{"chunks_stride2_nobias", 9, 32, 30, 4, 3, 3, 16, 2, 1, true, false}),
    case_name);

TEST(Conv2dGeometry, MatchesKerasFormulas) {
  // valid: floor((in - dilation*(k-1) - 1) / stride) + 1.
  EXPECT_EQ(kernels::conv_axis_geometry(28, 3, 1, 1, false).out, 26);
  EXPECT_EQ(kernels::conv_axis_geometry(28, 3, 2, 1, false).out, 13);
  EXPECT_EQ(kernels::conv_axis_geometry(7, 3, 1, 2, false).out, 3);
  EXPECT_EQ(kernels::conv_axis_geometry(3, 5, 1, 1, false).out, 0);  // kernel larger than input
  // same: ceil(in / stride), TF puts the odd padding row after.
  auto g = kernels::conv_axis_geometry(28, 3, 1, 1, true);
  EXPECT_EQ(g.out, 28);
  EXPECT_EQ(g.pad_before, 1);
  g = kernels::conv_axis_geometry(28, 2, 1, 1, true);  // total pad 1: 0 before, 1 after
  EXPECT_EQ(g.out, 28);
  EXPECT_EQ(g.pad_before, 0);
  g = kernels::conv_axis_geometry(7, 3, 2, 1, true);  // out 4, total (3*2+3-7)=2
  EXPECT_EQ(g.out, 4);
  EXPECT_EQ(g.pad_before, 1);
  g = kernels::conv_axis_geometry(6, 3, 2, 1, true);  // out 3, total (2*2+3-6)=1 -> 0 before
  EXPECT_EQ(g.out, 3);
  EXPECT_EQ(g.pad_before, 0);
  g = kernels::conv_axis_geometry(5, 3, 1, 2, true);  // dilated span 5: total 4
  EXPECT_EQ(g.out, 5);
  EXPECT_EQ(g.pad_before, 2);
}

TEST(Conv2dLayout, TransposesRoundTrip) {
  Random rng(3);
  const Tensor x = test::random_uniform(Shape{3, 4, 5}, rng);  // (N, C, spatial)
  Tensor last(x.shape()), back(x.shape());
  kernels::transpose_channels_first_to_last(3, 4, 5, x.data(), last.data());
  EXPECT_EQ(last[(1 * 5 + 2) * 4 + 3], x[(1 * 4 + 3) * 5 + 2]);
  kernels::transpose_channels_last_to_first(3, 4, 5, last.data(), back.data());
  EXPECT_TRUE(test::bitwise_equal(back, x));
}

}  // namespace
}  // namespace bnorm
