// Scalar float64 reference of the batch-norm kernels: the executable specification.
#include <cmath>

#include "kernels/batch_norm.hpp"

namespace bnorm::kernels::reference {

namespace {
// Index of element (o, c, i) in the [outer, channels, inner] view.
inline std::int64_t at(const BatchNormDims& d, std::int64_t o, std::int64_t c, std::int64_t i) {
  return (o * d.channels + c) * d.inner + i;
}
}  // namespace

void batch_norm_moments(BatchNormDims d, const float* x, float* batch_mean,
                        float* batch_variance) noexcept {
  const double n = static_cast<double>(d.count());
  for (std::int64_t c = 0; c < d.channels; ++c) {
    double sum = 0.0;
    for (std::int64_t o = 0; o < d.outer; ++o)
      for (std::int64_t i = 0; i < d.inner; ++i) sum += x[at(d, o, c, i)];
    const double mean = sum / n;
    double m2 = 0.0;
    for (std::int64_t o = 0; o < d.outer; ++o)
      for (std::int64_t i = 0; i < d.inner; ++i) {
        const double dev = x[at(d, o, c, i)] - mean;
        m2 += dev * dev;
      }
    batch_mean[c] = static_cast<float>(mean);
    batch_variance[c] = static_cast<float>(m2 / n);
  }
}

void batch_norm_forward(BatchNormDims d, const float* x, const float* mean, const float* variance,
                        const float* gamma, const float* beta, float epsilon, float* y) noexcept {
  for (std::int64_t c = 0; c < d.channels; ++c) {
    const double rstd = 1.0 / std::sqrt(static_cast<double>(variance[c]) + epsilon);
    const double g = gamma ? gamma[c] : 1.0;
    const double b = beta ? beta[c] : 0.0;
    for (std::int64_t o = 0; o < d.outer; ++o)
      for (std::int64_t i = 0; i < d.inner; ++i) {
        const std::int64_t k = at(d, o, c, i);
        y[k] = static_cast<float>((x[k] - static_cast<double>(mean[c])) * rstd * g + b);
      }
  }
}

void batch_norm_backward(BatchNormDims d, const float* x, const float* dy, const float* mean,
                         const float* variance, const float* gamma, float epsilon,
                         bool batch_statistics, float* dx, float* dgamma, float* dbeta) noexcept {
  const double n = static_cast<double>(d.count());
  for (std::int64_t c = 0; c < d.channels; ++c) {
    const double rstd = 1.0 / std::sqrt(static_cast<double>(variance[c]) + epsilon);
    const double g = gamma ? gamma[c] : 1.0;
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for (std::int64_t o = 0; o < d.outer; ++o)
      for (std::int64_t i = 0; i < d.inner; ++i) {
        const std::int64_t k = at(d, o, c, i);
        const double xhat = (x[k] - static_cast<double>(mean[c])) * rstd;
        sum_dy += dy[k];
        sum_dy_xhat += dy[k] * xhat;
      }
    if (dbeta) dbeta[c] = static_cast<float>(sum_dy);
    if (dgamma) dgamma[c] = static_cast<float>(sum_dy_xhat);
    if (!dx) continue;
    for (std::int64_t o = 0; o < d.outer; ++o)
      for (std::int64_t i = 0; i < d.inner; ++i) {
        const std::int64_t k = at(d, o, c, i);
        if (batch_statistics) {
          const double xhat = (x[k] - static_cast<double>(mean[c])) * rstd;
          dx[k] = static_cast<float>(g * rstd * (dy[k] - sum_dy / n - xhat * sum_dy_xhat / n));
        } else {
          dx[k] = static_cast<float>(g * rstd * dy[k]);
        }
      }
  }
}

}  // namespace bnorm::kernels::reference
