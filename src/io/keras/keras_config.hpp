// Keras's JSON model configs (config.json of .keras, model_config of legacy .h5) to and from
// bnorm graphs. Shared by the .keras and .h5 readers/writers; the weights live elsewhere.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "bnorm/model/model.hpp"

namespace bnorm::io::detail::keras {

using json = nlohmann::ordered_json;

// Where one bnorm layer's weights are in the Keras files.
struct WeightSource {
  std::shared_ptr<Layer> layer;
  Shape input_shape;         // per sample, of the layer's first call
  std::string keras_path;    // .keras: "layers/dense_1" (then "/vars/<i>")
  std::string legacy_group;  // legacy .h5: the group under model_weights (top-level layer name)
  std::string legacy_layer;  // legacy .h5 inside a nested model's group: the inner layer name
};

// A model described by a Keras config, with its layers created but not built: the graph's ends
// and where each layer's weights come from. Building (Model's constructor) allocates weights, so
// the weights' shapes are checked against the file before it.
struct ParsedModel {
  std::string name;
  bool sequential = false;
  std::vector<SymbolicTensor> inputs, outputs;  // functional
  Shape input_shape;                            // sequential: the chain's input
  std::vector<WeightSource> layers;             // every layer once, in creation order
  json compile;                                 // compile_config / training_config, or null
  bool legacy = false;
};

// Parses {"class_name": "Sequential"|"Functional"|"Model", "config": {...}} (Keras 3 or legacy
// tf.keras 2 forms). IoError "<context>..." naming the layer, class and problem.
ParsedModel parse_model(const json& model, const std::string& context);

// Builds the Model (allocating its weights) once the caller has checked the weight shapes.
Model build_model(ParsedModel& parsed, const std::string& context);

// Applies compile_config (Keras 3) or training_config (legacy) when bnorm has the optimizer,
// loss and metrics it names; otherwise leaves the model uncompiled.
void apply_compile(Model& model, const json& compile, bool legacy);

// Keras's config of a built bnorm model: the .keras form (module/registered_name envelopes,
// build_config) or the legacy .h5 form. IoError for a layer or option Keras cannot express.
json model_config(const Model& model, const std::string& context, bool legacy);
json compile_config(const Model& model);

// The Keras name of each layer's weights group, in the order Keras saves them: for .keras,
// "layers/<snake_case(class)>[_N]"; pairs (layer, path). Inputs (functional) come first.
std::vector<std::pair<const Layer*, std::string>> keras_weight_paths(const Model& model);

// Keras's order of a functional graph's operations (what Keras's model.layers lists): -(i + 1)
// for input i, else an index into model.layers().
std::vector<int> keras_operation_order(const Model::FlatGraph& graph);

// The loaders on bytes in memory (what load_keras / load_keras_h5 read; the fuzz harnesses
// call these directly).
Model load_keras_bytes(std::span<const unsigned char> bytes, const std::string& context);
Model load_h5_bytes(std::span<const unsigned char> bytes, const std::string& context);

}  // namespace bnorm::io::detail::keras
