// bnorm/layers/dropout.hpp — Keras Dropout: in training, zero each value with probability
// `rate` and scale the rest by 1 / (1 - rate); in inference, identity.
#pragma once

#include "bnorm/layers/layer.hpp"

namespace bnorm {

class Dropout final : public Layer {
 public:
  explicit Dropout(float rate);  // ValueError unless 0 <= rate < 1
  std::string class_name() const override { return "Dropout"; }
  Shape output_shape(const Shape& input_shape) const override { return input_shape; }
  float rate() const noexcept { return rate_; }

 protected:
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override { return std::make_unique<Dropout>(rate_); }
  void copy_state_from(const Layer& other) override {
    rng_ = static_cast<const Dropout&>(other).rng_;
  }

 private:
  float rate_;
  Random rng_;
  Tensor mask_;  // scale per value of the last training forward (0 or 1 / (1 - rate))
  bool last_training_ = false;
};

}  // namespace bnorm
