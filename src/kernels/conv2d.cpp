#include "kernels/conv2d.hpp"

#include <algorithm>

#include "bnorm/core/parallel.hpp"
#include "kernels/gemm.hpp"

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
  for (std::int64_t n = n0; n < n1; ++n) {
    const float* xn = x + n * d.in_h * d.in_w * d.in_c;
    for (std::int64_t oh = 0; oh < d.out_h; ++oh) {
      for (std::int64_t ow = 0; ow < d.out_w; ++ow) {
        float* row = cols + ((n * d.out_h + oh) * d.out_w + ow) * K;
        for (std::int64_t i = 0; i < d.kernel_h; ++i) {
          float* dst = row + i * row_len;
          const std::int64_t ih = oh * d.stride_h - d.pad_top + i * d.dilation_h;
          if (ih < 0 || ih >= d.in_h) {
            std::fill(dst, dst + row_len, 0.0f);
            continue;
          }
          const float* xrow = xn + ih * d.in_w * d.in_c;
          for (std::int64_t j = 0; j < d.kernel_w; ++j) {
            const std::int64_t iw = ow * d.stride_w - d.pad_left + j * d.dilation_w;
            float* out = dst + j * d.in_c;
            if (iw < 0 || iw >= d.in_w) {
              std::fill(out, out + d.in_c, 0.0f);
            } else {
              std::copy(xrow + iw * d.in_c, xrow + (iw + 1) * d.in_c, out);
            }
          }
        }
      }
    }
  }
}

