// src/layers/batch_norm_dims.hpp — private helpers shared by the BatchNormalization layer and the
// functional batch-norm API (batch_norm_ops.cpp): the kernel view of a tensor and the guard that
// keeps moving statistics finite.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "bnorm/core/tensor.hpp"
#include "kernels/batch_norm.hpp"

namespace bnorm::detail {

// [outer, channels, inner] view of `s` around the normalized axis `axis` (0 <= axis < rank).
inline kernels::BatchNormDims dims_of(const Shape& s, int axis) {
  kernels::BatchNormDims d;
  d.channels = s[axis];
  for (int i = 0; i < axis; ++i) d.outer *= s[i];
  for (int i = axis + 1; i < s.rank(); ++i) d.inner *= s[i];
  return d;
}

// First channel whose moving-average update
//   moving = moving * momentum + batch * variance_scale * (1 - momentum)
// (kernels::batch_norm_update_moving) would leave float32's finite range, or -1 when none would.
// Evaluated in float64 with a relative margin far above the kernel's float32 rounding (a few
// ulps), so a value this accepts stays finite however the kernel rounds. All inputs finite.
inline std::int64_t first_moving_overflow(std::int64_t channels, const float* batch_mean,
                                          const float* batch_variance, double momentum,
                                          float variance_scale, const float* moving_mean,
                                          const float* moving_variance) noexcept {
  const double limit = static_cast<double>(std::numeric_limits<float>::max()) * (1.0 - 1e-5);
  const double keep = momentum, take = 1.0 - momentum;
  for (std::int64_t c = 0; c < channels; ++c) {
    const double m = std::abs(moving_mean[c] * keep + batch_mean[c] * take);
    const double v = std::abs(moving_variance[c] * keep +
                              static_cast<double>(batch_variance[c]) * variance_scale * take);
    const double scaled = std::abs(static_cast<double>(batch_variance[c]) * variance_scale);
    if (!(m <= limit) || !(v <= limit) || !(scaled <= limit)) return c;
  }
  return -1;
}

}  // namespace bnorm::detail
