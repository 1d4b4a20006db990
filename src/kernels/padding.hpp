// src/kernels/padding.hpp — stateless 2-D zero padding over NHWC float32 memory (Keras
// ZeroPadding2D).
//
// x is (batch, in_h, in_w, channels), y is (batch, top + in_h + bottom, left + in_w + right,
// channels):
//   y[n, h, w, c] = x[n, h - top, w - left, c] where that position is inside x, else 0,
// and the gradient is the crop dx[n, h, w, c] = dy[n, h + top, w + left, c].
// Channels-first data (N, C, H, W) is the same computation with batch = N*C and channels = 1.
//
// Kernels are noexcept, allocate nothing, assume valid arguments (pads >= 0); samples are split
// into fixed chunks, each writing only its own outputs (a copy: the same bits at any thread
// count).
#pragma once

#include <cstdint>

namespace bnorm::kernels {

struct ZeroPad2dDims {
  std::int64_t batch = 1;
  std::int64_t in_h = 0, in_w = 0, channels = 0;
  std::int64_t top = 0, bottom = 0, left = 0, right = 0;
  std::int64_t out_h() const noexcept { return top + in_h + bottom; }
  std::int64_t out_w() const noexcept { return left + in_w + right; }
  std::int64_t x_size() const noexcept { return batch * in_h * in_w * channels; }
  std::int64_t y_size() const noexcept { return batch * out_h() * out_w() * channels; }
};

// y = x surrounded by zeros.
void zero_pad2d_forward(const ZeroPad2dDims& d, const float* x, float* y) noexcept;
// dx = the interior of dy (the padding's gradient is dropped).
void zero_pad2d_backward(const ZeroPad2dDims& d, const float* dy, float* dx) noexcept;

// One output element at a time from the formulas above: the specification.
namespace reference {
void zero_pad2d_forward(const ZeroPad2dDims& d, const float* x, float* y) noexcept;
void zero_pad2d_backward(const ZeroPad2dDims& d, const float* dy, float* dx) noexcept;
}  // namespace reference

}  // namespace bnorm::kernels