// dx for samples [n0, n1) = the sum of every patch row of dcols added back where it came from.
void col2im(const Conv2dDims& d, std::int64_t n0, std::int64_t n1, const float* dcols,
            float* dx) noexcept {
  const std::int64_t K = d.patch(), sample = d.in_h * d.in_w * d.in_c;
  std::fill(dx + n0 * sample, dx + n1 * sample, 0.0f);
  for (std::int64_t n = n0; n < n1; ++n) {
    float* dxn = dx + n * sample;
    for (std::int64_t oh = 0; oh < d.out_h; ++oh) {
      for (std::int64_t ow = 0; ow < d.out_w; ++ow) {
        const float* row = dcols + ((n * d.out_h + oh) * d.out_w + ow) * K;
        for (std::int64_t i = 0; i < d.kernel_h; ++i) {
          const std::int64_t ih = oh * d.stride_h - d.pad_top + i * d.dilation_h;
          if (ih < 0 || ih >= d.in_h) continue;
          for (std::int64_t j = 0; j < d.kernel_w; ++j) {
            const std::int64_t iw = ow * d.stride_w - d.pad_left + j * d.dilation_w;
            if (iw < 0 || iw >= d.in_w) continue;
            const float* src = row + (i * d.kernel_w + j) * d.in_c;
            float* out = dxn + (ih * d.in_w + iw) * d.in_c;
            for (std::int64_t c = 0; c < d.in_c; ++c) out[c] += src[c];
          }
        }
      }
    }
  }
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

void conv2d_forward(const Conv2dDims& d, const float* x, const float* kernel, const float* bias,
                    float* cols, float* y) noexcept {
  const std::int64_t K = d.patch(), F = d.filters, P = d.out_positions();
  parallel_for(d.batch, sample_grain(d), [&](std::int64_t n0, std::int64_t n1) {
    im2col(d, n0, n1, x, cols);
    const std::int64_t r0 = n0 * P, rows = (n1 - n0) * P;
    float* yc = y + r0 * F;
    if (bias) {
      for (std::int64_t r = 0; r < rows; ++r) std::copy(bias, bias + F, yc + r * F);
    }
    gemm({rows, F, K}, false, false, 1.0f, cols + r0 * K, K, kernel, F, bias ? 1.0f : 0.0f, yc, F);
  });
}

void conv2d_backward(const Conv2dDims& d, const float* dy, const float* kernel, const float* cols,
                     float* dcols, float* dx, float* dkernel, float* dbias) noexcept {
  const std::int64_t K = d.patch(), F = d.filters, P = d.out_positions();
  const std::int64_t rows = d.batch * P;
  if (dbias) sum_rows(rows, F, dy, dbias);
  if (dkernel) {
    // dkernel[k0:k1, :] = cols[:, k0:k1]^T @ dy: blocks of kernel rows, each a whole sum.
    constexpr std::int64_t kRowBlock = 32;
    parallel_for(K, kRowBlock, [&](std::int64_t k0, std::int64_t k1) {
      gemm({k1 - k0, F, rows}, true, false, 1.0f, cols + k0, K, dy, F, 0.0f, dkernel + k0 * F, F);
    });
  }
  if (dx) {
    parallel_for(d.batch, sample_grain(d), [&](std::int64_t n0, std::int64_t n1) {
      const std::int64_t r0 = n0 * P;
      gemm({(n1 - n0) * P, K, F}, false, true, 1.0f, dy + r0 * F, F, kernel, F, 0.0f,
           dcols + r0 * K, K);
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

void conv2d_forward(const Conv2dDims& d, const float* x, const float* kernel, const float* bias,
                    float* y) noexcept {
  for (std::int64_t n = 0; n < d.batch; ++n)
    for (std::int64_t oh = 0; oh < d.out_h; ++oh)
      for (std::int64_t ow = 0; ow < d.out_w; ++ow)
        for (std::int64_t f = 0; f < d.filters; ++f) {
          double acc = bias ? bias[f] : 0.0;
          for (std::int64_t i = 0; i < d.kernel_h; ++i) {
            const std::int64_t ih = oh * d.stride_h - d.pad_top + i * d.dilation_h;
            if (ih < 0 || ih >= d.in_h) continue;
            for (std::int64_t j = 0; j < d.kernel_w; ++j) {
              const std::int64_t iw = ow * d.stride_w - d.pad_left + j * d.dilation_w;
              if (iw < 0 || iw >= d.in_w) continue;
              for (std::int64_t c = 0; c < d.in_c; ++c) {
                acc += static_cast<double>(x[((n * d.in_h + ih) * d.in_w + iw) * d.in_c + c]) *
                       kernel[((i * d.kernel_w + j) * d.in_c + c) * d.filters + f];
              }
            }
          }
          y[((n * d.out_h + oh) * d.out_w + ow) * d.filters + f] = static_cast<float>(acc);
        }
}

void conv2d_backward(const Conv2dDims& d, const float* x, const float* dy, const float* kernel,
                     float* dx, float* dkernel, float* dbias) noexcept {
  auto dy_at = [&](std::int64_t n, std::int64_t oh, std::int64_t ow, std::int64_t f) {
    return static_cast<double>(dy[((n * d.out_h + oh) * d.out_w + ow) * d.filters + f]);
  };
  if (dbias) {
    for (std::int64_t f = 0; f < d.filters; ++f) {
      double acc = 0.0;
      for (std::int64_t n = 0; n < d.batch; ++n)
        for (std::int64_t oh = 0; oh < d.out_h; ++oh)
          for (std::int64_t ow = 0; ow < d.out_w; ++ow) acc += dy_at(n, oh, ow, f);
      dbias[f] = static_cast<float>(acc);
    }
  }
  if (dkernel) {
    for (std::int64_t i = 0; i < d.kernel_h; ++i)
      for (std::int64_t j = 0; j < d.kernel_w; ++j)
        for (std::int64_t c = 0; c < d.in_c; ++c)
          for (std::int64_t f = 0; f < d.filters; ++f) {
            double acc = 0.0;
            for (std::int64_t n = 0; n < d.batch; ++n)
              for (std::int64_t oh = 0; oh < d.out_h; ++oh) {
                const std::int64_t ih = oh * d.stride_h - d.pad_top + i * d.dilation_h;
                if (ih < 0 || ih >= d.in_h) continue;
                for (std::int64_t ow = 0; ow < d.out_w; ++ow) {
                  const std::int64_t iw = ow * d.stride_w - d.pad_left + j * d.dilation_w;
                  if (iw < 0 || iw >= d.in_w) continue;
                  acc += static_cast<double>(x[((n * d.in_h + ih) * d.in_w + iw) * d.in_c + c]) *
                         dy_at(n, oh, ow, f);
                }
              }
            dkernel[((i * d.kernel_w + j) * d.in_c + c) * d.filters + f] = static_cast<float>(acc);
          }
  }
  if (dx) {
    // dx[n, ih, iw, c] gathers every (output position, kernel tap) that read it:
    // ih = oh*sh - pad_top + i*dh  <=>  oh = (ih + pad_top - i*dh) / sh when divisible.
    for (std::int64_t n = 0; n < d.batch; ++n)
      for (std::int64_t ih = 0; ih < d.in_h; ++ih)
        for (std::int64_t iw = 0; iw < d.in_w; ++iw)
          for (std::int64_t c = 0; c < d.in_c; ++c) {
            double acc = 0.0;
            for (std::int64_t i = 0; i < d.kernel_h; ++i) {
              const std::int64_t th = ih + d.pad_top - i * d.dilation_h;
              if (th < 0 || th % d.stride_h != 0 || th / d.stride_h >= d.out_h) continue;
              for (std::int64_t j = 0; j < d.kernel_w; ++j) {
                const std::int64_t tw = iw + d.pad_left - j * d.dilation_w;
                if (tw < 0 || tw % d.stride_w != 0 || tw / d.stride_w >= d.out_w) continue;
                for (std::int64_t f = 0; f < d.filters; ++f) {
                  acc += dy_at(n, th / d.stride_h, tw / d.stride_w, f) *
                         kernel[((i * d.kernel_w + j) * d.in_c + c) * d.filters + f];
                }
              }
            }
            dx[((n * d.in_h + ih) * d.in_w + iw) * d.in_c + c] = static_cast<float>(acc);
          }
  }
}

}  // namespace reference

}  // namespace bnorm::kernels
