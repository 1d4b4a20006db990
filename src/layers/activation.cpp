#include "bnorm/layers/activation.hpp"

#include <algorithm>
#include <cctype>

#include "bnorm/core/error.hpp"
#include "kernels/activation.hpp"

namespace bnorm {

namespace {
// Keras 3 names, canonical first; "swish" and "hard_swish" are Keras's aliases.
struct NamedKind {
  const char* name;
  ActivationKind kind;
};
constexpr NamedKind kNames[] = {
    {"linear", ActivationKind::linear},
    {"relu", ActivationKind::relu},
    {"sigmoid", ActivationKind::sigmoid},
    {"tanh", ActivationKind::tanh},
    {"softmax", ActivationKind::softmax},
    {"silu", ActivationKind::silu},
    {"gelu", ActivationKind::gelu},
    {"hard_sigmoid", ActivationKind::hard_sigmoid},
    {"hard_silu", ActivationKind::hard_silu},
    {"elu", ActivationKind::elu},
    {"leaky_relu", ActivationKind::leaky_relu},
    {"relu6", ActivationKind::relu6},
    {"swish", ActivationKind::silu},
    {"hard_swish", ActivationKind::hard_silu},
};
}  // namespace

ActivationKind parse_activation(const std::string& name) {
  std::string n = name;
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
  if (n.empty()) return ActivationKind::linear;
  for (const NamedKind& k : kNames)
    if (n == k.name) return k.kind;
  std::string known;
  for (const NamedKind& k : kNames) known += (known.empty() ? "" : ", ") + std::string(k.name);
  throw ValueError("unknown activation '" + name + "'; expected one of: " + known);
}

std::string activation_name(ActivationKind kind) {
  for (const NamedKind& k : kNames)
    if (k.kind == kind) return k.name;
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
  // The input is the pre-activation that silu, gelu and hard_silu differentiate through; the
  // model keeps it alive until backward, so nothing is stored.
  kernels::activation_backward(activation_, dy.size() / cols, cols, last_input_->data(),
                               output_.data(), dy.data(), dx.data());
}

void Activation::do_backward_from_logits(const Tensor& dlogits, bool compute_dx, Tensor& dx) {
  if (compute_dx) dx = dlogits;
}

}  // namespace bnorm
