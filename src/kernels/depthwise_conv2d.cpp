#include "kernels/depthwise_conv2d.hpp"

#include <algorithm>

#include "bnorm/core/parallel.hpp"
#include "kernels/conv2d.hpp"
#include "kernels/gemm.hpp"
#include "kernels/window.hpp"

namespace bnorm::kernels {

namespace {

// Samples per chunk: about kTargetValues output values per chunk; depends on the shape only.
constexpr std::int64_t kTargetValues = std::int64_t{1} << 15;
std::int64_t sample_grain(std::int64_t values_per_sample) noexcept {
  return std::max<std::int64_t>(1, kTargetValues / std::max<std::int64_t>(1, values_per_sample));
}

// Output channels per dkernel work unit: float64 accumulators held on the stack.
constexpr std::int64_t kChannelBlock = 256;

// GEMM rows per chunk of the pointwise convolution (as conv2d's chunks of samples).
constexpr std::int64_t kPointwiseRows = 2048;

// out[c*M + m] += xv[c] * kv[c*M + m] over output channels [0, OC).
inline void multiply_add(std::int64_t in_c, std::int64_t M, const float* __restrict xv,
                         const float* __restrict kv, float* __restrict out) noexcept {
  if (M == 1) {
    for (std::int64_t c = 0; c < in_c; ++c) out[c] += xv[c] * kv[c];
    return;
  }
  for (std::int64_t c = 0; c < in_c; ++c) {
    const float xc = xv[c];
    for (std::int64_t m = 0; m < M; ++m) out[c * M + m] += xc * kv[c * M + m];
  }
}

}  // namespace

void depthwise_conv2d_forward(const DepthwiseConv2dDims& d, const float* x, const float* kernel,
                              const float* bias, float* y) noexcept {
  const std::int64_t C = d.in_c, M = d.depth_multiplier, OC = d.out_c();
  const std::int64_t grain = sample_grain(d.out_h * d.out_w * OC);
  parallel_for(d.batch, grain, [&](std::int64_t n0, std::int64_t n1) {
    window::for_each_output(d, n0, n1, [&](std::int64_t n, std::int64_t oh, std::int64_t ow) {
      float* out = y + window::output_pixel(d, n, oh, ow) * OC;
      if (bias) {
        std::copy(bias, bias + OC, out);
      } else {
        std::fill(out, out + OC, 0.0f);
      }
      window::for_each_tap(d, oh, ow,
                           [&](std::int64_t i, std::int64_t j, std::int64_t ih, std::int64_t iw) {
                             multiply_add(C, M, x + window::input_pixel(d, n, ih, iw) * C,
                                          kernel + (i * d.kernel_w + j) * OC, out);
                           });
    });
  });
}

void depthwise_conv2d_backward(const DepthwiseConv2dDims& d, const float* x, const float* dy,
                               const float* kernel, float* dx, float* dkernel,
                               float* dbias) noexcept {
  const std::int64_t C = d.in_c, M = d.depth_multiplier, OC = d.out_c();
  if (dbias) sum_rows(d.batch * d.out_h * d.out_w, OC, dy, dbias);
  if (dkernel) {
    // One unit = one kernel tap and one block of output channels, summed over every sample and
    // output position in a fixed order.
    const std::int64_t blocks = (OC + kChannelBlock - 1) / kChannelBlock;
    const std::int64_t taps = d.kernel_h * d.kernel_w;
    parallel_for(taps * blocks, 1, [&](std::int64_t u0, std::int64_t u1) {
      for (std::int64_t u = u0; u < u1; ++u) {
        const std::int64_t tap = u / blocks, i = tap / d.kernel_w, j = tap % d.kernel_w;
        const std::int64_t o0 = (u % blocks) * kChannelBlock;
        const std::int64_t o1 = std::min(o0 + kChannelBlock, OC), no = o1 - o0;
        double acc[kChannelBlock] = {};
        window::for_each_position_of_tap(
            d, i, j,
            [&](std::int64_t n, std::int64_t oh, std::int64_t ow, std::int64_t ih,
                std::int64_t iw) {
              const float* xv = x + window::input_pixel(d, n, ih, iw) * C;
              const float* g = dy + window::output_pixel(d, n, oh, ow) * OC + o0;
              if (M == 1) {
                for (std::int64_t k = 0; k < no; ++k)
                  acc[k] += static_cast<double>(xv[o0 + k]) * g[k];
              } else {
                // Output channels o = c*M + m of this block, grouped by input channel c.
                for (std::int64_t o = o0; o < o1;) {
                  const std::int64_t c = o / M, end = std::min((c + 1) * M, o1);
                  const double xc = xv[c];
                  for (; o < end; ++o) acc[o - o0] += xc * g[o - o0];
                }
              }
            });
        float* out = dkernel + tap * OC + o0;
        for (std::int64_t k = 0; k < no; ++k) out[k] = static_cast<float>(acc[k]);
      }
    });
  }
  if (dx) {
    const std::int64_t sample = d.in_h * d.in_w * C;
    const std::int64_t grain = sample_grain(d.out_h * d.out_w * OC);
    parallel_for(d.batch, grain, [&](std::int64_t n0, std::int64_t n1) {
      std::fill(dx + n0 * sample, dx + n1 * sample, 0.0f);
      window::for_each_output(d, n0, n1, [&](std::int64_t n, std::int64_t oh, std::int64_t ow) {
        const float* g = dy + window::output_pixel(d, n, oh, ow) * OC;
        window::for_each_tap(d, oh, ow,
                             [&](std::int64_t i, std::int64_t j, std::int64_t ih, std::int64_t iw) {
                               const float* __restrict kv = kernel + (i * d.kernel_w + j) * OC;
                               float* __restrict out = dx + window::input_pixel(d, n, ih, iw) * C;
                               if (M == 1) {
                                 for (std::int64_t c = 0; c < C; ++c) out[c] += g[c] * kv[c];
                               } else {
                                 for (std::int64_t c = 0; c < C; ++c) {
                                   float s = 0.0f;
                                   for (std::int64_t m = 0; m < M; ++m)
                                     s += g[c * M + m] * kv[c * M + m];
                                   out[c] += s;
                                 }
                               }
                             });
      });
    });
  }
}

void pointwise_conv_forward(std::int64_t rows, std::int64_t channels, std::int64_t filters,
                            const float* mid, const float* pointwise, const float* bias,
                            float* y) noexcept {
  const std::int64_t K = channels, F = filters;
  parallel_for(rows, kPointwiseRows, [&](std::int64_t r0, std::int64_t r1) {
    rows_times_kernel(r1 - r0, K, F, mid + r0 * K, pointwise, bias, y + r0 * F);
  });
}

void pointwise_conv_backward(std::int64_t rows, std::int64_t channels, std::int64_t filters,
                             const float* mid, const float* dy, const float* pointwise, float* dmid,
                             float* dpointwise, float* dbias) noexcept {
  const std::int64_t K = channels, F = filters;
  if (dbias) sum_rows(rows, F, dy, dbias);
  if (dpointwise) rows_kernel_gradient(rows, K, F, mid, dy, dpointwise);
  if (dmid) {
    parallel_for(rows, kPointwiseRows, [&](std::int64_t r0, std::int64_t r1) {
      rows_input_gradient(r1 - r0, K, F, dy + r0 * F, pointwise, dmid + r0 * K);
    });
  }
}

namespace reference {

namespace {
std::int64_t x_index(const DepthwiseConv2dDims& d, std::int64_t n, std::int64_t h, std::int64_t w,
                     std::int64_t c) {
  return window::input_pixel(d, n, h, w) * d.in_c + c;
}
std::int64_t y_index(const DepthwiseConv2dDims& d, std::int64_t n, std::int64_t oh, std::int64_t ow,
                     std::int64_t o) {
  return window::output_pixel(d, n, oh, ow) * d.out_c() + o;
}
std::int64_t k_index(const DepthwiseConv2dDims& d, std::int64_t i, std::int64_t j, std::int64_t c,
                     std::int64_t m) {
  return ((i * d.kernel_w + j) * d.in_c + c) * d.depth_multiplier + m;
}
}  // namespace

void depthwise_conv2d_forward(const DepthwiseConv2dDims& d, const float* x, const float* kernel,
                              const float* bias, float* y) noexcept {
  const std::int64_t M = d.depth_multiplier;
  window::for_each_output(d, 0, d.batch, [&](std::int64_t n, std::int64_t oh, std::int64_t ow) {
    for (std::int64_t c = 0; c < d.in_c; ++c)
      for (std::int64_t m = 0; m < M; ++m) {
        double acc = bias ? bias[c * M + m] : 0.0;
        window::for_each_tap(
            d, oh, ow, [&](std::int64_t i, std::int64_t j, std::int64_t ih, std::int64_t iw) {
              acc +=
                  static_cast<double>(x[x_index(d, n, ih, iw, c)]) * kernel[k_index(d, i, j, c, m)];
            });
        y[y_index(d, n, oh, ow, c * M + m)] = static_cast<float>(acc);
      }
  });
}

void depthwise_conv2d_backward(const DepthwiseConv2dDims& d, const float* x, const float* dy,
                               const float* kernel, float* dx, float* dkernel,
                               float* dbias) noexcept {
  const std::int64_t M = d.depth_multiplier;
  if (dbias) {
    for (std::int64_t o = 0; o < d.out_c(); ++o) {
      double acc = 0.0;
      window::for_each_output(d, 0, d.batch, [&](std::int64_t n, std::int64_t oh, std::int64_t ow) {
        acc += dy[y_index(d, n, oh, ow, o)];
      });
      dbias[o] = static_cast<float>(acc);
    }
  }
  if (dkernel) {
    window::for_each_tap_channel(d, [&](std::int64_t i, std::int64_t j, std::int64_t c) {
      for (std::int64_t m = 0; m < M; ++m) {
        double acc = 0.0;
        window::for_each_position_of_tap(d, i, j,
                                         [&](std::int64_t n, std::int64_t oh, std::int64_t ow,
                                             std::int64_t ih, std::int64_t iw) {
                                           acc += static_cast<double>(x[x_index(d, n, ih, iw, c)]) *
                                                  dy[y_index(d, n, oh, ow, c * M + m)];
                                         });
        dkernel[k_index(d, i, j, c, m)] = static_cast<float>(acc);
      }
    });
  }
  if (dx) {
    // dx[n, ih, iw, c] gathers every (output position, tap) that read it.
    window::for_each_input(
        d, [&](std::int64_t n, std::int64_t ih, std::int64_t iw, std::int64_t c) {
          double acc = 0.0;
          window::for_each_reader(
              d, ih, iw, [&](std::int64_t i, std::int64_t j, std::int64_t oh, std::int64_t ow) {
                for (std::int64_t m = 0; m < M; ++m) {
                  acc += static_cast<double>(dy[y_index(d, n, oh, ow, c * M + m)]) *
                         kernel[k_index(d, i, j, c, m)];
                }
              });
          dx[x_index(d, n, ih, iw, c)] = static_cast<float>(acc);
        });
  }
}

}  // namespace reference

}  // namespace bnorm::kernels
