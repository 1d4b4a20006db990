#include "bnorm/layers/elementwise.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "bnorm/core/error.hpp"
#include "kernels/elementwise.hpp"

namespace bnorm {

namespace {
std::string num(float v) {
  std::string s = std::to_string(v);
  return s;
}

kernels::ReluParams relu_params(const ReLU::Options& o) {
  kernels::ReluParams p;
  p.has_max_value = o.max_value.has_value();
  p.max_value = o.max_value.value_or(0.0f);
  p.negative_slope = o.negative_slope;
  p.threshold = o.threshold;
  return p;
}

void check_values(const std::vector<float>& v, const char* what) {
  if (v.empty()) throw ValueError(std::string("Rescaling: ") + what + " must not be empty");
  for (float f : v)
    if (!std::isfinite(f))
      throw ValueError(std::string("Rescaling: ") + what + " must be finite; received " + num(f));
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// ReLU

ReLU::ReLU(Options options) : Layer("re_lu"), options_(options) {
  if (options_.max_value && !(*options_.max_value >= 0.0f && std::isfinite(*options_.max_value))) {
    throw ValueError(
        "ReLU: max_value of a ReLU layer cannot be a negative value; received max_value=" +
        num(*options_.max_value));
  }
  if (!(options_.negative_slope >= 0.0f) || !std::isfinite(options_.negative_slope)) {
    throw ValueError(
        "ReLU: negative_slope of a ReLU layer cannot be a negative value; received "
        "negative_slope=" +
        num(options_.negative_slope));
  }
  if (!(options_.threshold >= 0.0f) || !std::isfinite(options_.threshold)) {
    throw ValueError(
        "ReLU: threshold of a ReLU layer cannot be a negative value; received threshold=" +
        num(options_.threshold));
  }
}

void ReLU::do_build(const Shape&, Random&) {}

void ReLU::do_forward(const Tensor& x, Mode, Tensor& y) {
  y.resize(x.shape());
  kernels::relu_forward(relu_params(options_), x.size(), x.data(), y.data());
}

void ReLU::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  if (!compute_dx) return;
  dx.resize(dy.shape());
  kernels::relu_backward(relu_params(options_), dy.size(), last_input_->data(), dy.data(),
                         dx.data());
}

// ---------------------------------------------------------------------------------------------
// Rescaling

Rescaling::Rescaling(Options options) : Layer("rescaling"), options_(std::move(options)) {
  check_values(options_.scale, "scale");
  check_values(options_.offset, "offset");
}

void Rescaling::do_build(const Shape& input_shape, Random&) {
  const std::int64_t channels = input_shape[input_shape.rank() - 1];
  for (const auto* v : {&options_.scale, &options_.offset}) {
    const auto n = static_cast<std::int64_t>(v->size());
    if (n != 1 && n != channels) {
      throw ShapeError(label() + ": " + (v == &options_.scale ? "scale" : "offset") + " has " +
                       std::to_string(n) + " values; expected 1 or " + std::to_string(channels) +
                       " (the last axis of input shape " + input_shape.str() + ")");
    }
  }
}

void Rescaling::do_forward(const Tensor& x, Mode, Tensor& y) {
  y.resize(x.shape());
  const std::int64_t cols = x.shape()[x.rank() - 1];
  kernels::rescale_forward(x.size() / cols, cols, options_.scale.data(), options_.scale.size() > 1,
                           options_.offset.data(), options_.offset.size() > 1, x.data(), y.data());
}

void Rescaling::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  if (!compute_dx) return;
  dx.resize(dy.shape());
  const std::int64_t cols = dy.shape()[dy.rank() - 1];
  kernels::rescale_backward(dy.size() / cols, cols, options_.scale.data(),
                            options_.scale.size() > 1, dy.data(), dx.data());
}

// ---------------------------------------------------------------------------------------------
// Identity

void Identity::do_forward(const Tensor& x, Mode, Tensor& y) {
  y.resize(x.shape());
  std::copy(x.data(), x.data() + x.size(), y.data());
}

void Identity::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  if (!compute_dx) return;
  dx.resize(dy.shape());
  std::copy(dy.data(), dy.data() + dy.size(), dx.data());
}

}  // namespace bnorm
