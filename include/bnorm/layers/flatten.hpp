// bnorm/layers/flatten.hpp — Keras Flatten: (N, d1, d2, ...) -> (N, d1 * d2 * ...).
#pragma once

#include "bnorm/layers/layer.hpp"

namespace bnorm {

class Flatten final : public Layer {
 public:
  Flatten();
  std::string class_name() const override { return "Flatten"; }
  Shape output_shape(const Shape& input_shape) const override;

 protected:
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override { return std::make_unique<Flatten>(); }
};

}  // namespace bnorm
