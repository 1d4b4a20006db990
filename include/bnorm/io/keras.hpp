// bnorm/io/keras.hpp — Keras model files in and out (docs/model-format.md, "Keras files").
//
//   Model m = io::load_keras("model.keras");   // Keras 3: zip of config.json, model.weights.h5
//   io::save_keras(m, "out.keras");            // loads in keras.saving.load_model (safe mode)
//   Model old = io::load_keras_h5("model.h5"); // legacy HDF5 (tf.keras 2 and Keras 3 .h5)
//
// Nothing a file names is executed or resolved as code: layers come from an allow-list of the
// Keras classes bnorm implements; Lambda, custom classes, TFSMLayer, quantized dtype policies,
// constraints and regularizers other than L2 are refused with one line naming the layer, its
// class and what is not supported. Zip members and HDF5 datasets are size-checked against the
// config before anything is allocated; HDF5 soft/external links, external storage and virtual
// datasets are refused. A failed load throws IoError and leaves nothing half-built.
#pragma once

#include <memory>
#include <string>

#include "bnorm/model/model.hpp"

namespace bnorm::io {

// Keras 3 `.keras` archives (Sequential and Functional, nested models flattened into one graph,
// shared layers kept shared). compile_config (Adam, SGD, RMSprop; the losses bnorm has;
// "accuracy") is applied when present. Optimizer state in the file is not restored.
Model load_keras(const std::string& path);
// Atomic (temp + rename). IoError for a model Keras cannot express (a layer class or option
// Keras lacks, e.g. BatchNormalization with PyTorch's unbiased moving variance).
void save_keras(const Model& model, const std::string& path);

// Legacy HDF5 model files: root attribute model_config + group model_weights, as written by
// tf.keras 2.x and by Keras 3's model.save("m.h5"). Weights are matched through the
// layer_names / weight_names attributes, never HDF5's alphabetical order.
Model load_keras_h5(const std::string& path);
// Writes the legacy HDF5 layout (Keras 3 form) that keras.models.load_model reads.
void save_keras_h5(const Model& model, const std::string& path);

// Weights-only files into a built model: Keras 3 `.weights.h5` (layers/<class>[_N]/vars/<i>)
// or the legacy layout (root layer_names, as keras.applications ships pretrained weights),
// matched by layer name. On error the model's weights are unchanged.
void load_keras_weights(Model& model, const std::string& path);

// A new, unbuilt layer from Keras's constructor arguments as a JSON object, what
// keras.layers.<class_name>(**args) takes and its get_config() returns: {"units": 64,
// "activation": "relu"} for Dense; "name" and "trainable" included; arguments left out take
// Keras's defaults. The same translation as the file loaders (initializers by name or object,
// L2 regularizers, float32 dtype). ValueError "<class_name>(): <problem>" for an unknown class,
// argument or value.
std::shared_ptr<Layer> make_keras_layer(const std::string& class_name,
                                        const std::string& args_json);
// Keras's get_config() of a layer as a JSON object (name, trainable, dtype and its arguments).
// ValueError for an option Keras cannot express (BatchNormalization's PyTorch semantics).
std::string keras_layer_config(const Layer& layer);

}  // namespace bnorm::io
