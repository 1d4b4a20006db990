// bnorm/layers/reshape.hpp — Keras 3 Reshape: (N, ...) -> (N, *target_shape), row-major order
// unchanged. target_shape is per sample and may hold one -1, inferred from the input size.
#pragma once

#include <cstdint>
#include <vector>

#include "bnorm/layers/layer.hpp"

namespace bnorm {

class Reshape final : public Layer {
 public:
  // ValueError for an empty target_shape, more than one -1 or a dimension below -1.
  explicit Reshape(std::vector<std::int64_t> target_shape);
  std::string class_name() const override { return "Reshape"; }
  // ShapeError (one line) when the sizes differ or -1 cannot be inferred.
  Shape output_shape(const Shape& input_shape) const override;
  const std::vector<std::int64_t>& target_shape() const noexcept { return target_shape_; }

 protected:
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override {
    return std::make_unique<Reshape>(target_shape_);
  }

 private:
  std::vector<std::int64_t> target_shape_;
  Shape batch_output_shape_;  // (1, *output_shape) once built
};

}  // namespace bnorm
