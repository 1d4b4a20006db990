// src/kernels/depthwise_conv2d.hpp — stateless depthwise 2-D convolution over NHWC float32 memory
// (Keras DepthwiseConv2D, and the first half of SeparableConv2D), plus the pointwise (1x1) GEMM
// that completes a separable convolution.
//
// x is (batch, in_h, in_w, in_c); the kernel is Keras's (kernel_h, kernel_w, in_c,
// depth_multiplier); y is (batch, out_h, out_w, in_c * depth_multiplier). Output channel
// o = c * depth_multiplier + m reads input channel c only (TensorFlow's depthwise_conv2d order):
//   y[n, oh, ow, c*M + m] = bias[c*M + m]
//       + sum_{i, j} x[n, oh*sh - pad_top + i*dh, ow*sw - pad_left + j*dw, c] * kernel[i, j, c, m]
// with out-of-range input positions reading as 0 (zero padding), no kernel flip. The kernel's last
// two axes flattened are exactly the output channel index, so tap (i, j) of the kernel is one
// contiguous vector of in_c * M values lined up with an output pixel: the loops run over that
// vector (there is no reduction over channels, hence no GEMM structure).
//
// Kernels are noexcept, allocate nothing and assume valid arguments (geometry from
// conv_axis_geometry in kernels/conv2d.hpp). Work is split by sample (forward, dx) or by
// (kernel tap, block of channels) (dkernel), each unit writing only its own outputs with a fixed
// summation order, so results are bitwise identical at any thread count.
#pragma once

#include <cstdint>

namespace bnorm::kernels {

struct DepthwiseConv2dDims {
  std::int64_t batch = 1;
  std::int64_t in_h = 0, in_w = 0, in_c = 0;
  std::int64_t kernel_h = 1, kernel_w = 1, depth_multiplier = 1;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t dilation_h = 1, dilation_w = 1;
  std::int64_t pad_top = 0, pad_left = 0;  // zero rows/columns before the input
  std::int64_t out_h = 0, out_w = 0;
  std::int64_t out_c() const noexcept { return in_c * depth_multiplier; }
  std::int64_t x_size() const noexcept { return batch * in_h * in_w * in_c; }
  std::int64_t y_size() const noexcept { return batch * out_h * out_w * out_c(); }
  std::int64_t kernel_size() const noexcept { return kernel_h * kernel_w * out_c(); }
};

// y = depthwise(x, kernel) + bias (bias may be null). Float32 accumulation, taps in row-major
// order.
void depthwise_conv2d_forward(const DepthwiseConv2dDims& d, const float* x, const float* kernel,
                              const float* bias, float* y) noexcept;

// Gradients given x and dy of a forward:
//   dkernel[i, j, c, m] = sum_{n, oh, ow} x[n, ih, iw, c] * dy[n, oh, ow, c*M + m] (float64 sums),
//   dbias[o] = sum_{n, oh, ow} dy[n, oh, ow, o] (float64 sums),
//   dx[n, ih, iw, c] = sum over (output position, tap) that read it of
//                      sum_m dy[n, oh, ow, c*M + m] * kernel[i, j, c, m].
// dx, dkernel and dbias may each be null to skip them.
void depthwise_conv2d_backward(const DepthwiseConv2dDims& d, const float* x, const float* dy,
                               const float* kernel, float* dx, float* dkernel,
                               float* dbias) noexcept;

// The pointwise half of SeparableConv2D: a 1x1 convolution over `rows` pixels is a GEMM,
//   y[r, f] = bias[f] + sum_k mid[r, k] * pointwise[k, f]
// with pointwise Keras's (1, 1, channels, filters) read as (channels, filters); bias may be null.
void pointwise_conv_forward(std::int64_t rows, std::int64_t channels, std::int64_t filters,
                            const float* mid, const float* pointwise, const float* bias,
                            float* y) noexcept;
// dpointwise = mid^T @ dy, dbias = column sums of dy (float64), dmid = dy @ pointwise^T; each
// output may be null to skip it.
void pointwise_conv_backward(std::int64_t rows, std::int64_t channels, std::int64_t filters,
                             const float* mid, const float* dy, const float* pointwise, float* dmid,
                             float* dpointwise, float* dbias) noexcept;

// Direct float64 evaluation of the formulas above, one output element at a time: the
// specification the fast path is tested against.
namespace reference {
void depthwise_conv2d_forward(const DepthwiseConv2dDims& d, const float* x, const float* kernel,
                              const float* bias, float* y) noexcept;
void depthwise_conv2d_backward(const DepthwiseConv2dDims& d, const float* x, const float* dy,
                               const float* kernel, float* dx, float* dkernel,
                               float* dbias) noexcept;
}  // namespace reference

}  // namespace bnorm::kernels
