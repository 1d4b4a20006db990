// bnorm/layers/dense.hpp — Keras Dense: y = activation(x @ kernel + bias) over the last axis.
#pragma once

#include <string>

#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/layer.hpp"

namespace bnorm {

class Dense final : public Layer {
 public:
  struct Options {
    std::int64_t units = 0;
    std::string activation = "linear";
    bool use_bias = true;
    Initializer kernel_initializer = Initializer::glorot_uniform();
    Initializer bias_initializer = Initializer::zeros();
    float kernel_l2 = 0.0f;
    float bias_l2 = 0.0f;
  };
  explicit Dense(Options options);
  Dense(std::int64_t units, std::string activation = "linear")
      : Dense(Options{.units = units, .activation = std::move(activation)}) {}

  std::string class_name() const override { return "Dense"; }
  Shape output_shape(const Shape& input_shape) const override;
  const Options& options() const noexcept { return options_; }
  ActivationKind activation() const noexcept { return activation_; }
  const Tensor* softmax_logits() const noexcept override;

 protected:
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  void do_backward_from_logits(const Tensor& dlogits, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override { return std::make_unique<Dense>(options_); }

 private:
  void backward_linear(const Tensor& dz, bool compute_dx, Tensor& dx);
  Options options_;
  ActivationKind activation_;
  Variable* kernel_ = nullptr;
  Variable* bias_ = nullptr;
  Tensor z_;  // pre-activation, kept for softmax (its logits) and for silu, gelu, hard_silu
  Tensor dz_;
};

}  // namespace bnorm
