#include "bnorm/layers/dropout.hpp"

#include <cmath>

#include "bnorm/core/error.hpp"

namespace bnorm {

Dropout::Dropout(float rate) : Layer("dropout"), rate_(rate) {
  if (!(rate >= 0.0f && rate < 1.0f)) {
    throw ValueError("Dropout: rate must be in [0, 1); received " + std::to_string(rate));
  }
}

void Dropout::do_build(const Shape&, Random& rng) { rng_ = rng.split(); }

void Dropout::do_forward(const Tensor& x, Mode mode, Tensor& y) {
  y.resize(x.shape());
  last_training_ = mode == Mode::training && rate_ > 0.0f;
  if (!last_training_) {
    std::copy(x.data(), x.data() + x.size(), y.data());
    return;
  }
  mask_.resize(x.shape());
  const float keep_scale = 1.0f / (1.0f - rate_);
  for (std::int64_t i = 0; i < x.size(); ++i) {
    mask_[i] = rng_.uniform() >= rate_ ? keep_scale : 0.0f;
    y[i] = x[i] * mask_[i];
  }
}

void Dropout::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  if (!compute_dx) return;
  dx.resize(dy.shape());
  for (std::int64_t i = 0; i < dy.size(); ++i) dx[i] = last_training_ ? dy[i] * mask_[i] : dy[i];
}

}  // namespace bnorm
