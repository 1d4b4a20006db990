// bnorm/layers/node.hpp — symbolic tensors: what Keras's functional API builds a graph from.
//
//   Input x(Shape{28, 28, 1});                 // keras.Input(shape=(28, 28, 1))
//   SymbolicTensor y = Conv2D(...)(x);         // a node: one call of a layer on its inputs
//   SymbolicTensor z = Add()({y, x});          // merges take a list
//
// A symbolic tensor carries its per-sample shape (no batch dimension) and the node that
// produces it; nodes point to their inputs, so the graph is owned by the tensors at its ends
// (Model keeps its inputs and outputs). Nothing is computed until a Model runs the graph.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bnorm/core/tensor.hpp"

namespace bnorm {

class Layer;
struct Node;
struct GraphDef;

class SymbolicTensor {
 public:
  SymbolicTensor() = default;
  SymbolicTensor(std::shared_ptr<Node> node, int index) : node_(std::move(node)), index_(index) {}
  bool defined() const noexcept { return node_ != nullptr; }
  // Per-sample shape (Keras prints it with a leading None).
  const Shape& shape() const;
  // Name of what produces it: the layer's name, or the input's.
  std::string producer_name() const;
  const std::shared_ptr<Node>& node() const noexcept { return node_; }
  int index() const noexcept { return index_; }
  bool operator==(const SymbolicTensor& o) const noexcept {
    return node_ == o.node_ && index_ == o.index_;
  }

 private:
  std::shared_ptr<Node> node_;
  int index_ = 0;
};

// keras.Input(shape, name): a model input. Copies refer to the same input.
class Input : public SymbolicTensor {
 public:
  // ShapeError for a rank outside 1..4 (per sample) or a dimension < 1.
  explicit Input(Shape shape, std::string name = "");
};

// One call: of a layer (layer set), of a nested model (model set), or a model input (neither).
struct Node {
  std::shared_ptr<Layer> layer;
  std::shared_ptr<const GraphDef> model;
  std::string input_name;  // inputs only; "" until a Model names it ("input_layer", ...)
  std::vector<SymbolicTensor> inputs;
  std::vector<Shape> output_shapes;
};

// What a Model is made of: its name and the tensors at its ends (shared with nested calls).
struct GraphDef {
  std::string name;
  std::vector<SymbolicTensor> inputs, outputs;
};

}  // namespace bnorm
