// bnorm/layers/merge.hpp — Keras merge layers: n inputs -> 1 output (Add, Subtract, Multiply,
// Average, Concatenate), called on a list: Add()({a, b}).
//
// Elementwise merges take inputs of the same per-sample rank whose dimensions are equal or 1
// (broadcast, as Keras's merge layers and NumPy do: EfficientNet's squeeze-and-excitation
// multiplies (H, W, C) by (1, 1, C)); the gradient of a broadcast input is summed over the
// broadcast axes. Concatenate joins inputs along `axis`, every other dimension equal.
#pragma once

#include <string>
#include <vector>

#include "bnorm/layers/layer.hpp"

namespace bnorm {

class Merge : public Layer {
 public:
  int min_inputs() const noexcept override { return 2; }
  int max_inputs() const noexcept override { return 1 << 20; }
  // A merge has no single-input form: ValueError.
  Shape output_shape(const Shape& input_shape) const override;
  Shape output_shape_for(std::span<const Shape> input_shapes) const override;
  void build_inputs(std::span<const Shape> input_shapes, Random& rng) override;
  const Tensor& forward_inputs(std::span<const Tensor* const> xs, Mode mode) override;
  void backward_inputs(const Tensor& dy, std::span<const bool> need_dx,
                       std::span<const Tensor*> dxs) override;
  // Per-sample shapes of the inputs once built.
  const std::vector<Shape>& input_shapes() const noexcept { return input_shapes_; }

 protected:
  explicit Merge(std::string name) : Layer(std::move(name)) {}
  // Output shape of valid inputs; ShapeError "<label>: ..." otherwise.
  virtual Shape merged_shape(std::span<const Shape> input_shapes) const = 0;
  virtual void merge_forward(std::span<const Tensor* const> xs, Tensor& y) = 0;
  virtual void merge_backward(const Tensor& dy, std::span<const bool> need_dx,
                              std::span<const Tensor*> dxs) = 0;
  void do_build(const Shape&, Random&) override {}
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;

  std::vector<Shape> input_shapes_;
  Shape output_template_;              // the output's full shape with batch 1
  std::vector<const Tensor*> inputs_;  // of the last forward (the model keeps them alive)
  std::vector<Tensor> grads_;          // one gradient buffer per input
};

// Elementwise merges with NumPy broadcasting over dimensions of size 1.
class ElementwiseMerge : public Merge {
 protected:
  enum class Op { add, subtract, multiply, average };
  ElementwiseMerge(std::string name, Op op) : Merge(std::move(name)), op_(op) {}
  Shape merged_shape(std::span<const Shape> input_shapes) const override;
  void merge_forward(std::span<const Tensor* const> xs, Tensor& y) override;
  void merge_backward(const Tensor& dy, std::span<const bool> need_dx,
                      std::span<const Tensor*> dxs) override;

 private:
  bool same_shapes() const noexcept;
  Op op_;
};

// y = x_0 + x_1 + ... (Keras Add; the residual connection).
class Add final : public ElementwiseMerge {
 public:
  Add() : ElementwiseMerge("add", Op::add) {}
  std::string class_name() const override { return "Add"; }

 protected:
  std::unique_ptr<Layer> do_clone() const override { return std::make_unique<Add>(); }
};

// y = x_0 - x_1 (exactly two inputs).
class Subtract final : public ElementwiseMerge {
 public:
  Subtract() : ElementwiseMerge("subtract", Op::subtract) {}
  std::string class_name() const override { return "Subtract"; }
  int max_inputs() const noexcept override { return 2; }

 protected:
  std::unique_ptr<Layer> do_clone() const override { return std::make_unique<Subtract>(); }
};

// y = x_0 * x_1 * ...
class Multiply final : public ElementwiseMerge {
 public:
  Multiply() : ElementwiseMerge("multiply", Op::multiply) {}
  std::string class_name() const override { return "Multiply"; }

 protected:
  std::unique_ptr<Layer> do_clone() const override { return std::make_unique<Multiply>(); }
};

// y = (x_0 + x_1 + ...) / n
class Average final : public ElementwiseMerge {
 public:
  Average() : ElementwiseMerge("average", Op::average) {}
  std::string class_name() const override { return "Average"; }

 protected:
  std::unique_ptr<Layer> do_clone() const override { return std::make_unique<Average>(); }
};

// Keras Concatenate(axis=-1): axis counts the batch dimension (axis=1 is the first per-sample
// axis; axis 0, the batch, is a ValueError).
class Concatenate final : public Merge {
 public:
  explicit Concatenate(int axis = -1);
  std::string class_name() const override { return "Concatenate"; }
  int axis() const noexcept { return axis_; }

 protected:
  Shape merged_shape(std::span<const Shape> input_shapes) const override;
  void merge_forward(std::span<const Tensor* const> xs, Tensor& y) override;
  void merge_backward(const Tensor& dy, std::span<const bool> need_dx,
                      std::span<const Tensor*> dxs) override;
  std::unique_ptr<Layer> do_clone() const override { return std::make_unique<Concatenate>(axis_); }

 private:
  int axis_;
  int batch_axis_ = 1;  // axis_ normalized against the batch tensor, once built
};

}  // namespace bnorm
