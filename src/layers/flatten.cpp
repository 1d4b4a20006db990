#include "bnorm/layers/flatten.hpp"

#include <algorithm>

#include "kernels/conv2d.hpp"
#include "layers/spatial.hpp"

namespace bnorm {

Flatten::Flatten() : Flatten(Options{}) {}

Flatten::Flatten(Options options) : Layer("flatten"), options_(std::move(options)) {
  options_.data_format = detail::normalize_data_format("Flatten", options_.data_format);
}

Shape Flatten::output_shape(const Shape& input_shape) const { return Shape{input_shape.size()}; }

void Flatten::do_build(const Shape& input_shape, Random&) {
  // Keras transposes (N, C, d1, ..., dk) to (N, d1, ..., dk, C); for (N, C) that is the identity.
  transpose_ = options_.data_format == "channels_first" && input_shape.rank() >= 2;
  channels_ = input_shape.rank() >= 1 ? input_shape[0] : 1;
  inner_ = channels_ > 0 ? input_shape.size() / channels_ : 0;
}

void Flatten::do_forward(const Tensor& x, Mode, Tensor& y) {
  const std::int64_t n = x.shape()[0];
  y.resize(Shape{n, x.size() / std::max<std::int64_t>(1, n)});
  if (transpose_) {
    kernels::transpose_channels_first_to_last(n, channels_, inner_, x.data(), y.data());
  } else {
    std::copy(x.data(), x.data() + x.size(), y.data());
  }
}

void Flatten::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  if (!compute_dx) return;
  dx.resize(last_input_->shape());
  if (transpose_) {
    kernels::transpose_channels_last_to_first(dy.shape()[0], channels_, inner_, dy.data(),
                                              dx.data());
  } else {
    std::copy(dy.data(), dy.data() + dy.size(), dx.data());
  }
}

}  // namespace bnorm
