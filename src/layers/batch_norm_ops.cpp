// Validated functional batch normalization: every argument is checked here, then the pure
// kernels of src/kernels/batch_norm.hpp run on an [outer, channels, inner] view of x.
// Inputs are validated up front (shapes, scalars, the C-sized tensors); the data itself (x, dy)
// is validated through the results: NaN/Inf in the data always reaches the statistics or the
// outputs, so one read pass over them proves both the inputs finite and that nothing
// overflowed. Only when that check fails are the inputs scanned again, to name the culprit.
#include "bnorm/layers/batch_norm_ops.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>

#include "bnorm/core/error.hpp"
#include "kernels/batch_norm.hpp"
#include "layers/batch_norm_dims.hpp"

namespace bnorm {

namespace {

// Shortest round-trip text: "0.001", "3e+38", "nan", "inf".
std::string num(float v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}
std::string num(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// Multi-index of flat element i of a row-major tensor of shape s: "[3, 1]".
std::string index_str(const Shape& s, std::int64_t i) {
  std::string out;
  for (int k = s.rank() - 1; k >= 0; --k) {
    const std::int64_t d = s[k];
    out = std::to_string(i % d) + (out.empty() ? "" : ", ") + out;
    i /= d;
  }
  return "[" + out + "]";
}

// x validated and viewed around its normalized axis.
struct View {
  std::string fn;  // the public function, first word of every message
  int axis_arg;    // the axis as the caller wrote it, for messages
  int axis;        // normalized, 1 <= axis < rank
  kernels::BatchNormDims dims;
  Shape channel_shape;  // (C,)
  std::string per_channel() const {
    return "(one value per channel of axis " + std::to_string(axis_arg) + ")";
  }
};

View check_x(const char* fn, const Tensor& x, int axis) {
  const std::string f = fn;
  const Shape& s = x.shape();
  const int r = s.rank();
  if (r == 0) {
    throw ShapeError(f + ": x is empty; expected a tensor of rank >= 2 (batch axis first); " +
                     "received a tensor with no shape ()");
  }
  if (r < 2) {
    throw ShapeError(f +
                     ": x must have rank >= 2 (batch axis first, then features); received rank " +
                     std::to_string(r) + ", shape " + s.str());
  }
  const int a = axis < 0 ? axis + r : axis;
  if (a < 1 || a >= r) {
    throw ShapeError(f + ": axis must be in [1, " + std::to_string(r - 1) + "] or [-" +
                     std::to_string(r - 1) + ", -1] for x of rank " + std::to_string(r) +
                     " (axis 0 is the batch axis); received axis " + std::to_string(axis));
  }
  if (s[a] == 0) {
    throw ShapeError(f + ": x has 0 channels along axis " + std::to_string(axis) +
                     " (expected >= 1); received shape " + s.str());
  }
  if (x.empty()) {
    throw ShapeError(f + ": x is empty (expected at least one value per channel); received shape " +
                     s.str());
  }
  return {f, axis, a, detail::dims_of(s, a), Shape{s[a]}};
}

void check_epsilon(const View& v, float epsilon) {
  if (!(epsilon > 0.0f) || !std::isfinite(epsilon)) {
    throw ValueError(v.fn + ": epsilon must be a finite number > 0; received " + num(epsilon));
  }
}

// A per-channel tensor: shape (C,), every value finite, and >= 0 for a variance.
void check_per_channel(const std::string& fn, const char* name, const Tensor& t,
                       const Shape& expected, const std::string& why, bool variance = false) {
  if (!(t.shape() == expected)) {
    throw ShapeError(fn + ": " + name + " must have shape " + expected.str() + " " + why +
                     "; received " + t.shape().str());
  }
  if (const auto i = t.first_non_finite(); i >= 0) {
    throw NonFiniteError(fn + ": " + name + " must be finite; received " + num(t[i]) +
                         " at channel " + std::to_string(i));
  }
  if (!variance) return;
  for (std::int64_t i = 0; i < t.size(); ++i) {
    if (t[i] < 0.0f) {
      throw ValueError(fn + ": " + name + " must be >= 0; received " + num(t[i]) + " at channel " +
                       std::to_string(i));
    }
  }
}

void check_per_channel(const View& v, const char* name, const Tensor& t, bool variance = false) {
  check_per_channel(v.fn, name, t, v.channel_shape, v.per_channel(), variance);
}

// The kernels take 1 / sqrt(variance + epsilon) in float32: the sum must stay finite.
void check_variance_plus_epsilon(const View& v, const char* name, const Tensor& variance,
                                 float epsilon) {
  for (std::int64_t c = 0; c < variance.size(); ++c) {
    if (!std::isfinite(variance[c] + epsilon)) {
      throw NonFiniteError(v.fn + ": " + name + " + epsilon overflows float32 at channel " +
                           std::to_string(c) + " (expected <= 3.4e+38); received " + name + " = " +
                           num(variance[c]) + ", epsilon = " + num(epsilon));
    }
  }
}

// Data tensor `name` (x or dy) must be finite: throws naming its first NaN/Inf, if any.
void check_data_finite(const View& v, const char* name, const Tensor& t, const char* consequence) {
  if (const auto i = t.first_non_finite(); i >= 0) {
    throw NonFiniteError(v.fn + ": " + name + " must be finite; received " + num(t[i]) +
                         " at index " + index_str(t.shape(), i) + consequence);
  }
}

// Batch statistics of x are finite unless x holds NaN/Inf or its variance overflows float32.
void check_batch_statistics(const View& v, const Tensor& x, const Tensor& batch_mean,
                            const Tensor& batch_variance) {
  if (batch_mean.all_finite() && batch_variance.all_finite()) return;
  check_data_finite(v, "x", x, "; the batch is rejected");
  float largest = 0.0f;
  for (float e : x.values()) largest = std::max(largest, std::abs(e));
  const auto c = batch_variance.first_non_finite();
  throw NonFiniteError(
      v.fn + ": x is too large for float32 statistics: the batch variance of channel " +
      std::to_string(c) + " along axis " + std::to_string(v.axis_arg) +
      " overflows (expected it <= 3.4e+38); received values up to |x| = " + num(largest) +
      "; the batch is rejected");
}

// Channel of flat element i of x in the [outer, channels, inner] view.
std::int64_t channel_of(const View& v, std::int64_t i) {
  return (i / v.dims.inner) % v.dims.channels;
}

std::string value_at(const char* name, const Tensor* t, std::int64_t c) {
  return t ? std::string(", ") + name + " = " + num((*t)[c]) : std::string();
}

}  // namespace

BatchNormStatistics batch_norm_moments(const Tensor& x, int axis) {
  const View v = check_x("batch_norm_moments", x, axis);
  BatchNormStatistics s{Tensor(v.channel_shape), Tensor(v.channel_shape)};
  kernels::batch_norm_moments(v.dims, x.data(), s.batch_mean.data(), s.batch_variance.data());
  check_batch_statistics(v, x, s.batch_mean, s.batch_variance);
  return s;
}

Tensor batch_norm_inference(const Tensor& x, const Tensor& mean, const Tensor& variance,
                            const Tensor* scale, const Tensor* offset, float epsilon, int axis) {
  const View v = check_x("batch_norm_inference", x, axis);
  check_epsilon(v, epsilon);
  check_per_channel(v, "mean", mean);
  check_per_channel(v, "variance", variance, true);
  check_variance_plus_epsilon(v, "variance", variance, epsilon);
  if (scale) check_per_channel(v, "scale", *scale);
  if (offset) check_per_channel(v, "offset", *offset);
  Tensor y(x.shape());
  kernels::batch_norm_forward(v.dims, x.data(), mean.data(), variance.data(),
                              scale ? scale->data() : nullptr, offset ? offset->data() : nullptr,
                              epsilon, y.data());
  // The statistics and scale/offset are finite, so a non-finite y comes from x or overflow.
  if (const auto i = y.first_non_finite(); i >= 0) {
    check_data_finite(v, "x", x, "");
    const auto c = channel_of(v, i);
    throw NonFiniteError(v.fn + ": the result overflows float32 at index " +
                         index_str(x.shape(), i) +
                         " (expected |y| <= 3.4e+38); received x = " + num(x[i]) +
                         ", mean = " + num(mean[c]) + ", variance = " + num(variance[c]) +
                         value_at("scale", scale, c) + value_at("offset", offset, c));
  }
  return y;
}

BatchNormTrainingResult batch_norm_training(const Tensor& x, const Tensor* scale,
                                            const Tensor* offset, float epsilon, int axis) {
  const View v = check_x("batch_norm_training", x, axis);
  check_epsilon(v, epsilon);
  if (scale) check_per_channel(v, "scale", *scale);
  if (offset) check_per_channel(v, "offset", *offset);
  BatchNormTrainingResult r{Tensor(x.shape()), Tensor(v.channel_shape), Tensor(v.channel_shape)};
  kernels::batch_norm_moments(v.dims, x.data(), r.batch_mean.data(), r.batch_variance.data());
  check_batch_statistics(v, x, r.batch_mean, r.batch_variance);
  check_variance_plus_epsilon(v, "batch_variance", r.batch_variance, epsilon);
  kernels::batch_norm_forward(v.dims, x.data(), r.batch_mean.data(), r.batch_variance.data(),
                              scale ? scale->data() : nullptr, offset ? offset->data() : nullptr,
                              epsilon, r.y.data());
  // |xhat| <= sqrt(count), so only a huge scale or offset can overflow y.
  if (const auto i = r.y.first_non_finite(); i >= 0) {
    const auto c = channel_of(v, i);
    throw NonFiniteError(v.fn + ": the result overflows float32 at index " +
                         index_str(x.shape(), i) + " (expected |y| <= 3.4e+38); received x = " +
                         num(x[i]) + value_at("scale", scale, c) + value_at("offset", offset, c));
  }
  return r;
}

void batch_norm_update_moving(Tensor& moving_mean, Tensor& moving_variance,
                              const Tensor& batch_mean, const Tensor& batch_variance,
                              double momentum) {
  const std::string fn = "batch_norm_update_moving";
  if (!(momentum >= 0.0 && momentum <= 1.0)) {
    throw ValueError(fn + ": momentum must be in [0, 1]; received " + num(momentum));
  }
  if (moving_mean.rank() != 1 || moving_mean.empty()) {
    throw ShapeError(
        fn + ": moving_mean must have shape (C,) with C >= 1 (one value per channel); received " +
        moving_mean.shape().str());
  }
  const Shape c = moving_mean.shape();
  const std::string why = "(the shape of moving_mean)";
  check_per_channel(fn, "moving_mean", moving_mean, c, why);
  check_per_channel(fn, "moving_variance", moving_variance, c, why, true);
  check_per_channel(fn, "batch_mean", batch_mean, c, why);
  check_per_channel(fn, "batch_variance", batch_variance, c, why, true);
  if (const auto ch =
          detail::first_moving_overflow(c[0], batch_mean.data(), batch_variance.data(), momentum,
                                        1.0f, moving_mean.data(), moving_variance.data());
      ch >= 0) {
    throw NonFiniteError(fn + ": the update overflows float32 at channel " + std::to_string(ch) +
                         " (expected results <= 3.4e+38); received moving_mean = " +
                         num(moving_mean[ch]) + ", batch_mean = " + num(batch_mean[ch]) +
                         ", moving_variance = " + num(moving_variance[ch]) + ", batch_variance = " +
                         num(batch_variance[ch]) + "; moving statistics left unchanged");
  }
  kernels::batch_norm_update_moving(c[0], batch_mean.data(), batch_variance.data(), momentum, 1.0f,
                                    moving_mean.data(), moving_variance.data());
}

BatchNormGradients batch_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& mean,
                                       const Tensor& variance, const Tensor* scale, float epsilon,
                                       bool batch_statistics, int axis) {
  const View v = check_x("batch_norm_backward", x, axis);
  if (!(dy.shape() == x.shape())) {
    throw ShapeError(v.fn + ": dy must have the shape of x, " + x.shape().str() + "; received " +
                     dy.shape().str());
  }
  check_epsilon(v, epsilon);
  check_per_channel(v, "mean", mean);
  check_per_channel(v, "variance", variance, true);
  check_variance_plus_epsilon(v, "variance", variance, epsilon);
  if (scale) check_per_channel(v, "scale", *scale);
  BatchNormGradients g{Tensor(x.shape()), Tensor(v.channel_shape), Tensor(v.channel_shape)};
  kernels::batch_norm_backward(v.dims, x.data(), dy.data(), mean.data(), variance.data(),
                               scale ? scale->data() : nullptr, epsilon, batch_statistics,
                               g.dx.data(), g.dscale.data(), g.doffset.data());
  // NaN/Inf in x or dy reaches the outputs (dscale and doffset sum dy and dy * (x - mean) over
  // every element of a channel; NaN * 0 and Inf * 0 are NaN), so checking the outputs proves
  // the inputs finite too.
  if (g.dx.all_finite() && g.dscale.all_finite() && g.doffset.all_finite()) return g;
  check_data_finite(v, "x", x, "");
  check_data_finite(v, "dy", dy, "");
  const bool in_dx = !g.dx.all_finite();
  const Tensor& bad = in_dx ? g.dx : (g.dscale.all_finite() ? g.doffset : g.dscale);
  const auto i = bad.first_non_finite();
  const auto c = in_dx ? channel_of(v, i) : i;
  throw NonFiniteError(v.fn + ": the gradients overflow float32 in channel " + std::to_string(c) +
                       " (expected finite dx, dscale, doffset); received mean = " + num(mean[c]) +
                       ", variance = " + num(variance[c]) + ", epsilon = " + num(epsilon) +
                       value_at("scale", scale, c));
}

}  // namespace bnorm
