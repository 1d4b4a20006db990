// The layer table of bnorm's model files (docs/model-format.md), shared with the other formats:
// every format that names layers by Keras class name (the Keras room maps Keras's config keys to
// and from these) builds them here, so a layer class is taught to the file formats once.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bnorm/layers/layer.hpp"

namespace bnorm::io::detail {

// bnorm's own config of a layer: Keras's constructor arguments, with L2 factors as
// "<weight>_l2" numbers and initializers as {"class_name", "config"}. IoError "<context>..."
// for a class the table does not have.
nlohmann::ordered_json layer_config(const Layer& layer, const std::string& context);

// A new, unbuilt layer of `class_name` from its config. Strict: a missing required key, a value
// of the wrong type or range, and an unknown key are each an IoError
// "<context><where>: <problem>"; so is an unknown class (the message lists the known ones).
std::unique_ptr<Layer> layer_from_config(const std::string& class_name,
                                         const nlohmann::ordered_json& config,
                                         const std::string& where, const std::string& context);

// Whether the table has `class_name`, and the known classes as "A, B, C".
bool known_layer_class(const std::string& class_name);
std::string known_layer_classes();

// The weight shapes an unbuilt layer will have when built on the per-sample `input_shape`, in
// Keras order (empty for a class without weights), so a file's weights can be checked against
// its architecture before anything is allocated. Dimensions saturate at INT64_MAX.
std::vector<std::vector<std::int64_t>> expected_weight_dims(const Layer& layer,
                                                            const Shape& input_shape);
// The channels of the per-channel buffers a layer's build allocates beyond its weights when it
// has no weights to bound them (BatchNormalization with center, scale and moving statistics all
// off; Normalization with constructor statistics); 0 for any other layer.
std::int64_t unstored_statistics_channels(const Layer& layer, const Shape& input_shape);

}  // namespace bnorm::io::detail
