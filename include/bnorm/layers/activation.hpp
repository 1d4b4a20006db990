// bnorm/layers/activation.hpp — Keras Activation layer and the activation names.
#pragma once

#include <string>

#include "bnorm/core/activation_kind.hpp"
#include "bnorm/layers/layer.hpp"

namespace bnorm {

// "relu" -> ActivationKind::relu; ValueError naming the valid names otherwise.
ActivationKind parse_activation(const std::string& name);
std::string activation_name(ActivationKind kind);

class Activation final : public Layer {
 public:
  explicit Activation(std::string activation);
  std::string class_name() const override { return "Activation"; }
  Shape output_shape(const Shape& input_shape) const override { return input_shape; }
  ActivationKind activation() const noexcept { return activation_; }
  const Tensor* softmax_logits() const noexcept override;

 protected:
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  void do_backward_from_logits(const Tensor& dlogits, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override {
    return std::make_unique<Activation>(activation_name(activation_));
  }

 private:
  ActivationKind activation_;
};

}  // namespace bnorm
