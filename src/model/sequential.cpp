#include "bnorm/model/sequential.hpp"

#include <algorithm>

#include "bnorm/core/error.hpp"
#include "model/plan.hpp"

namespace bnorm {

Sequential::Sequential(std::uint64_t seed, std::string name) : Model(seed, std::move(name)) {
  sequential_ = true;
}

Sequential::Sequential(Model&& model) : Model(std::move(model)) {
  if (!sequential_)
    throw ValueError("Sequential: model '" + name() + "' is a functional graph, not a chain");
}

void Sequential::add(const Input& input) {
  if (!layers_.empty()) throw ValueError("Sequential: Input must come before any layer");
  graph_ = std::make_shared<GraphDef>();
  graph_->name = name();
  graph_->inputs = {input};
  graph_->outputs = {input};
  input_shape_ = input.shape();
  plan_.reset();
}

Layer& Sequential::add(std::shared_ptr<Layer> layer) {
  if (!layer) throw ValueError("Sequential: cannot add a null layer");
  if (std::any_of(layers_.begin(), layers_.end(), [&](auto& l) { return l == layer; }))
    throw ValueError("Sequential: layer '" + layer->name() + "' is already in the model");
  const std::string& n = layer->name();
  const bool default_name = n.empty() || n == snake_case_name(layer->class_name());
  if (!default_name &&
      std::any_of(layers_.begin(), layers_.end(), [&](auto& l) { return l->name() == n; }))
    throw ValueError("Sequential: a layer named '" + n + "' already exists");
  if (!graph_->inputs.empty()) {
    // Known input: the layer is called and built now, so shape errors surface at add().
    SymbolicTensor out = (*layer)(graph_->outputs[0]);
    set_graph(graph_->inputs, {out});  // layers_ becomes the chain; unchanged on error
  } else {
    if (default_name) {  // named now, as Keras names a layer when it is created
      const std::string stem = snake_case_name(layer->class_name());
      auto taken = [&](const std::string& c) {
        return std::any_of(layers_.begin(), layers_.end(), [&](auto& l) { return l->name() == c; });
      };
      std::string c = stem;
      for (int i = 1; taken(c); ++i) c = stem + "_" + std::to_string(i);
      layer->set_name(c);
    }
    layers_.push_back(layer);
  }
  return *layer;
}

void Sequential::build(const Shape& input_shape) {
  if (!graph_->inputs.empty()) {
    check_same_shape(graph_->inputs[0].shape(), input_shape, "Sequential input");
    if (!plan_ && !layers_.empty()) build_chain(input_shape);
    return;
  }
  // Keras model.build(shape): allowed after layers were added; the Input validates the shape.
  if (layers_.empty()) {
    add(Input(input_shape));
    return;
  }
  build_chain(input_shape);
}

void Sequential::build() {
  if (graph_->inputs.empty())
    throw ValueError("Sequential: cannot build without an input shape (add an Input)");
  build(graph_->inputs[0].shape());
}

Sequential Sequential::folded() const { return Sequential(std::move(*folded_model())); }

}  // namespace bnorm
