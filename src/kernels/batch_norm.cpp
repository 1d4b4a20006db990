// Batch-norm kernels, the fast path. Two layouts:
//  - inner == 1 (channels last, Keras axis=-1): rows of `channels` values; each pass walks the
//    rows once and updates a block of per-channel accumulators, so loads are contiguous and the
//    inner loop vectorizes across channels.
//  - inner > 1 (channels first): each (outer, channel) pair is a contiguous run of `inner`
//    values, reduced per channel.
// Accumulation is float64 (sums of up to millions of float32 terms stay exact to ~1e-16), and
// channel blocks are independent, so the parallel split never changes a single bit.
#include "kernels/batch_norm.hpp"

#include <algorithm>
#include <cmath>

#include "bnorm/core/parallel.hpp"

namespace bnorm::kernels {

namespace {

constexpr std::int64_t kBlock = 128;                // channels per accumulator block (on the stack)
constexpr std::int64_t kParallelMinSize = 1 << 18;  // below this, threads cost more than they save

// Runs body(c0, c1) over channel blocks, in parallel for large tensors.
template <class Body>
void for_channel_blocks(const BatchNormDims& d, std::int64_t block, Body&& body) {
  if (d.size() < kParallelMinSize) {
    for (std::int64_t c0 = 0; c0 < d.channels; c0 += block)
      body(c0, std::min(d.channels, c0 + block));
  } else {
    parallel_for(d.channels, block, body);
  }
}

// ---- moments ----
void moments_rows(const BatchNormDims& d, const float* x, float* mean_out, float* var_out,
                  std::int64_t c0, std::int64_t c1) {
  const std::int64_t nc = c1 - c0, stride = d.channels, rows = d.outer;
  double sum[kBlock] = {}, m2[kBlock] = {}, mean[kBlock];
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * stride + c0;
    for (std::int64_t j = 0; j < nc; ++j) sum[j] += xr[j];
  }
  for (std::int64_t j = 0; j < nc; ++j) mean[j] = sum[j] / static_cast<double>(rows);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * stride + c0;
    for (std::int64_t j = 0; j < nc; ++j) {
      const double dev = xr[j] - mean[j];
      m2[j] += dev * dev;
    }
  }
  for (std::int64_t j = 0; j < nc; ++j) {
    mean_out[c0 + j] = static_cast<float>(mean[j]);
    var_out[c0 + j] = static_cast<float>(m2[j] / static_cast<double>(rows));
  }
}

void moments_planes(const BatchNormDims& d, const float* x, float* mean_out, float* var_out,
                    std::int64_t c0, std::int64_t c1) {
  const std::int64_t plane = d.channels * d.inner;
  const double n = static_cast<double>(d.count());
  for (std::int64_t c = c0; c < c1; ++c) {
    double sum = 0.0;
    for (std::int64_t o = 0; o < d.outer; ++o) {
      const float* xp = x + o * plane + c * d.inner;
      for (std::int64_t i = 0; i < d.inner; ++i) sum += xp[i];
    }
    const double mean = sum / n;
    double m2 = 0.0;
    for (std::int64_t o = 0; o < d.outer; ++o) {
      const float* xp = x + o * plane + c * d.inner;
      for (std::int64_t i = 0; i < d.inner; ++i) {
        const double dev = xp[i] - mean;
        m2 += dev * dev;
      }
    }
    mean_out[c] = static_cast<float>(mean);
    var_out[c] = static_cast<float>(m2 / n);
  }
}

// Per-channel scale inv = gamma * rsqrt(variance + epsilon) for channels [c0, c1).
void scales(const float* variance, const float* gamma, float epsilon, std::int64_t c0,
            std::int64_t c1, float* inv) {
  for (std::int64_t c = c0; c < c1; ++c) {
    const float rstd = 1.0f / std::sqrt(variance[c] + epsilon);
    inv[c - c0] = gamma ? gamma[c] * rstd : rstd;
  }
}

}  // namespace

void batch_norm_moments(BatchNormDims d, const float* x, float* batch_mean,
                        float* batch_variance) noexcept {
  if (d.inner == 1) {
    for_channel_blocks(d, kBlock, [&](std::int64_t c0, std::int64_t c1) {
      moments_rows(d, x, batch_mean, batch_variance, c0, c1);
    });
  } else {
    for_channel_blocks(d, 1, [&](std::int64_t c0, std::int64_t c1) {
      moments_planes(d, x, batch_mean, batch_variance, c0, c1);
    });
  }
}

void batch_norm_forward(BatchNormDims d, const float* x, const float* mean, const float* variance,
                        const float* gamma, const float* beta, float epsilon, float* y) noexcept {
  if (d.inner == 1) {
    for_channel_blocks(d, kBlock, [&](std::int64_t c0, std::int64_t c1) {
      const std::int64_t nc = c1 - c0;
      float inv[kBlock], m[kBlock], b[kBlock];
      scales(variance, gamma, epsilon, c0, c1, inv);
      for (std::int64_t j = 0; j < nc; ++j) {
        m[j] = mean[c0 + j];
        b[j] = beta ? beta[c0 + j] : 0.0f;
      }
      for (std::int64_t r = 0; r < d.outer; ++r) {
        const float* xr = x + r * d.channels + c0;
        float* yr = y + r * d.channels + c0;
        for (std::int64_t j = 0; j < nc; ++j) yr[j] = (xr[j] - m[j]) * inv[j] + b[j];
      }
    });
  } else {
    const std::int64_t plane = d.channels * d.inner;
    for_channel_blocks(d, 1, [&](std::int64_t c0, std::int64_t c1) {
      for (std::int64_t c = c0; c < c1; ++c) {
        float inv;
        scales(variance, gamma, epsilon, c, c + 1, &inv);
        const float m = mean[c], b = beta ? beta[c] : 0.0f;
        for (std::int64_t o = 0; o < d.outer; ++o) {
          const float* xp = x + o * plane + c * d.inner;
          float* yp = y + o * plane + c * d.inner;
          for (std::int64_t i = 0; i < d.inner; ++i) yp[i] = (xp[i] - m) * inv + b;
        }
      }
    });
  }
}

