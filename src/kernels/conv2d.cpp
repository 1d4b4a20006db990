#include "kernels/conv2d.hpp"

#include <algorithm>

#include "bnorm/core/parallel.hpp"
#include "kernels/gemm.hpp"
#include "kernels/window.hpp"

namespace bnorm::kernels {

namespace {

// Samples per chunk: about kTargetRows GEMM rows, so that small images are batched into one
// BLAS call and large ones still split across threads. Depends on the shape only.
constexpr std::int64_t kTargetRows = 2048;
std::int64_t sample_grain(const Conv2dDims& d) noexcept {
  return std::max<std::int64_t>(1, kTargetRows / std::max<std::int64_t>(1, d.out_positions()));
}

// Rows [n0 * P, n1 * P) of cols for samples [n0, n1).
void im2col(const Conv2dDims& d, std::int64_t n0, std::int64_t n1, const float* x,
            float* cols) noexcept {
  const std::int64_t K = d.patch(), row_len = d.kernel_w * d.in_c;
  window::for_each_output(d, n0, n1, [&](std::int64_t n, std::int64_t oh, std::int64_t ow) {
    const float* xn = x + window::input_pixel(d, n, 0, 0) * d.in_c;
    float* row = cols + window::output_pixel(d, n, oh, ow) * K;
    for (std::int64_t i = 0; i < d.kernel_h; ++i) {
      float* dst = row + i * row_len;
      const std::int64_t ih = window::input_row(d, oh, i);
      if (ih < 0 || ih >= d.in_h) {
        std::fill(dst, dst + row_len, 0.0f);
        continue;
      }
      const float* xrow = xn + ih * d.in_w * d.in_c;
      for (std::int64_t j = 0; j < d.kernel_w; ++j) {
        const std::int64_t iw = window::input_col(d, ow, j);
        float* out = dst + j * d.in_c;
        if (iw < 0 || iw >= d.in_w) {
          std::fill(out, out + d.in_c, 0.0f);
        } else {
          std::copy(xrow + iw * d.in_c, xrow + (iw + 1) * d.in_c, out);
        }
      }
    }
  });
}

// dx for samples [n0, n1) = the sum of every patch row of dcols added back where it came from.
void col2im(const Conv2dDims& d, std::int64_t n0, std::int64_t n1, const float* dcols,
            float* dx) noexcept {
  const std::int64_t K = d.patch(), sample = d.in_h * d.in_w * d.in_c;
  std::fill(dx + n0 * sample, dx + n1 * sample, 0.0f);
  window::for_each_output(d, n0, n1, [&](std::int64_t n, std::int64_t oh, std::int64_t ow) {
    const float* row = dcols + window::output_pixel(d, n, oh, ow) * K;
    window::for_each_tap(d, oh, ow,
                         [&](std::int64_t i, std::int64_t j, std::int64_t ih, std::int64_t iw) {
                           const float* src = row + (i * d.kernel_w + j) * d.in_c;
                           float* out = dx + window::input_pixel(d, n, ih, iw) * d.in_c;
                           for (std::int64_t c = 0; c < d.in_c; ++c) out[c] += src[c];
                         });
  });
}

}  // namespace

AxisGeometry conv_axis_geometry(std::int64_t in, std::int64_t kernel, std::int64_t stride,
                                std::int64_t dilation, bool same_padding) noexcept {
  const std::int64_t span = dilation * (kernel - 1) + 1;
  if (!same_padding) {
    if (in < span) return {0, 0};
    return {(in - span) / stride + 1, 0};
  }
  const std::int64_t out = (in + stride - 1) / stride;
  const std::int64_t total = std::max<std::int64_t>((out - 1) * stride + span - in, 0);
  return {out, total / 2};
}

std::int64_t conv2d_cols_size(const Conv2dDims& d) noexcept {
  return d.batch * d.out_positions() * d.patch();
}

void rows_times_kernel(std::int64_t rows, std::int64_t k, std::int64_t f, const float* a,
                       const float* kernel, const float* bias, float* y) noexcept {
  if (bias) {
    for (std::int64_t r = 0; r < rows; ++r) std::copy(bias, bias + f, y + r * f);
  }
  gemm({rows, f, k}, false, false, 1.0f, a, k, kernel, f, bias ? 1.0f : 0.0f, y, f);
}

void rows_kernel_gradient(std::int64_t rows, std::int64_t k, std::int64_t f, const float* a,
                          const float* dy, float* dkernel) noexcept {
  // dkernel[k0:k1, :] = a[:, k0:k1]^T @ dy: blocks of kernel rows, each a whole sum.
  constexpr std::int64_t kRowBlock = 32;
  parallel_for(k, kRowBlock, [&](std::int64_t k0, std::int64_t k1) {
    gemm({k1 - k0, f, rows}, true, false, 1.0f, a + k0, k, dy, f, 0.0f, dkernel + k0 * f, f);
  });
}

void rows_input_gradient(std::int64_t rows, std::int64_t k, std::int64_t f, const float* dy,
                         const float* kernel, float* da) noexcept {
  gemm({rows, k, f}, false, true, 1.0f, dy, f, kernel, f, 0.0f, da, k);
}

void conv2d_forward(const Conv2dDims& d, const float* x, const float* kernel, const float* bias,
                    float* cols, float* y) noexcept {
  const std::int64_t K = d.patch(), F = d.filters, P = d.out_positions();
  parallel_for(d.batch, sample_grain(d), [&](std::int64_t n0, std::int64_t n1) {
    im2col(d, n0, n1, x, cols);
    const std::int64_t r0 = n0 * P;
    rows_times_kernel((n1 - n0) * P, K, F, cols + r0 * K, kernel, bias, y + r0 * F);
  });
}

void conv2d_backward(const Conv2dDims& d, const float* dy, const float* kernel, const float* cols,
                     float* dcols, float* dx, float* dkernel, float* dbias) noexcept {
  const std::int64_t K = d.patch(), F = d.filters, P = d.out_positions();
  const std::int64_t rows = d.batch * P;
  if (dbias) sum_rows(rows, F, dy, dbias);
  if (dkernel) rows_kernel_gradient(rows, K, F, cols, dy, dkernel);
  if (dx) {
    parallel_for(d.batch, sample_grain(d), [&](std::int64_t n0, std::int64_t n1) {
      const std::int64_t r0 = n0 * P;
      rows_input_gradient((n1 - n0) * P, K, F, dy + r0 * F, kernel, dcols + r0 * K);
      col2im(d, n0, n1, dcols, dx);
    });
  }
}

void transpose_channels_first_to_last(std::int64_t batch, std::int64_t channels,
                                      std::int64_t spatial, const float* in, float* out) noexcept {
  parallel_for(batch, 1, [&](std::int64_t n0, std::int64_t n1) {
    for (std::int64_t n = n0; n < n1; ++n) {
      const float* src = in + n * channels * spatial;
      float* dst = out + n * channels * spatial;
      for (std::int64_t c = 0; c < channels; ++c)
        for (std::int64_t s = 0; s < spatial; ++s) dst[s * channels + c] = src[c * spatial + s];
    }
  });
}

void transpose_channels_last_to_first(std::int64_t batch, std::int64_t channels,
                                      std::int64_t spatial, const float* in, float* out) noexcept {
  // Each sample is a spatial x channels matrix: the same transpose with the roles swapped.
  transpose_channels_first_to_last(batch, spatial, channels, in, out);
}

namespace reference {

namespace {
std::int64_t kernel_index(const Conv2dDims& d, std::int64_t i, std::int64_t j, std::int64_t c,
                          std::int64_t f) {
  return ((i * d.kernel_w + j) * d.in_c + c) * d.filters + f;
}
}  // namespace

void conv2d_forward(const Conv2dDims& d, const float* x, const float* kernel, const float* bias,
                    float* y) noexcept {
  window::for_each_output(d, 0, d.batch, [&](std::int64_t n, std::int64_t oh, std::int64_t ow) {
    for (std::int64_t f = 0; f < d.filters; ++f) {
      double acc = bias ? bias[f] : 0.0;
      window::for_each_tap(
          d, oh, ow, [&](std::int64_t i, std::int64_t j, std::int64_t ih, std::int64_t iw) {
            const float* xv = x + window::input_pixel(d, n, ih, iw) * d.in_c;
            for (std::int64_t c = 0; c < d.in_c; ++c) {
              acc += static_cast<double>(xv[c]) * kernel[kernel_index(d, i, j, c, f)];
            }
          });
      y[window::output_pixel(d, n, oh, ow) * d.filters + f] = static_cast<float>(acc);
    }
  });
}

void conv2d_backward(const Conv2dDims& d, const float* x, const float* dy, const float* kernel,
                     float* dx, float* dkernel, float* dbias) noexcept {
  auto dy_at = [&](std::int64_t n, std::int64_t oh, std::int64_t ow, std::int64_t f) {
    return static_cast<double>(dy[window::output_pixel(d, n, oh, ow) * d.filters + f]);
  };
  if (dbias) {
    for (std::int64_t f = 0; f < d.filters; ++f) {
      double acc = 0.0;
      window::for_each_output(d, 0, d.batch, [&](std::int64_t n, std::int64_t oh, std::int64_t ow) {
        acc += dy_at(n, oh, ow, f);
      });
      dbias[f] = static_cast<float>(acc);
    }
  }
  if (dkernel) {
    window::for_each_tap_channel(d, [&](std::int64_t i, std::int64_t j, std::int64_t c) {
      for (std::int64_t f = 0; f < d.filters; ++f) {
        double acc = 0.0;
        window::for_each_position_of_tap(
            d, i, j,
            [&](std::int64_t n, std::int64_t oh, std::int64_t ow, std::int64_t ih,
                std::int64_t iw) {
              acc += static_cast<double>(x[window::input_pixel(d, n, ih, iw) * d.in_c + c]) *
                     dy_at(n, oh, ow, f);
            });
        dkernel[kernel_index(d, i, j, c, f)] = static_cast<float>(acc);
      }
    });
  }
  if (dx) {
    // dx[n, ih, iw, c] gathers every (output position, kernel tap) that read it.
    window::for_each_input(
        d, [&](std::int64_t n, std::int64_t ih, std::int64_t iw, std::int64_t c) {
          double acc = 0.0;
          window::for_each_reader(
              d, ih, iw, [&](std::int64_t i, std::int64_t j, std::int64_t oh, std::int64_t ow) {
                for (std::int64_t f = 0; f < d.filters; ++f) {
                  acc += dy_at(n, oh, ow, f) * kernel[kernel_index(d, i, j, c, f)];
                }
              });
          dx[window::input_pixel(d, n, ih, iw) * d.in_c + c] = static_cast<float>(acc);
        });
  }
}

}  // namespace reference

}  // namespace bnorm::kernels
