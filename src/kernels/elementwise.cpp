#include "kernels/elementwise.hpp"

#include <algorithm>
#include <cmath>

#include "bnorm/core/parallel.hpp"
#include "bnorm/core/random.hpp"

namespace bnorm::kernels {

namespace {
constexpr std::int64_t kDropoutGrain = 16384;  // elements per parallel block
}

void dropout_forward(std::int64_t n, float rate, float keep_scale, std::uint64_t key,
                     const float* x, float* mask, float* y, std::int64_t first) noexcept {
  // Blocks of the whole tensor that [first, first + n) overlaps, each from its own stream.
  const std::int64_t b0 = first / kDropoutGrain,
                     b1 = (first + n + kDropoutGrain - 1) / kDropoutGrain;
  parallel_for(b1 - b0, 1, [&](std::int64_t c0, std::int64_t c1) {
    for (std::int64_t b = b0 + c0; b < b0 + c1; ++b) {
      Random stream(key + static_cast<std::uint64_t>(b) * 0x9E3779B97F4A7C15ull);
      const std::int64_t start = b * kDropoutGrain;
      const std::int64_t e0 = std::max(first, start),
                         e1 = std::min(first + n, start + kDropoutGrain);
      for (std::int64_t e = start; e < e0; ++e) stream.uniform();  // draws of elements before
      for (std::int64_t e = e0; e < e1; ++e)
        mask[e - first] = stream.uniform() >= rate ? keep_scale : 0.0f;
      if (x && y) {
        for (std::int64_t e = e0; e < e1; ++e) y[e - first] = x[e - first] * mask[e - first];
      }
    }
  });
}

void dropout_backward(std::int64_t n, const float* mask, const float* dy, float* dx) noexcept {
  parallel_for(n, kDropoutGrain, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) dx[i] = dy[i] * mask[i];
  });
}

namespace {
inline float relu(float t) noexcept { return t < 0.0f ? 0.0f : t; }

// The three cases of keras.activations.relu (see the header).
bool is_leaky(const ReluParams& p) noexcept {
  return p.negative_slope != 0.0f && !p.has_max_value && p.threshold == 0.0f;
}
bool is_relu6(const ReluParams& p) noexcept {
  return p.threshold == 0.0f && p.has_max_value && p.max_value == 6.0f;
}
// The positive part before the clip.
inline float positive_part(const ReluParams& p, bool relu6, float x) noexcept {
  if (p.threshold != 0.0f) return x * (x > p.threshold ? 1.0f : 0.0f);
  if (relu6) return std::min(relu(x), 6.0f);
  return relu(x);
}
}  // namespace

void relu_forward(const ReluParams& p, std::int64_t n, const float* x, float* y) noexcept {
  if (is_leaky(p)) {
    for (std::int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : x[i] * p.negative_slope;
    return;
  }
  const bool relu6 = is_relu6(p);
  const bool clip = p.has_max_value && !relu6;
  for (std::int64_t i = 0; i < n; ++i) {
    const float t = x[i];
    float pos = positive_part(p, relu6, t);
    if (clip) pos = std::min(std::max(pos, 0.0f), p.max_value);
    if (p.negative_slope != 0.0f) pos -= p.negative_slope * relu(-t + p.threshold);
    y[i] = pos;
  }
}

void relu_backward(const ReluParams& p, std::int64_t n, const float* x, const float* dy,
                   float* dx) noexcept {
  if (is_leaky(p)) {
    for (std::int64_t i = 0; i < n; ++i) {
      const float g = dy[i];
      dx[i] = x[i] > 0.0f ? g : g * p.negative_slope;
    }
    return;
  }
  const bool relu6 = is_relu6(p);
  const bool clip = p.has_max_value && !relu6;
  for (std::int64_t i = 0; i < n; ++i) {
    const float t = x[i], g = dy[i];
    bool pass;
    if (p.threshold != 0.0f) {
      pass = t > p.threshold;
    } else if (relu6) {
      pass = t > 0.0f && t < 6.0f;
    } else {
      pass = t > 0.0f;
    }
    if (clip && pass) pass = !(positive_part(p, relu6, t) > p.max_value);
    float d = pass ? g : 0.0f;
    if (p.negative_slope != 0.0f && -t + p.threshold > 0.0f) d = g * p.negative_slope;
    dx[i] = d;
  }
}

void rescale_forward(std::int64_t rows, std::int64_t cols, const float* scale,
                     bool scale_per_channel, const float* offset, bool offset_per_channel,
                     const float* x, float* y) noexcept {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    for (std::int64_t c = 0; c < cols; ++c) {
      const float s = scale[scale_per_channel ? c : 0];
      const float o = offset[offset_per_channel ? c : 0];
      const float scaled = xr[c] * s;  // two roundings, as TensorFlow's Mul then Add
      yr[c] = scaled + o;
    }
  }
}