namespace {

// dx = A * dy + B * (x - mean) + K per channel, from the two reductions (see batch_norm.hpp).
struct BackwardCoefficients {
  float a, b, k;
};

BackwardCoefficients backward_coefficients(double sum_dy, double sum_dy_xc, double rstd, double g,
                                           double n, bool batch_statistics) {
  if (!batch_statistics) return {static_cast<float>(g * rstd), 0.0f, 0.0f};
  // xhat = (x - mean) rstd; sum(dy xhat) = rstd * sum(dy (x - mean)).
  return {static_cast<float>(g * rstd), static_cast<float>(-g * rstd * rstd * rstd * sum_dy_xc / n),
          static_cast<float>(-g * rstd * sum_dy / n)};
}

}  // namespace

void batch_norm_backward(BatchNormDims d, const float* x, const float* dy, const float* mean,
                         const float* variance, const float* gamma, float epsilon,
                         bool batch_statistics, float* dx, float* dgamma, float* dbeta) noexcept {
  const double n = static_cast<double>(d.count());
  if (d.inner == 1) {
    for_channel_blocks(d, kBlock, [&](std::int64_t c0, std::int64_t c1) {
      const std::int64_t nc = c1 - c0, stride = d.channels;
      double sum_dy[kBlock] = {}, sum_dy_xc[kBlock] = {};
      float m[kBlock];
      for (std::int64_t j = 0; j < nc; ++j) m[j] = mean[c0 + j];
      for (std::int64_t r = 0; r < d.outer; ++r) {
        const float* xr = x + r * stride + c0;
        const float* gr = dy + r * stride + c0;
        for (std::int64_t j = 0; j < nc; ++j) {
          sum_dy[j] += gr[j];
          sum_dy_xc[j] += static_cast<double>(gr[j]) * (static_cast<double>(xr[j]) - m[j]);
        }
      }
      float a[kBlock], b[kBlock], k[kBlock];
      for (std::int64_t j = 0; j < nc; ++j) {
        const std::int64_t c = c0 + j;
        const double rstd = 1.0 / std::sqrt(static_cast<double>(variance[c]) + epsilon);
        if (dbeta) dbeta[c] = static_cast<float>(sum_dy[j]);
        if (dgamma) dgamma[c] = static_cast<float>(sum_dy_xc[j] * rstd);
        const auto co = backward_coefficients(sum_dy[j], sum_dy_xc[j], rstd, gamma ? gamma[c] : 1.0,
                                              n, batch_statistics);
        a[j] = co.a;
        b[j] = co.b;
        k[j] = co.k;
      }
      if (!dx) return;
      for (std::int64_t r = 0; r < d.outer; ++r) {
        const float* xr = x + r * stride + c0;
        const float* gr = dy + r * stride + c0;
        float* dr = dx + r * stride + c0;
        for (std::int64_t j = 0; j < nc; ++j) dr[j] = a[j] * gr[j] + b[j] * (xr[j] - m[j]) + k[j];
      }
    });
  } else {
    const std::int64_t plane = d.channels * d.inner;
    for_channel_blocks(d, 1, [&](std::int64_t c0, std::int64_t c1) {
      for (std::int64_t c = c0; c < c1; ++c) {
        const float m = mean[c];
        double sum_dy = 0.0, sum_dy_xc = 0.0;
        for (std::int64_t o = 0; o < d.outer; ++o) {
          const float* xp = x + o * plane + c * d.inner;
          const float* gp = dy + o * plane + c * d.inner;
          for (std::int64_t i = 0; i < d.inner; ++i) {
            sum_dy += gp[i];
            sum_dy_xc += static_cast<double>(gp[i]) * (static_cast<double>(xp[i]) - m);
          }
        }
        const double rstd = 1.0 / std::sqrt(static_cast<double>(variance[c]) + epsilon);
        if (dbeta) dbeta[c] = static_cast<float>(sum_dy);
        if (dgamma) dgamma[c] = static_cast<float>(sum_dy_xc * rstd);
        if (!dx) continue;
        const auto co = backward_coefficients(sum_dy, sum_dy_xc, rstd, gamma ? gamma[c] : 1.0, n,
                                              batch_statistics);
        for (std::int64_t o = 0; o < d.outer; ++o) {
          const float* xp = x + o * plane + c * d.inner;
          const float* gp = dy + o * plane + c * d.inner;
          float* dp = dx + o * plane + c * d.inner;
          for (std::int64_t i = 0; i < d.inner; ++i)
            dp[i] = co.a * gp[i] + co.b * (xp[i] - m) + co.k;
        }
      }
    });
  }
}

void batch_norm_update_moving(std::int64_t channels, const float* batch_mean,
                              const float* batch_variance, double momentum, float variance_scale,
                              float* moving_mean, float* moving_variance) noexcept {
  const float keep = static_cast<float>(momentum), take = static_cast<float>(1.0 - momentum);
  for (std::int64_t c = 0; c < channels; ++c) {
    moving_mean[c] = moving_mean[c] * keep + batch_mean[c] * take;
    moving_variance[c] = moving_variance[c] * keep + batch_variance[c] * variance_scale * take;
  }
}

}  // namespace bnorm::kernels
