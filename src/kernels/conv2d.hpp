// src/kernels/conv2d.hpp — stateless 2-D convolution over NHWC float32 memory (Keras Conv2D).
//
// x is (batch, in_h, in_w, in_c), the kernel is Keras's (kernel_h, kernel_w, in_c, filters),
// y is (batch, out_h, out_w, filters):
//   y[n, oh, ow, f] = bias[f] + sum_{i, j, c} x[n, oh*sh - pad_top + i*dh, ow*sw - pad_left + j*dw,
//   c]
//                                             * kernel[i, j, c, f]
// with out-of-range input positions reading as 0 (zero padding). This is a cross-correlation,
// as Keras/TensorFlow compute it (no kernel flip).
//
// The fast path lowers the convolution to a GEMM (im2col): each output position's receptive
// field is copied into one row of `cols`, (batch*out_h*out_w) x (kernel_h*kernel_w*in_c), in
// (i, j, c) order, which is exactly the row-major flattening of the Keras kernel's first three
// axes, so y = cols @ kernel[K, filters] with no reordering of the weights.
//
// Every kernel is noexcept, allocates nothing and assumes valid arguments: the layer validates
// and owns the `cols` workspace (conv2d_cols_size floats). Samples are processed in chunks whose
// size depends only on the shape (never on the thread count), and every chunk writes its own
// rows, so results are bitwise identical at any thread count.
#pragma once

#include <cstdint>

namespace bnorm::kernels {

struct Conv2dDims {
  std::int64_t batch = 1;
  std::int64_t in_h = 0, in_w = 0, in_c = 0;
  std::int64_t kernel_h = 1, kernel_w = 1, filters = 0;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t dilation_h = 1, dilation_w = 1;
  std::int64_t pad_top = 0, pad_left = 0;  // zero rows/columns before the input
  std::int64_t out_h = 0, out_w = 0;
  std::int64_t patch() const noexcept { return kernel_h * kernel_w * in_c; }  // K of the GEMM
  std::int64_t out_positions() const noexcept { return out_h * out_w; }       // per sample
  std::int64_t x_size() const noexcept { return batch * in_h * in_w * in_c; }
  std::int64_t y_size() const noexcept { return batch * out_h * out_w * filters; }
  std::int64_t kernel_size() const noexcept { return patch() * filters; }
  bool operator==(const Conv2dDims&) const = default;
};

// Keras/TensorFlow output size and leading pad of one spatial axis.
//   valid: out = floor((in - dilation*(kernel-1) - 1) / stride) + 1, no padding (out <= 0 when
//          the dilated kernel is larger than the input: the caller reports it);
//   same:  out = ceil(in / stride); total = max((out-1)*stride + dilation*(kernel-1) + 1 - in, 0),
//          pad_before = floor(total / 2) (the extra row/column goes after, as in TensorFlow).
struct AxisGeometry {
  std::int64_t out = 0;
  std::int64_t pad_before = 0;
};
AxisGeometry conv_axis_geometry(std::int64_t in, std::int64_t kernel, std::int64_t stride,
                                std::int64_t dilation, bool same_padding) noexcept;

// Floats of the im2col workspace: batch * out_h * out_w * patch.
std::int64_t conv2d_cols_size(const Conv2dDims& d) noexcept;

// cols = im2col(x); y = cols @ kernel + bias (bias may be null). `cols` is kept by the caller for
// conv2d_backward.
void conv2d_forward(const Conv2dDims& d, const float* x, const float* kernel, const float* bias,
                    float* cols, float* y) noexcept;

// Gradients given dy and the `cols` of the forward on the same x:
//   dkernel = cols^T @ dy, dbias = sum of dy over (batch, out_h, out_w),
//   dx = col2im(dy @ kernel^T) (each patch gradient added back where the patch came from).
// dkernel, dbias and dx may each be null to skip them. `dcols` (conv2d_cols_size floats) is the
// workspace for dy @ kernel^T, used only when dx is computed; `cols` is left intact, so backward
// can be repeated after one forward.
void conv2d_backward(const Conv2dDims& d, const float* dy, const float* kernel, const float* cols,
                     float* dcols, float* dx, float* dkernel, float* dbias) noexcept;

// The GEMM halves of a convolution over rows of patches (conv2d's im2col rows; the pixels of a
// 1x1 pointwise convolution), with a (rows x k) and the kernel read as (k x f):
//   rows_times_kernel:    y = a @ kernel + bias (bias may be null);
//   rows_kernel_gradient: dkernel = a^T @ dy, in parallel blocks of kernel rows, each a whole
//                         sum, so the bits do not depend on the thread count;
//   rows_input_gradient:  da = dy @ kernel^T.
void rows_times_kernel(std::int64_t rows, std::int64_t k, std::int64_t f, const float* a,
                       const float* kernel, const float* bias, float* y) noexcept;
void rows_kernel_gradient(std::int64_t rows, std::int64_t k, std::int64_t f, const float* a,
                          const float* dy, float* dkernel) noexcept;
void rows_input_gradient(std::int64_t rows, std::int64_t k, std::int64_t f, const float* dy,
                         const float* kernel, float* da) noexcept;

// (batch, channels, spatial) <-> (batch, spatial, channels) copies, for channels_first layers
// that run the NHWC kernels (spatial = height * width).
void transpose_channels_first_to_last(std::int64_t batch, std::int64_t channels,
                                      std::int64_t spatial, const float* in, float* out) noexcept;
void transpose_channels_last_to_first(std::int64_t batch, std::int64_t channels,
                                      std::int64_t spatial, const float* in, float* out) noexcept;

// Direct convolution in float64 from the formula above: the specification the fast path is
// tested against.
namespace reference {
void conv2d_forward(const Conv2dDims& d, const float* x, const float* kernel, const float* bias,
                    float* y) noexcept;
void conv2d_backward(const Conv2dDims& d, const float* x, const float* dy, const float* kernel,
                     float* dx, float* dkernel, float* dbias) noexcept;
}  // namespace reference

}  // namespace bnorm::kernels
