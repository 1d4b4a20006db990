#include "kernels/activation.hpp"

#include <algorithm>
#include <cmath>

namespace bnorm::kernels {

void activation_forward(ActivationKind kind, std::int64_t rows, std::int64_t cols, const float* x,
                        float* y) noexcept {
  const std::int64_t n = rows * cols;
  switch (kind) {
    case ActivationKind::linear:
      if (x != y) std::copy(x, x + n, y);
      return;
    case ActivationKind::relu:
      // x < 0 is false for NaN, so NaN propagates (as in TensorFlow) instead of becoming 0.
      for (std::int64_t i = 0; i < n; ++i) y[i] = x[i] < 0.0f ? 0.0f : x[i];
      return;
    case ActivationKind::sigmoid:
      // 1 / (1 + exp(-x)) underflows to 0 / saturates to 1 without producing NaN.
      for (std::int64_t i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + std::exp(-x[i]));
      return;
    case ActivationKind::tanh:
      for (std::int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
      return;
    case ActivationKind::softmax:
      for (std::int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * cols;
        float* yr = y + r * cols;
        const float mx = *std::max_element(xr, xr + cols);
        double sum = 0.0;
        for (std::int64_t c = 0; c < cols; ++c) {
          yr[c] = std::exp(xr[c] - mx);
          sum += yr[c];
        }
        const float inv = static_cast<float>(1.0 / sum);
        for (std::int64_t c = 0; c < cols; ++c) yr[c] *= inv;
      }
      return;
  }
}

void activation_backward(ActivationKind kind, std::int64_t rows, std::int64_t cols, const float* y,
                         const float* dy, float* dx) noexcept {
  const std::int64_t n = rows * cols;
  switch (kind) {
    case ActivationKind::linear:
      if (dy != dx) std::copy(dy, dy + n, dx);
      return;
    case ActivationKind::relu:
      for (std::int64_t i = 0; i < n; ++i) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
      return;
    case ActivationKind::sigmoid:
      for (std::int64_t i = 0; i < n; ++i) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
      return;
    case ActivationKind::tanh:
      for (std::int64_t i = 0; i < n; ++i) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
      return;
    case ActivationKind::softmax:
      for (std::int64_t r = 0; r < rows; ++r) {
        const float* yr = y + r * cols;
        const float* gr = dy + r * cols;
        float* dr = dx + r * cols;
        double dot = 0.0;
        for (std::int64_t c = 0; c < cols; ++c) dot += static_cast<double>(gr[c]) * yr[c];
        const float d = static_cast<float>(dot);
        for (std::int64_t c = 0; c < cols; ++c) dr[c] = yr[c] * (gr[c] - d);
      }
      return;
  }
}

}  // namespace bnorm::kernels