void rescale_backward(std::int64_t rows, std::int64_t cols, const float* scale,
                      bool scale_per_channel, const float* dy, float* dx) noexcept {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* gr = dy + r * cols;
    float* dr = dx + r * cols;
    for (std::int64_t c = 0; c < cols; ++c) dr[c] = gr[c] * scale[scale_per_channel ? c : 0];
  }
}

void normalization_denominator(std::int64_t channels, const float* variance,
                               float* denom) noexcept {
  // keras.backend.epsilon() = 1e-7, compared in float32. std::max(NaN, eps) keeps the NaN (as
  // tf.maximum does), so a bad variance shows instead of hiding behind epsilon.
  for (std::int64_t c = 0; c < channels; ++c) {
    const float s = std::sqrt(variance[c]);
    denom[c] = s < 1e-7f ? 1e-7f : s;
  }
}

void normalization_forward(std::int64_t outer, std::int64_t channels, std::int64_t inner,
                           const float* mean, const float* denom, bool invert, const float* x,
                           float* y) noexcept {
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t c = 0; c < channels; ++c) {
      const std::int64_t base = (o * channels + c) * inner;
      const float m = mean[c], d = denom[c];
      if (invert) {
        for (std::int64_t i = 0; i < inner; ++i) {
          const float scaled = x[base + i] * d;
          y[base + i] = m + scaled;
        }
      } else {
        for (std::int64_t i = 0; i < inner; ++i) y[base + i] = (x[base + i] - m) / d;
      }
    }
  }
}

void normalization_backward(std::int64_t outer, std::int64_t channels, std::int64_t inner,
                            const float* denom, bool invert, const float* dy, float* dx) noexcept {
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t c = 0; c < channels; ++c) {
      const std::int64_t base = (o * channels + c) * inner;
      const float d = denom[c];
      if (invert) {
        for (std::int64_t i = 0; i < inner; ++i) dx[base + i] = dy[base + i] * d;
      } else {
        for (std::int64_t i = 0; i < inner; ++i) dx[base + i] = dy[base + i] / d;
      }
    }
  }
}

void normalization_moments(std::int64_t outer, std::int64_t channels, std::int64_t inner,
                           const float* x, float* mean, float* variance) noexcept {
  const double count = static_cast<double>(outer) * static_cast<double>(inner);
  for (std::int64_t c = 0; c < channels; ++c) {
    double sum = 0.0;
    for (std::int64_t o = 0; o < outer; ++o) {
      const float* xr = x + (o * channels + c) * inner;
      for (std::int64_t i = 0; i < inner; ++i) sum += xr[i];
    }
    const double m = count > 0 ? sum / count : 0.0;
    double ss = 0.0;
    for (std::int64_t o = 0; o < outer; ++o) {
      const float* xr = x + (o * channels + c) * inner;
      for (std::int64_t i = 0; i < inner; ++i) {
        const double d = xr[i] - m;
        ss += d * d;
      }
    }
    mean[c] = static_cast<float>(m);
    variance[c] = static_cast<float>(count > 0 ? ss / count : 0.0);
  }
}

}  // namespace bnorm::kernels
