#include "kernels/batch_norm_sync.hpp"

#include <cmath>

namespace bnorm::kernels {

void batch_norm_partial_moments(BatchNormDims d, const float* x, double* mean,
                                double* m2) noexcept {
  const std::int64_t c_n = d.channels, inner = d.inner;
  // mean <- S, m2 <- Q while summing; the shift K of channel c is x at (0, c, 0).
  for (std::int64_t c = 0; c < c_n; ++c) mean[c] = m2[c] = 0.0;
  if (inner == 1) {
    // Channels last: each row is one value per channel, the loop over channels vectorizes.
    for (std::int64_t o = 0; o < d.outer; ++o) {
      const float* row = x + o * c_n;
      for (std::int64_t c = 0; c < c_n; ++c) {
        const double t = static_cast<double>(row[c]) - static_cast<double>(x[c]);
        mean[c] += t;
        m2[c] += t * t;
      }
    }
  } else {
    for (std::int64_t o = 0; o < d.outer; ++o) {
      const float* row = x + o * c_n * inner;
      for (std::int64_t c = 0; c < c_n; ++c) {
        const double k = x[c * inner];
        const float* v = row + c * inner;
        double s = 0.0, q = 0.0;
        for (std::int64_t i = 0; i < inner; ++i) {
          const double t = static_cast<double>(v[i]) - k;
          s += t;
          q += t * t;
        }
        mean[c] += s;
        m2[c] += q;
      }
    }
  }
  const double n = static_cast<double>(d.count());
  for (std::int64_t c = 0; c < c_n; ++c) {
    const double s = mean[c], q = m2[c];
    mean[c] = static_cast<double>(x[c * inner]) + s / n;
    m2[c] = std::fmax(q - s * s / n, 0.0);
  }
}

void batch_norm_merge_moments(std::int64_t channels, double count_a, double* mean_a, double* m2_a,
                              double count_b, const double* mean_b, const double* m2_b) noexcept {
  if (count_b == 0.0) return;
  if (count_a == 0.0) {
    for (std::int64_t c = 0; c < channels; ++c) {
      mean_a[c] = mean_b[c];
      m2_a[c] = m2_b[c];
    }
    return;
  }
  const double n = count_a + count_b;
  for (std::int64_t c = 0; c < channels; ++c) {
    const double delta = mean_b[c] - mean_a[c];
    mean_a[c] += delta * (count_b / n);
    m2_a[c] += m2_b[c] + delta * delta * (count_a * count_b / n);
  }
}

void batch_norm_backward_sums(BatchNormDims d, const float* x, const float* dy, const float* mean,
                              const float* variance, float epsilon, double* sum_dy,
                              double* sum_dy_xhat, double* rstd) noexcept {
  const std::int64_t c_n = d.channels, inner = d.inner;
  for (std::int64_t c = 0; c < c_n; ++c) {
    rstd[c] = 1.0 / std::sqrt(static_cast<double>(variance[c]) + epsilon);
    sum_dy[c] = sum_dy_xhat[c] = 0.0;
  }
  if (inner == 1) {
    for (std::int64_t o = 0; o < d.outer; ++o) {
      const float* xr = x + o * c_n;
      const float* gr = dy + o * c_n;
      for (std::int64_t c = 0; c < c_n; ++c) {
        const double g = gr[c];
        sum_dy[c] += g;
        sum_dy_xhat[c] += g * (static_cast<double>(xr[c]) - static_cast<double>(mean[c]));
      }
    }
  } else {
    for (std::int64_t o = 0; o < d.outer; ++o) {
      const std::int64_t base = o * c_n * inner;
      for (std::int64_t c = 0; c < c_n; ++c) {
        const double m = mean[c];
        double s = 0.0, sx = 0.0;
        for (std::int64_t i = 0; i < inner; ++i) {
          const std::int64_t k = base + c * inner + i;
          s += dy[k];
          sx += dy[k] * (static_cast<double>(x[k]) - m);
        }
        sum_dy[c] += s;
        sum_dy_xhat[c] += sx;
      }
    }
  }
  for (std::int64_t c = 0; c < c_n; ++c) sum_dy_xhat[c] *= rstd[c];
}

void batch_norm_backward_dx_from_sums(BatchNormDims d, const float* x, const float* dy,
                                      const float* mean, const float* variance, const float* gamma,
                                      float epsilon, double count, const double* sum_dy,
                                      const double* sum_dy_xhat, double* scratch,
                                      float* dx) noexcept {
  const std::int64_t c_n = d.channels, inner = d.inner;
  // dx = a * dy + b * (x - mean) + e with a = gamma rstd, b = -gamma rstd^2 sum_dy_xhat / count,
  // e = -gamma rstd sum_dy / count (x - mean first: no cancellation when |mean| >> std).
  double* a = scratch;
  double* b = scratch + c_n;
  double* e = scratch + 2 * c_n;
  for (std::int64_t c = 0; c < c_n; ++c) {
    const double rstd = 1.0 / std::sqrt(static_cast<double>(variance[c]) + epsilon);
    const double g = gamma ? gamma[c] : 1.0;
    a[c] = g * rstd;
    b[c] = -g * rstd * rstd * sum_dy_xhat[c] / count;
    e[c] = -g * rstd * sum_dy[c] / count;
  }
  if (inner == 1) {
    for (std::int64_t o = 0; o < d.outer; ++o) {
      const float* xr = x + o * c_n;
      const float* gr = dy + o * c_n;
      float* out = dx + o * c_n;
      for (std::int64_t c = 0; c < c_n; ++c) {
        out[c] =
            static_cast<float>(a[c] * gr[c] + b[c] * (static_cast<double>(xr[c]) - mean[c]) + e[c]);
      }
    }
    return;
  }
  for (std::int64_t o = 0; o < d.outer; ++o) {
    const std::int64_t base = o * c_n * inner;
    for (std::int64_t c = 0; c < c_n; ++c) {
      const double m = mean[c];
      for (std::int64_t i = 0; i < inner; ++i) {
        const std::int64_t k = base + c * inner + i;
        dx[k] = static_cast<float>(a[c] * dy[k] + b[c] * (static_cast<double>(x[k]) - m) + e[c]);
      }
    }
  }
}

}  // namespace bnorm::kernels
