// bnorm/model/sequential.hpp — Keras Sequential: a Model whose graph is a chain of layers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "bnorm/model/model.hpp"

namespace bnorm {

// add() builds the chain; everything else (compile/fit/evaluate/predict/summary/weights/
// folding) is Model's one engine. Sequential adds no state of its own.
class Sequential : public Model {
 public:
  // `seed` drives weight initialization, dropout and shuffling: the same seed, data and
  // options give the same weights and the same training run, bit for bit.
  explicit Sequential(std::uint64_t seed = 0, std::string name = "sequential");
  // A Model that is a Sequential (load_model's result, folded_model()); ValueError otherwise.
  Sequential(Model&& model);  // NOLINT(google-explicit-constructor): load_model returns Model
  Sequential(Sequential&&) noexcept = default;
  Sequential& operator=(Sequential&&) noexcept = default;

  // Declares the per-sample input shape (keras.Input); must come before any layer.
  void add(const Input& input);
  Layer& add(std::shared_ptr<Layer> layer);
  // Appends several layers at once: the same checks and names as one add() each, with the graph
  // set once (a 10,000-layer spec builds in milliseconds, not one graph rebuild per layer). On
  // error nothing is added.
  void add(std::vector<std::shared_ptr<Layer>> layers);
  template <class L, class = std::enable_if_t<std::is_base_of_v<Layer, L>>>
  L& add(std::unique_ptr<L> layer) {
    return static_cast<L&>(add(std::shared_ptr<Layer>(std::move(layer))));
  }
  template <class L, class = std::enable_if_t<std::is_base_of_v<Layer, std::decay_t<L>>>>
  std::decay_t<L>& add(L&& layer) {
    return static_cast<std::decay_t<L>&>(add(std::make_shared<std::decay_t<L>>(std::move(layer))));
  }

  // Creates all weights (needs an Input or an explicit shape). Done by fit if needed.
  void build(const Shape& input_shape);
  void build();

  // folded_model() as a Sequential (see Model::folded_model).
  Sequential folded() const;
};

}  // namespace bnorm
