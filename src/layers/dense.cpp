#include "bnorm/layers/dense.hpp"

#include <algorithm>
#include <cmath>

#include "bnorm/core/error.hpp"
#include "kernels/activation.hpp"
#include "kernels/gemm.hpp"

namespace bnorm {

Dense::Dense(Options options)
    : Layer("dense"),
      options_(std::move(options)),
      activation_(parse_activation(options_.activation)) {
  if (options_.units < 1) {
    throw ValueError("Dense: units must be >= 1; received " + std::to_string(options_.units));
  }
  if (!(options_.kernel_l2 >= 0.0f) || !(options_.bias_l2 >= 0.0f)) {
    throw ValueError("Dense: L2 regularization factors must be >= 0");
  }
}

Shape Dense::output_shape(const Shape& input_shape) const {
  std::vector<std::int64_t> dims = input_shape.dims();
  if (dims.empty()) throw ShapeError(label() + ": input must have at least one axis");
  dims.back() = options_.units;
  return Shape(dims);
}

void Dense::do_build(const Shape& input_shape, Random& rng) {
  const std::int64_t in = input_shape[input_shape.rank() - 1];
  if (in < 1)
    throw ShapeError(label() + ": input has 0 features; received shape " + input_shape.str());
  kernel_ = &add_weight("kernel", Shape{in, options_.units}, true, options_.kernel_l2);
  options_.kernel_initializer.apply(kernel_->value, rng, in, options_.units);
  if (options_.use_bias) {
    bias_ = &add_weight("bias", Shape{options_.units}, true, options_.bias_l2);
    options_.bias_initializer.apply(bias_->value, rng, in, options_.units);
  }
}

const Tensor* Dense::softmax_logits() const noexcept {
  return activation_ == ActivationKind::softmax && !z_.empty() ? &z_ : nullptr;
}

// Dense acts on the last axis: a batch (N, ..., in) is rows = N * ... of `in` features.
// GEMM with beta = 0, then one epilogue pass y = activation(z + bias). softmax keeps z (its
// logits feed the fused cross-entropy), and so do silu, gelu and hard_silu, whose derivative needs
// the pre-activation (kernels::activation_backward_needs_input; keeping z costs one output-sized
// tensor, recomputing it would cost the GEMM again); the others differentiate through y itself.
void Dense::do_forward(const Tensor& x, Mode, Tensor& y) {
  const std::int64_t in = kernel_->value.shape()[0], units = options_.units;
  const std::int64_t rows = x.size() / in;
  const int last = x.rank() - 1;
  y.resize_like(x.shape(), last, units);
  const bool keep_z = activation_ == ActivationKind::softmax ||
                      kernels::activation_backward_needs_input(activation_);
  Tensor& z = keep_z ? z_ : y;
  if (&z != &y) z.resize_like(x.shape(), last, units);
  // The GEMMs are split by bnorm in fixed blocks (kernels::gemm_*_blocks): threads without
  // changing the bits.
  kernels::gemm_column_blocks({rows, units, in}, false, false, x.data(), in, kernel_->value.data(),
                              units, z.data(), units);
  kernels::bias_activation_forward(activation_, rows, units, bias_ ? bias_->value.data() : nullptr,
                                   z.data(), y.data());
}

void Dense::backward_linear(const Tensor& dz, bool compute_dx, Tensor& dx) {
  const Tensor& x = *last_input_;
  const std::int64_t in = kernel_->value.shape()[0], units = options_.units;
  const std::int64_t rows = x.size() / in;
  if (trainable()) {
    // dkernel = x^T dz; dbias = column sums of dz.
    kernels::gemm_row_blocks({in, units, rows}, true, false, x.data(), in, dz.data(), units,
                             kernel_->gradient.data(), units);
    if (bias_) kernels::sum_rows(rows, units, dz.data(), bias_->gradient.data());
  }
  if (!compute_dx) return;
  dx.resize(x.shape());
  kernels::gemm_column_blocks({rows, in, units}, false, true, dz.data(), units,
                              kernel_->value.data(), units, dx.data(), in);
}

void Dense::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  if (activation_ == ActivationKind::linear) return backward_linear(dy, compute_dx, dx);
  const std::int64_t units = options_.units;
  dz_.resize(dy.shape());
  const float* z = kernels::activation_backward_needs_input(activation_) ? z_.data() : nullptr;
  kernels::activation_backward(activation_, dy.size() / units, units, z, output_.data(), dy.data(),
                               dz_.data());
  backward_linear(dz_, compute_dx, dx);
}

void Dense::do_backward_from_logits(const Tensor& dlogits, bool compute_dx, Tensor& dx) {
  backward_linear(dlogits, compute_dx, dx);
}

}  // namespace bnorm
