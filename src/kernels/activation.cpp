#include "kernels/activation.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace bnorm::kernels {

namespace {
// Elementwise f(t), the same expressions in activation_forward and bias_activation_forward.
// x < 0 is false for NaN, so relu propagates NaN (as TensorFlow) instead of making it 0.
inline float relu(float t) noexcept { return t < 0.0f ? 0.0f : t; }
// 1 / (1 + exp(-x)) underflows to 0 / saturates to 1 without producing NaN.
inline float sigmoid(float t) noexcept { return 1.0f / (1.0f + std::exp(-t)); }
inline float relu6(float t) noexcept { return std::min(relu(t), 6.0f); }
inline float hard_sigmoid(float t) noexcept { return relu6(t + 3.0f) / 6.0f; }
inline float silu(float t) noexcept { return t * sigmoid(t); }
// tf.nn.gelu(approximate=False): 0.5 * x * (1 + erf(x / 1.4142135623730951)) in float32.
inline float gelu(float t) noexcept {
  return 0.5f * t * (1.0f + std::erf(t / 1.41421356237309515f));
}
inline float hard_silu(float t) noexcept { return t * hard_sigmoid(t); }
// tf.nn.elu computes exp(x) - 1 (not expm1) for x < 0.
inline float elu(float t) noexcept { return t < 0.0f ? std::exp(t) - 1.0f : t; }
inline float leaky_relu(float t) noexcept { return t > 0.0f ? t : t * 0.2f; }

// Calls fn(f) with the elementwise function of `kind`; false for softmax (row-wise).
template <class Fn>
bool with_elementwise(ActivationKind kind, Fn&& fn) {
  switch (kind) {
    case ActivationKind::linear:
      fn([](float t) { return t; });
      return true;
    case ActivationKind::relu:
      fn(relu);
      return true;
    case ActivationKind::sigmoid:
      fn(sigmoid);
      return true;
    case ActivationKind::tanh:
      fn([](float t) { return std::tanh(t); });
      return true;
    case ActivationKind::silu:
      fn(silu);
      return true;
    case ActivationKind::gelu:
      fn(gelu);
      return true;
    case ActivationKind::hard_sigmoid:
      fn(hard_sigmoid);
      return true;
    case ActivationKind::hard_silu:
      fn(hard_silu);
      return true;
    case ActivationKind::elu:
      fn(elu);
      return true;
    case ActivationKind::leaky_relu:
      fn(leaky_relu);
      return true;
    case ActivationKind::relu6:
      fn(relu6);
      return true;
    case ActivationKind::softmax:
      return false;
  }
  return false;
}

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

// dx[i] = g(i) over n values; g reads only index i, so dy and dx may alias.
template <class G>
void map_index(std::int64_t n, float* dx, G g) noexcept {
  for (std::int64_t i = 0; i < n; ++i) dx[i] = g(i);
}
}  // namespace

