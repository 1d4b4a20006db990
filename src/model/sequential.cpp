#include "bnorm/model/sequential.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

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
  Layer& added = *layer;
  add(std::vector<std::shared_ptr<Layer>>{std::move(layer)});
  return added;
}

void Sequential::add(std::vector<std::shared_ptr<Layer>> layers) {
  std::set<const Layer*> present;
  std::set<std::string> names;
  for (const auto& l : layers_) {
    present.insert(l.get());
    names.insert(l->name());
  }
  for (const auto& layer : layers) {
    if (!layer) throw ValueError("Sequential: cannot add a null layer");
    if (!present.insert(layer.get()).second)
      throw ValueError("Sequential: layer '" + layer->name() + "' is already in the model");
    const std::string& n = layer->name();
    const bool default_name = n.empty() || n == snake_case_name(layer->class_name());
    if (!default_name && !names.insert(n).second)
      throw ValueError("Sequential: a layer named '" + n + "' already exists");
  }
  if (layers.empty()) return;
  if (!graph_->inputs.empty()) {
    // Known input: the layers are called and built now, so shape errors surface at add(); the
    // graph is set once for all of them (layers_ becomes the chain; unchanged on error).
    SymbolicTensor out = graph_->outputs[0];
    for (const auto& layer : layers) out = (*layer)(out);
    set_graph(graph_->inputs, {out});
    return;
  }
  // Unknown input: named now, as Keras names a layer when it is created (dense, dense_1, ...),
  // with the next free suffix per class name.
  std::map<std::string, int> next_suffix;
  for (const auto& layer : layers) {
    const std::string& n = layer->name();
    if (n.empty() || n == snake_case_name(layer->class_name())) {
      const std::string stem = snake_case_name(layer->class_name());
      int& k = next_suffix[stem];
      std::string c = k == 0 ? stem : stem + "_" + std::to_string(k);
      while (names.count(c)) c = stem + "_" + std::to_string(++k);
      ++k;
      layer->set_name(c);
      names.insert(c);
    }
    layers_.push_back(layer);
  }
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
