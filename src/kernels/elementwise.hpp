// src/kernels/elementwise.hpp — the elementwise layers' math: Keras 3's parametric ReLU, Rescaling
// and Normalization. Float32 in the order TensorFlow evaluates Keras's expressions; the scalar
// code is the specification (tests/kernels/elementwise_test.cpp checks it against float64).
#pragma once

#include <cstdint>

namespace bnorm::kernels {

// Keras 3 ReLU(max_value, negative_slope, threshold) as keras.activations.relu computes it:
//   negative_slope != 0, no max_value, threshold == 0: tf.nn.leaky_relu (x > 0 ? x : slope * x);
//   otherwise pos = threshold != 0 ? x * (x > threshold) : (max_value == 6 ? relu6(x) : relu(x)),
//   pos = clip(pos, 0, max_value) when max_value is set (and not the relu6 case),
//   y = pos - negative_slope * relu(threshold - x).
// So y = min(x, max_value) for x > threshold, negative_slope * (x - threshold) for x <= threshold
// (Keras's docstring says x >= threshold; its code, followed here, keeps x only above threshold).
// Dropout's training forward: mask[i] = u_i >= rate ? keep_scale : 0 and y[i] = x[i] * mask[i]
// for i in [0, n), where u_i are uniform draws from a stream per fixed block of 16384 elements
// (block b draws from Random(key + b * 0x9E3779B97F4A7C15): the splitmix64 seeding decorrelates
// neighbouring blocks), blocks in parallel: the mask does not depend on the thread count. x and
// y may be null to only draw the mask. `first`: the index of element 0 in a larger tensor these n
// elements are a slice of (a rank's share of a global batch): element i then gets the draw of
// element first + i of the whole, so N ranks drop exactly what one process would.
void dropout_forward(std::int64_t n, float rate, float keep_scale, std::uint64_t key,
                     const float* x, float* mask, float* y, std::int64_t first = 0) noexcept;
// dx = dy * mask, in parallel blocks.
void dropout_backward(std::int64_t n, const float* mask, const float* dy, float* dx) noexcept;

struct ReluParams {
  bool has_max_value = false;
  float max_value = 0.0f;
  float negative_slope = 0.0f;
  float threshold = 0.0f;
};
void relu_forward(const ReluParams& p, std::int64_t n, const float* x, float* y) noexcept;
// TensorFlow's gradients of that expression: 1 where x > threshold (x > 0 for relu, 0 < x < 6 for
// relu6) and pos <= max_value (clip_by_value passes its closed interval); negative_slope where
// threshold - x > 0 (leaky_relu: where x <= 0). dy and dx may alias.
void relu_backward(const ReluParams& p, std::int64_t n, const float* x, const float* dy,
                   float* dx) noexcept;

// Keras Rescaling: y = x * scale + offset over rows x cols (cols = the last axis). scale and offset
// have 1 value (scalar) or `cols` values (per channel): *_per_channel says which.
void rescale_forward(std::int64_t rows, std::int64_t cols, const float* scale,
                     bool scale_per_channel, const float* offset, bool offset_per_channel,
                     const float* x, float* y) noexcept;
// dx = dy * scale.
void rescale_backward(std::int64_t rows, std::int64_t cols, const float* scale,
                      bool scale_per_channel, const float* dy, float* dx) noexcept;

// Keras Normalization over an [outer, channels, inner] view (channels = the kept axes):
//   denom = max(sqrt(variance), 1e-7f)   (normalization_denominator, float32 as Keras)
//   y = (x - mean) / denom,  or with invert: y = mean + x * denom.
void normalization_denominator(std::int64_t channels, const float* variance, float* denom) noexcept;
void normalization_forward(std::int64_t outer, std::int64_t channels, std::int64_t inner,
                           const float* mean, const float* denom, bool invert, const float* x,
                           float* y) noexcept;
// dx = dy / denom (invert: dy * denom).
void normalization_backward(std::int64_t outer, std::int64_t channels, std::int64_t inner,
                            const float* denom, bool invert, const float* dy, float* dx) noexcept;
// Biased mean and variance per channel over outer x inner (float64 two-pass, rounded once), as
// Keras's adapt() computes np.mean / np.var over every axis but the kept ones.
void normalization_moments(std::int64_t outer, std::int64_t channels, std::int64_t inner,
                           const float* x, float* mean, float* variance) noexcept;

}  // namespace bnorm::kernels