void activation_forward(ActivationKind kind, std::int64_t rows, std::int64_t cols, const float* x,
                        float* y) noexcept {
  const std::int64_t n = rows * cols;
  if (kind == ActivationKind::linear) {
    if (x != y) std::copy(x, x + n, y);
    return;
  }
  const bool elementwise = with_elementwise(kind, [&](auto f) {
    for (std::int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
  });
  if (!elementwise) {
    for (std::int64_t r = 0; r < rows; ++r) softmax_row(cols, x + r * cols, y + r * cols);
  }
}

void bias_activation_forward(ActivationKind kind, std::int64_t rows, std::int64_t cols,
                             const float* bias, float* z, float* y) noexcept {
  const bool elementwise =
      with_elementwise(kind, [&](auto f) { bias_map(rows, cols, bias, z, y, f); });
  if (elementwise) return;
  for (std::int64_t r = 0; r < rows; ++r) {
    float* zr = z + r * cols;
    if (bias)
      for (std::int64_t c = 0; c < cols; ++c) zr[c] += bias[c];
    softmax_row(cols, zr, y + r * cols);
  }
}

void activation_backward(ActivationKind kind, std::int64_t rows, std::int64_t cols, const float* x,
                         const float* y, const float* dy, float* dx) noexcept {
  const std::int64_t n = rows * cols;
  switch (kind) {
    case ActivationKind::linear:
      if (dy != dx) std::copy(dy, dy + n, dx);
      return;
    case ActivationKind::relu:
      // Both loads unconditional: the select vectorizes (no branch on a data-dependent mask).
      return map_index(n, dx, [&](std::int64_t i) {
        const float g = dy[i];
        return y[i] > 0.0f ? g : 0.0f;
      });
    case ActivationKind::sigmoid:
      return map_index(n, dx, [&](std::int64_t i) { return dy[i] * y[i] * (1.0f - y[i]); });
    case ActivationKind::tanh:
      return map_index(n, dx, [&](std::int64_t i) { return dy[i] * (1.0f - y[i] * y[i]); });
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
    case ActivationKind::elu:
      // TensorFlow's EluGrad: y < 0 ? (y + 1) * dy : dy (y + 1 = exp(x) there).
      return map_index(n, dx, [&](std::int64_t i) {
        const float g = dy[i];
        return y[i] < 0.0f ? (y[i] + 1.0f) * g : g;
      });
    case ActivationKind::leaky_relu:
      // y > 0 exactly when x > 0 (the slope is positive); 0.2 at x = 0, as LeakyReluGrad.
      return map_index(n, dx, [&](std::int64_t i) {
        const float g = dy[i];
        return y[i] > 0.0f ? g : g * 0.2f;
      });
    case ActivationKind::relu6:
      // y = x on (0, 6) exactly, so the open interval of y is Relu6Grad's interval of x.
      return map_index(n, dx, [&](std::int64_t i) {
        const float g = dy[i];
        return y[i] > 0.0f && y[i] < 6.0f ? g : 0.0f;
      });
    case ActivationKind::hard_sigmoid:
      // 0 < y < 1 exactly when 0 < x + 3 < 6 (float32 division by 6 keeps both ends apart).
      return map_index(n, dx, [&](std::int64_t i) {
        const float g = dy[i] / 6.0f;
        return y[i] > 0.0f && y[i] < 1.0f ? g : 0.0f;
      });
    case ActivationKind::silu:
      if (!x) break;
      // TensorFlow's silu gradient: dy * s * (1 + x * (1 - s)), s = sigmoid(x).
      return map_index(n, dx, [&](std::int64_t i) {
        const float s = sigmoid(x[i]);
        return dy[i] * (s * (1.0f + x[i] * (1.0f - s)));
      });
    case ActivationKind::gelu:
      if (!x) break;
      // d/dx [x Phi(x)] = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
      return map_index(n, dx, [&](std::int64_t i) {
        const float t = x[i];
        const float cdf = 0.5f * (1.0f + std::erf(t / 1.41421356237309515f));
        const float pdf = std::exp(-0.5f * t * t) * 0.398942280401432678f;
        return dy[i] * (cdf + t * pdf);
      });
    case ActivationKind::hard_silu:
      if (!x) break;
      // d/dx [x * relu6(x + 3) / 6] = hard_sigmoid(x) + x / 6 where 0 < x + 3 < 6.
      return map_index(n, dx, [&](std::int64_t i) {
        const float t = x[i], g = dy[i];
        const float u = t + 3.0f;
        const float inner = u > 0.0f && u < 6.0f ? g * t / 6.0f : 0.0f;
        return g * hard_sigmoid(t) + inner;
      });
  }
  // A kind that needs x was called without it.
  std::fill(dx, dx + n, std::numeric_limits<float>::quiet_NaN());
}

void activation_backward(ActivationKind kind, std::int64_t rows, std::int64_t cols, const float* y,
                         const float* dy, float* dx) noexcept {
  activation_backward(kind, rows, cols, nullptr, y, dy, dx);
}

}  // namespace bnorm::kernels
