#include "bnorm/layers/normalization.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "bnorm/core/error.hpp"
#include "kernels/elementwise.hpp"

namespace bnorm {

namespace {
std::string list_text(const std::vector<float>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + (v.size() > 8 ? ", ...]" : "]");
}
}  // namespace

Normalization::Normalization(Options options)
    : Layer("normalization"), options_(std::move(options)) {
  const auto& o = options_;
  if (o.mean.empty() != o.variance.empty()) {
    throw ValueError(
        "Normalization: when setting values directly, both mean and variance must be set; "
        "received mean=" +
        (o.mean.empty() ? std::string("None") : list_text(o.mean)) +
        " and variance=" + (o.variance.empty() ? std::string("None") : list_text(o.variance)));
  }
  for (float v : o.mean)
    if (!std::isfinite(v))
      throw ValueError("Normalization: mean must be finite; received " + list_text(o.mean));
  for (float v : o.variance)
    if (!(v >= 0.0f) || !std::isfinite(v))
      throw ValueError("Normalization: variance must be finite and >= 0; received " +
                       list_text(o.variance));
}

void Normalization::do_build(const Shape& input_shape, Random&) {
  const int full_rank = input_shape.rank() + 1;
  std::vector<int> kept;
  for (int a : options_.axis) {
    const int n = a < 0 ? a + full_rank : a;
    if (n < 0 || n >= full_rank) {
      throw ShapeError(label() + ": axis " + std::to_string(a) +
                       " is out of range for input rank " + std::to_string(full_rank) +
                       " (per-sample shape " + input_shape.str() + ")");
    }
    if (n == 0) throw ValueError(label() + ": axis 0 is the batch axis; it cannot be kept");
    kept.push_back(n);
  }
  std::sort(kept.begin(), kept.end());
  if (std::adjacent_find(kept.begin(), kept.end()) != kept.end())
    throw ValueError(label() + ": axis lists an axis twice");
  if (!kept.empty() && kept.back() - kept.front() + 1 != static_cast<int>(kept.size()))
    throw ValueError(label() +
                     ": kept axes must be adjacent (bnorm views them as one channel axis)");
  first_kept_ = kept.empty() ? 1 : kept.front();
  last_kept_ = kept.empty() ? 0 : kept.back();

  std::vector<std::int64_t> weight_dims;
  for (int a : kept) weight_dims.push_back(input_shape[a - 1]);
  std::int64_t channels = 1;
  for (auto d : weight_dims) channels *= d;
  if (weight_dims.empty()) weight_dims.push_back(1);  // Keras's shape () (see the header)
  denom_.assign(static_cast<std::size_t>(channels), 1.0f);

  if (fixed_statistics()) {
    for (const auto* v : {&options_.mean, &options_.variance}) {
      const auto n = static_cast<std::int64_t>(v->size());
      if (n != 1 && n != channels) {
        throw ShapeError(label() + ": " + (v == &options_.mean ? "mean" : "variance") + " has " +
                         std::to_string(n) + " values; expected 1 or " + std::to_string(channels) +
                         " (the kept axes of input shape " + input_shape.str() + ")");
      }
    }
    fixed_mean_.resize(static_cast<std::size_t>(channels));
    std::vector<float> variance(static_cast<std::size_t>(channels));
    for (std::size_t c = 0; c < fixed_mean_.size(); ++c) {
      fixed_mean_[c] = options_.mean[options_.mean.size() == 1 ? 0 : c];
      variance[c] = options_.variance[options_.variance.size() == 1 ? 0 : c];
    }
    kernels::normalization_denominator(channels, variance.data(), denom_.data());
    return;
  }
  mean_ = &add_weight("mean", Shape(weight_dims), false);
  mean_->value.fill(0.0f);
  variance_ = &add_weight("variance", Shape(weight_dims), false);
  variance_->value.fill(1.0f);
  add_weight("count", Shape{1}, false).value.fill(0.0f);
}

Normalization::View Normalization::view_of(const Shape& full) const {
  View v{1, 1, 1};
  for (int a = 0; a < full.rank(); ++a) {
    if (a < first_kept_) {
      v.outer *= full[a];
    } else if (a <= last_kept_) {
      v.channels *= full[a];
    } else {
      v.inner *= full[a];
    }
  }
  return v;
}

void Normalization::do_forward(const Tensor& x, Mode, Tensor& y) {
  y.resize(x.shape());
  const View v = view_of(x.shape());
  const float* mean = fixed_mean_.data();
  if (!fixed_statistics()) {
    // The weights may have been set since the last forward (set_weights, adapt): one pass over
    // the kept indices.
    kernels::normalization_denominator(v.channels, variance_->value.data(), denom_.data());
    mean = mean_->value.data();
  }
  kernels::normalization_forward(v.outer, v.channels, v.inner, mean, denom_.data(), options_.invert,
                                 x.data(), y.data());
}

void Normalization::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  if (!compute_dx) return;
  dx.resize(dy.shape());
  const View v = view_of(dy.shape());
  kernels::normalization_backward(v.outer, v.channels, v.inner, denom_.data(), options_.invert,
                                  dy.data(), dx.data());
}

void Normalization::adapt(const Tensor& data) {
  if (fixed_statistics()) {
    throw ValueError(
        label() + ": adapt() needs a layer without constructor mean/variance (it has no weights)");
  }
  if (data.rank() < 2 || data.shape()[0] == 0) {
    throw ValueError(label() + ": adapt() needs a non-empty batch (N, ...); received shape " +
                     data.shape().str());
  }
  const Shape per_sample(
      std::vector<std::int64_t>(data.shape().dims().begin() + 1, data.shape().dims().end()));
  if (!built()) {
    Random unused(0);
    build(per_sample, unused);
  } else {
    bool ok = per_sample.rank() == input_shape().rank();
    for (int a = first_kept_; ok && a <= last_kept_; ++a)
      ok = per_sample[a - 1] == input_shape()[a - 1];
    if (!ok) {
      throw ShapeError(label() + ": the layer was built with input shape " + input_shape().str() +
                       " but adapt() received data of per-sample shape " + per_sample.str() +
                       " (the kept axes must match)");
    }
  }
  const View v = view_of(data.shape());
  kernels::normalization_moments(v.outer, v.channels, v.inner, data.data(), mean_->value.data(),
                                 variance_->value.data());
}

}  // namespace bnorm
