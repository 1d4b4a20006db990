#include "kernels/padding.hpp"

#include <algorithm>

#include "bnorm/core/parallel.hpp"

namespace bnorm::kernels {

namespace {
// Samples per chunk: about kTargetValues output values per chunk; depends on the shape only.
constexpr std::int64_t kTargetValues = std::int64_t{1} << 16;
std::int64_t sample_grain(const ZeroPad2dDims& d) noexcept {
  return std::max<std::int64_t>(
      1, kTargetValues / std::max<std::int64_t>(1, d.out_h() * d.out_w() * d.channels));
}
}  // namespace

void zero_pad2d_forward(const ZeroPad2dDims& d, const float* x, float* y) noexcept {
  const std::int64_t C = d.channels, row = d.in_w * C, out_row = d.out_w() * C;
  parallel_for(d.batch, sample_grain(d), [&](std::int64_t n0, std::int64_t n1) {
    for (std::int64_t n = n0; n < n1; ++n) {
      const float* xn = x + n * d.in_h * row;
      float* yn = y + n * d.out_h() * out_row;
      // Whole zero rows above and below; each interior row is left zeros, the copy, right zeros.
      std::fill(yn, yn + d.top * out_row, 0.0f);
      for (std::int64_t h = 0; h < d.in_h; ++h) {
        float* out = yn + (d.top + h) * out_row;
        std::fill(out, out + d.left * C, 0.0f);
        std::copy(xn + h * row, xn + (h + 1) * row, out + d.left * C);
        std::fill(out + d.left * C + row, out + out_row, 0.0f);
      }
      std::fill(yn + (d.top + d.in_h) * out_row, yn + d.out_h() * out_row, 0.0f);
    }
  });
}

void zero_pad2d_backward(const ZeroPad2dDims& d, const float* dy, float* dx) noexcept {
  const std::int64_t C = d.channels, row = d.in_w * C, out_row = d.out_w() * C;
  parallel_for(d.batch, sample_grain(d), [&](std::int64_t n0, std::int64_t n1) {
    for (std::int64_t n = n0; n < n1; ++n) {
      const float* g = dy + n * d.out_h() * out_row;
      float* dxn = dx + n * d.in_h * row;
      for (std::int64_t h = 0; h < d.in_h; ++h) {
        const float* src = g + (d.top + h) * out_row + d.left * C;
        std::copy(src, src + row, dxn + h * row);
      }
    }
  });
}

namespace reference {

void zero_pad2d_forward(const ZeroPad2dDims& d, const float* x, float* y) noexcept {
  for (std::int64_t n = 0; n < d.batch; ++n)
    for (std::int64_t h = 0; h < d.out_h(); ++h)
      for (std::int64_t w = 0; w < d.out_w(); ++w)
        for (std::int64_t c = 0; c < d.channels; ++c) {
          const std::int64_t ih = h - d.top, iw = w - d.left;
          const bool inside = ih >= 0 && ih < d.in_h && iw >= 0 && iw < d.in_w;
          y[((n * d.out_h() + h) * d.out_w() + w) * d.channels + c] =
              inside ? x[((n * d.in_h + ih) * d.in_w + iw) * d.channels + c] : 0.0f;
        }
}

void zero_pad2d_backward(const ZeroPad2dDims& d, const float* dy, float* dx) noexcept {
  for (std::int64_t n = 0; n < d.batch; ++n)
    for (std::int64_t h = 0; h < d.in_h; ++h)
      for (std::int64_t w = 0; w < d.in_w; ++w)
        for (std::int64_t c = 0; c < d.channels; ++c)
          dx[((n * d.in_h + h) * d.in_w + w) * d.channels + c] =
              dy[((n * d.out_h() + h + d.top) * d.out_w() + w + d.left) * d.channels + c];
}

}  // namespace reference

}  // namespace bnorm::kernels
