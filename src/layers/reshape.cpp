#include "bnorm/layers/reshape.hpp"

#include <algorithm>

#include "bnorm/core/error.hpp"

namespace bnorm {

namespace {
std::string dims_text(const std::vector<std::int64_t>& dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}
}  // namespace

Reshape::Reshape(std::vector<std::int64_t> target_shape)
    : Layer("reshape"), target_shape_(std::move(target_shape)) {
  const std::string received = "; received target_shape=" + dims_text(target_shape_);
  if (target_shape_.empty() || target_shape_.size() > static_cast<std::size_t>(Shape::kMaxRank - 1))
    throw ValueError("Reshape: target_shape must have 1 to " + std::to_string(Shape::kMaxRank - 1) +
                     " dimensions" + received);
  if (std::count(target_shape_.begin(), target_shape_.end(), -1) > 1)
    throw ValueError("Reshape: there must be at most one unknown dimension (-1) in target_shape" +
                     received);
  for (std::int64_t d : target_shape_)
    if (d < -1) throw ValueError("Reshape: dimensions must be >= 0 or -1" + received);
}

Shape Reshape::output_shape(const Shape& input_shape) const {
  const std::int64_t total = input_shape.size();
  std::int64_t known = 1;
  int unknown = -1;
  for (std::size_t i = 0; i < target_shape_.size(); ++i) {
    if (target_shape_[i] == -1) {
      unknown = static_cast<int>(i);
    } else if (__builtin_mul_overflow(known, target_shape_[i], &known)) {
      known = -1;
      break;
    }
  }
  std::vector<std::int64_t> dims = target_shape_;
  bool ok = known >= 0;
  if (ok && unknown >= 0) {
    ok = known > 0 && total % known == 0;
    if (ok) dims[static_cast<std::size_t>(unknown)] = total / known;
  } else if (ok) {
    ok = known == total;
  }
  if (!ok) {
    throw ShapeError(label() + ": the total size must be unchanged; cannot reshape input shape " +
                     input_shape.str() + " (" + std::to_string(total) +
                     " values) to target_shape " + dims_text(target_shape_));
  }
  return Shape(dims);
}

void Reshape::do_build(const Shape& input_shape, Random&) {
  std::vector<std::int64_t> dims{1};
  const Shape out = output_shape(input_shape);
  dims.insert(dims.end(), out.dims().begin(), out.dims().end());
  batch_output_shape_ = Shape(dims);
}

void Reshape::do_forward(const Tensor& x, Mode, Tensor& y) {
  y.resize_like(batch_output_shape_, 0, x.shape()[0]);  // allocates nothing in steady state
  std::copy(x.data(), x.data() + x.size(), y.data());
}

void Reshape::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  if (!compute_dx) return;
  dx.resize(last_input_->shape());
  std::copy(dy.data(), dy.data() + dy.size(), dx.data());
}

}  // namespace bnorm
