// bnorm/layers/elementwise.hpp — Keras 3 layers that map each value on its own: ReLU (with
// max_value, negative_slope, threshold), Rescaling and Identity. None has weights.
#pragma once

#include <optional>
#include <vector>

#include "bnorm/layers/layer.hpp"

namespace bnorm {

// Keras 3 keras.layers.ReLU: y = min(x, max_value) for x > threshold, and
// negative_slope * (x - threshold) otherwise (the exact float32 expression, the gradients at the
// kinks and the one place where Keras's docstring and code differ are in
// src/kernels/elementwise.hpp).
class ReLU final : public Layer {
 public:
  struct Options {
    std::optional<float> max_value;  // Keras None: no upper clip
    float negative_slope = 0.0f;
    float threshold = 0.0f;
  };
  ReLU() : ReLU(Options{}) {}
  // ValueError (one line, Keras's wording) for max_value < 0, negative_slope < 0, threshold < 0
  // or a non-finite value.
  explicit ReLU(Options options);
  std::string class_name() const override { return "ReLU"; }
  Shape output_shape(const Shape& input_shape) const override { return input_shape; }
  const Options& options() const noexcept { return options_; }

 protected:
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override { return std::make_unique<ReLU>(options_); }

 private:
  Options options_;
};

// Keras 3 keras.layers.Rescaling: y = x * scale + offset (float32, Mul then Add). scale and offset
// are scalars (one value) or per channel (as many values as the input's last axis). No weights.
class Rescaling final : public Layer {
 public:
  struct Options {
    std::vector<float> scale{1.0f};
    std::vector<float> offset{0.0f};
  };
  // ValueError for an empty or non-finite scale/offset.
  explicit Rescaling(Options options);
  explicit Rescaling(float scale, float offset = 0.0f)
      : Rescaling(Options{.scale = {scale}, .offset = {offset}}) {}
  std::string class_name() const override { return "Rescaling"; }
  Shape output_shape(const Shape& input_shape) const override { return input_shape; }
  const Options& options() const noexcept { return options_; }

 protected:
  // ShapeError when a per-channel scale/offset does not match the last axis.
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override { return std::make_unique<Rescaling>(options_); }

 private:
  Options options_;
};

// Keras 3 keras.layers.Identity: y = x (a copy: layers own their outputs).
class Identity final : public Layer {
 public:
  Identity() : Layer("identity") {}
  std::string class_name() const override { return "Identity"; }
  Shape output_shape(const Shape& input_shape) const override { return input_shape; }

 protected:
  void do_build(const Shape&, Random&) override {}
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override { return std::make_unique<Identity>(); }
};

}  // namespace bnorm
