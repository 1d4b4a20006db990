#include "kernels/activation.hpp"

#include <algorithm>
#include <cmath>

namespace bnorm::kernels {

namespace {
// Elementwise f(t), the same expressions as activation_forward.
inline float relu(float t) noexcept { return t < 0.0f ? 0.0f : t; }
inline float sigmoid(float t) noexcept { return 1.0f / (1.0f + std::exp(-t)); }

void softmax_row(std::int64_t cols, const float* xr, float* yr) noexcept {
  const float mx = *std::max_element(xr, xr + cols);
  double sum = 0.0;
  for (std::int64_t c = 0; c < cols; ++c) {
    yr[c] = std::exp(xr[c] - mx);
    sum += yr[c];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (std::int64_t c = 0; c < cols; ++c) yr[c] *= inv;
}

// y[r, c] = f(z[r, c] + bias[c]) for an elementwise f; z keeps z + bias when y is another buffer.
template <class F>
void bias_map(std::int64_t rows, std::int64_t cols, const float* bias, float* z, float* y,
              F f) noexcept {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* zr = z + r * cols;
    float* yr = y + r * cols;
    if (bias) {
      if (zr == yr) {
        for (std::int64_t c = 0; c < cols; ++c) yr[c] = f(zr[c] + bias[c]);
      } else {
        for (std::int64_t c = 0; c < cols; ++c) {
          zr[c] += bias[c];
          yr[c] = f(zr[c]);
        }
      }
    } else {
      for (std::int64_t c = 0; c < cols; ++c) yr[c] = f(zr[c]);
    }
  }
}
}  // namespace

void activation_forward(ActivationKind kind, std::int64_t rows, std::int64_t cols, const float* x,
                        float* y) noexcept {
  const std::int64_t n = rows * cols;
  switch (kind) {
    case ActivationKind::linear:
      if (x != y) std::copy(x, x + n, y);
      return;
    case ActivationKind::relu:
      // x < 0 is false for NaN, so NaN propagates (as in TensorFlow) instead of becoming 0.
      for (std::int64_t i = 0; i < n; ++i) y[i] = relu(x[i]);
      return;
    case ActivationKind::sigmoid:
      // 1 / (1 + exp(-x)) underflows to 0 / saturates to 1 without producing NaN.
      for (std::int64_t i = 0; i < n; ++i) y[i] = sigmoid(x[i]);
      return;
    case ActivationKind::tanh:
      for (std::int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
      return;
    case ActivationKind::softmax:
      for (std::int64_t r = 0; r < rows; ++r) softmax_row(cols, x + r * cols, y + r * cols);
      return;
  }
}

void bias_activation_forward(ActivationKind kind, std::int64_t rows, std::int64_t cols,
                             const float* bias, float* z, float* y) noexcept {
  switch (kind) {
    case ActivationKind::linear:
      return bias_map(rows, cols, bias, z, y, [](float t) { return t; });
    case ActivationKind::relu:
      return bias_map(rows, cols, bias, z, y, relu);
    case ActivationKind::sigmoid:
      return bias_map(rows, cols, bias, z, y, sigmoid);
    case ActivationKind::tanh:
      return bias_map(rows, cols, bias, z, y, [](float t) { return std::tanh(t); });
    case ActivationKind::softmax:
      for (std::int64_t r = 0; r < rows; ++r) {
        float* zr = z + r * cols;
        if (bias)
          for (std::int64_t c = 0; c < cols; ++c) zr[c] += bias[c];
        softmax_row(cols, zr, y + r * cols);
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
      // Both loads unconditional: the select vectorizes (no branch on a data-dependent mask).
      for (std::int64_t i = 0; i < n; ++i) {
        const float g = dy[i];
        dx[i] = y[i] > 0.0f ? g : 0.0f;
      }
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
