#include "bnorm/layers/flatten.hpp"

#include <algorithm>

namespace bnorm {

Flatten::Flatten() : Layer("flatten") {}

Shape Flatten::output_shape(const Shape& input_shape) const { return Shape{input_shape.size()}; }

void Flatten::do_build(const Shape&, Random&) {}

void Flatten::do_forward(const Tensor& x, Mode, Tensor& y) {
  y.resize(Shape{x.shape()[0], x.size() / std::max<std::int64_t>(1, x.shape()[0])});
  std::copy(x.data(), x.data() + x.size(), y.data());
}

void Flatten::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  if (!compute_dx) return;
  dx.resize(last_input_->shape());
  std::copy(dy.data(), dy.data() + dy.size(), dx.data());
}

}  // namespace bnorm
