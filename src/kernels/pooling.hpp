// src/kernels/pooling.hpp — stateless 2-D max/average pooling and global average pooling over
// NHWC float32 memory (Keras MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D).
//
// x is (batch, in_h, in_w, channels), y is (batch, out_h, out_w, channels). The window of output
// (oh, ow) covers rows oh*stride_h - pad_top + [0, pool_h) and columns likewise; positions outside
// the input are not part of the window (TensorFlow's 'same' padding): max ignores them and the
// average divides by the number of positions inside the input, never by pool_h * pool_w.
// Channels-first data (N, C, H, W) is the same computation with batch = N*C and channels = 1.
//
// Kernels are noexcept, allocate nothing, assume valid arguments (every window holds at least
// one input position); samples are split into fixed chunks, each writing only its own outputs,
// so results are identical at any thread count.
#pragma once

#include <cstdint>

namespace bnorm::kernels {

struct Pool2dDims {
  std::int64_t batch = 1;
  std::int64_t in_h = 0, in_w = 0, channels = 0;
  std::int64_t pool_h = 1, pool_w = 1;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t pad_top = 0, pad_left = 0;
  std::int64_t out_h = 0, out_w = 0;
  std::int64_t x_size() const noexcept { return batch * in_h * in_w * channels; }
  std::int64_t y_size() const noexcept { return batch * out_h * out_w * channels; }
};

// y = the maximum of each window, per channel.
void max_pool2d_forward(const Pool2dDims& d, const float* x, float* y) noexcept;
// dx = dy routed to the first maximum of each window (row-major scan order), as TensorFlow's
// MaxPoolGrad does for ties; the argmax is recomputed from x, not stored. Overlapping windows
// (stride < pool) add their contributions.
void max_pool2d_backward(const Pool2dDims& d, const float* x, const float* dy, float* dx) noexcept;

// y = the mean of each window over its positions inside the input.
void avg_pool2d_forward(const Pool2dDims& d, const float* x, float* y) noexcept;
// dx[p] = sum over windows containing p of dy / (that window's count).
void avg_pool2d_backward(const Pool2dDims& d, const float* dy, float* dx) noexcept;

// x viewed as (outer, spatial, channels): y[o, c] = mean over s of x[o, s, c] (float64 sums).
// Channels-last (N, H, W, C): outer = N, spatial = H*W; channels-first: outer = N*C, channels = 1.
void global_avg_pool_forward(std::int64_t outer, std::int64_t spatial, std::int64_t channels,
                             const float* x, float* y) noexcept;
// dx[o, s, c] = dy[o, c] / spatial.
void global_avg_pool_backward(std::int64_t outer, std::int64_t spatial, std::int64_t channels,
                              const float* dy, float* dx) noexcept;

// Scalar float64 specifications, one output element at a time.
namespace reference {
void max_pool2d_forward(const Pool2dDims& d, const float* x, float* y) noexcept;
void max_pool2d_backward(const Pool2dDims& d, const float* x, const float* dy, float* dx) noexcept;
void avg_pool2d_forward(const Pool2dDims& d, const float* x, float* y) noexcept;
void avg_pool2d_backward(const Pool2dDims& d, const float* dy, float* dx) noexcept;
void global_avg_pool_forward(std::int64_t outer, std::int64_t spatial, std::int64_t channels,
                             const float* x, float* y) noexcept;
void global_avg_pool_backward(std::int64_t outer, std::int64_t spatial, std::int64_t channels,
                              const float* dy, float* dx) noexcept;
}  // namespace reference

}  // namespace bnorm::kernels
