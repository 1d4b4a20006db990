#include "bnorm/layers/activation.hpp"

#include <algorithm>
#include <cctype>

#include "bnorm/core/error.hpp"
#include "kernels/activation.hpp"

namespace bnorm {

ActivationKind parse_activation(const std::string& name) {
  std::string n = name;
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
  if (n == "linear" || n.empty()) return ActivationKind::linear;
  if (n == "relu") return ActivationKind::relu;
  if (n == "sigmoid") return ActivationKind::sigmoid;
  if (n == "tanh") return ActivationKind::tanh;
  if (n == "softmax") return ActivationKind::softmax;
  throw ValueError("unknown activation '" + name +
                   "'; expected one of: linear, relu, sigmoid, tanh, softmax");
}

std::string activation_name(ActivationKind kind) {
  switch (kind) {
    case ActivationKind::linear:
      return "linear";
    case ActivationKind::relu:
      return "relu";
    case ActivationKind::sigmoid:
      return "sigmoid";
    case ActivationKind::tanh:
      return "tanh";
    case ActivationKind::softmax:
      return "softmax";
  }
  return "linear";
}

Activation::Activation(std::string activation)
    : Layer("activation"), activation_(parse_activation(activation)) {}

void Activation::do_build(const Shape&, Random&) {}

const Tensor* Activation::softmax_logits() const noexcept {
  return activation_ == ActivationKind::softmax && last_input_ ? last_input_ : nullptr;
}

// Activations act over the last axis (softmax) or elementwise.
void Activation::do_forward(const Tensor& x, Mode, Tensor& y) {
  y.resize(x.shape());
  const std::int64_t cols = x.shape()[x.rank() - 1];
  kernels::activation_forward(activation_, x.size() / cols, cols, x.data(), y.data());
}

void Activation::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  if (!compute_dx) return;
  dx.resize(dy.shape());
  const std::int64_t cols = dy.shape()[dy.rank() - 1];
  kernels::activation_backward(activation_, dy.size() / cols, cols, output_.data(), dy.data(),
                               dx.data());
}

void Activation::do_backward_from_logits(const Tensor& dlogits, bool compute_dx, Tensor& dx) {
  if (compute_dx) dx = dlogits;
}

}  // namespace bnorm
