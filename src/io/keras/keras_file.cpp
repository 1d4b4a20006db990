// Keras files: the .keras zip (config.json, metadata.json, model.weights.h5), legacy .h5 model
// files and weights-only files. Configs are translated in keras_config.cpp; this file moves the
// weights, checking every dataset's shape against the architecture before anything is built.
#include <chrono>
#include <cmath>
#include <ctime>
#include <map>
#include <set>

#include "bnorm/core/error.hpp"
#include "bnorm/io/keras.hpp"
#include "bnorm/version.hpp"
#include "io/files.hpp"
#include "io/keras/h5.hpp"
#include "io/keras/keras_config.hpp"
#include "io/layer_codec.hpp"
#include "io/zip.hpp"

namespace bnorm::io {

namespace {

using detail::keras::json;
using detail::keras::ParsedModel;
using detail::keras::WeightSource;

constexpr std::uint64_t kMaxConfigBytes = 64ull << 20;
constexpr std::uint64_t kMaxWeightsBytes = 16ull << 30;
constexpr std::uint64_t kMaxFileBytes = 16ull << 30;

// The Keras release whose file format the writers follow (and are tested against).
constexpr const char* kKerasVersion = "3.15.1";

using detail::h5::dims_str;

json parse_json(const std::string& text, const std::string& context, const std::string& what) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw IoError(context + what + " is not valid JSON");
  return j;
}

// Where one layer's datasets are: a group and the dataset names in Keras's order.
struct LayerDatasets {
  std::optional<detail::h5::Group> group;
  std::vector<std::string> names;
};

// A Keras scalar (Normalization's count) fits bnorm's one-element vector.
bool dims_match(const std::vector<std::int64_t>& file, const std::vector<std::int64_t>& need) {
  if (file == need) return true;
  if (file.empty() && need == std::vector<std::int64_t>{1}) return true;
  // A per-channel weight stored broadcast-shaped, e.g. tf.keras 2's Ghost BN gamma (1, 1, C):
  // one axis of C and ones elsewhere holds the same C values in the same order.
  if (need.size() != 1 || file.size() < 2) return false;
  std::int64_t product = 1, non_one = 0;
  for (auto d : file) {
    product *= d;
    if (d != 1) ++non_one;
  }
  return product == need[0] && non_one <= 1;
}

// Reads dataset i of `ds` into `t`, whose shape the layer fixed: the file's shape must match it,
// the values must be finite and a variance non-negative.
void read_weight(const LayerDatasets& ds, std::size_t i, const std::string& weight_name,
                 const std::string& layer_label, Tensor& t) {
  const std::string& rel = ds.names[i];
  const auto info = ds.group->find_dataset(rel);
  if (!info) ds.group->fail(rel, "missing");
  if (!dims_match(info->dims, t.shape().dims())) {
    ds.group->fail(rel, "has shape " + dims_str(info->dims) + "; " + layer_label + " needs " +
                            t.shape().str());
  }
  ds.group->read_floats(rel, info->dims, t.data());
  if (!t.all_finite()) ds.group->fail(rel, "contains NaN or Inf");
  if (weight_name == "moving_variance" || weight_name == "variance") {
    for (float x : t.values())
      if (x < 0.0f) ds.group->fail(rel, "holds a negative variance");
  }
}

std::string layer_label(const Layer& layer) {
  return "layer '" + layer.name() + "' (" + layer.class_name() + ")";
}

// Checks every dataset against the shapes the architecture will have (before building), then
// builds the model and reads the weights into it. `locate` finds each layer's datasets.
Model load_weights_into_new_model(ParsedModel& parsed, const std::string& context,
                                  const std::function<LayerDatasets(const WeightSource&)>& locate) {
  std::vector<LayerDatasets> found;
  for (const auto& src : parsed.layers) {
    LayerDatasets ds = locate(src);
    const auto expected = detail::expected_weight_dims(*src.layer, src.input_shape);
    const std::string lname = layer_label(*src.layer);
    if (!expected.empty()) {
      if (ds.names.size() != expected.size()) {
        throw IoError(context + lname + " has " + std::to_string(ds.names.size()) +
                      " weights in the file; its config needs " + std::to_string(expected.size()));
      }
      for (std::size_t i = 0; i < expected.size(); ++i) {
        const auto info = ds.group->find_dataset(ds.names[i]);
        if (!info) ds.group->fail(ds.names[i], "missing");
        if (!dims_match(info->dims, expected[i])) {
          ds.group->fail(ds.names[i], "has shape " + dims_str(info->dims) + "; " + lname +
                                          " needs " + dims_str(expected[i]));
        }
      }
    }
    found.push_back(std::move(ds));
  }
  Model model = detail::keras::build_model(parsed, context);
  for (std::size_t k = 0; k < parsed.layers.size(); ++k) {
    Layer& layer = *parsed.layers[k].layer;
    const LayerDatasets& ds = found[k];
    const auto vars = layer.weights();
    const std::string lname = layer_label(layer);
    if (vars.size() != ds.names.size()) {
      throw IoError(context + lname + " has " + std::to_string(ds.names.size()) +
                    " weights in the file; bnorm's layer has " + std::to_string(vars.size()));
    }
    for (std::size_t i = 0; i < vars.size(); ++i)
      read_weight(ds, i, vars[i]->name, lname, vars[i]->value);
  }
  return model;
}

// ---------------------------------------------------------------------------------------------
// .keras

std::string metadata_json() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char date[32];
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(date, sizeof date, "%Y-%m-%d@%H:%M:%S", &tm);
  // keras_version is the Keras release whose format this writer follows (and is tested with).
  return json({{"keras_version", kKerasVersion},
               {"date_saved", date},
               {"producer", std::string("bnorm ") + BNORM_VERSION_STRING}})
      .dump();
}

// One weight as Keras stores it: Normalization's count is an int64 scalar in Keras (bnorm keeps
// it as a one-element float tensor); everything else float32 in the variable's shape.
void write_variable(const detail::h5::Group& g, const std::string& name, const Layer& layer,
                    const Variable& v) {
  if (layer.class_name() == "Normalization" && v.name == "count" && v.value.size() == 1) {
    g.write_int64_scalar(name, std::llround(static_cast<double>(v.value.data()[0])));
    return;
  }
  g.write_floats(name, v.value.shape().dims(), v.value.data());
}

void write_weights(const detail::h5::Group& root, const Model& model) {
  root.create_group("layers");
  for (const auto& [layer, path] : detail::keras::keras_weight_paths(model)) {
    const std::string child = path.substr(std::string("layers/").size());
    const auto g = root.group("layers").create_group(child);
    const auto vars = g.create_group("vars");
    vars.write_string_attr("name", layer ? layer->name() : "input_layer");
    if (!layer) continue;
    const auto ws = layer->weights();
    for (std::size_t i = 0; i < ws.size(); ++i) {
      write_variable(vars, std::to_string(i), *layer, *ws[i]);
    }
  }
  root.create_group("vars").write_string_attr("name", model.name());
}

}  // namespace

Model load_keras(const std::string& path) {
  const std::string context = "Keras file '" + path + "': ";
  return detail::keras::load_keras_bytes(detail::read_file(path, context, kMaxFileBytes), context);
}

Model detail::keras::load_keras_bytes(std::span<const unsigned char> bytes,
                                      const std::string& context) {
  const detail::ZipReader zip(bytes, context);
  for (const char* member : {"config.json", "model.weights.h5"}) {
    if (!zip.has(member))
      throw IoError(context + "the archive has no " + member + " (not a .keras model)");
  }
  const auto config_bytes = zip.read("config.json", kMaxConfigBytes);
  const json config =
      parse_json(std::string(config_bytes.begin(), config_bytes.end()), context, "config.json");
  ParsedModel parsed = detail::keras::parse_model(config, context);
  const auto weights_bytes = zip.read("model.weights.h5", kMaxWeightsBytes);
  const auto file = detail::h5::File::open(weights_bytes, context + "model.weights.h5: ");
  const auto root = file.root();
  Model model = load_weights_into_new_model(parsed, context, [&](const WeightSource& src) {
    LayerDatasets ds;
    ds.group = root.find_group(src.keras_path + "/vars");
    if (!ds.group) {
      // tf.keras 2.13-2.15 wrote _layer_checkpoint_dependencies instead of layers.
      std::string alt = src.keras_path;
      for (std::size_t p = 0; (p = alt.find("layers/", p)) != std::string::npos;) {
        alt.replace(p, 7, "_layer_checkpoint_dependencies/");
        p += 31;
      }
      ds.group = root.find_group(alt + "/vars");
    }
    if (!ds.group) {
      throw IoError(context + "model.weights.h5 has no group '" + src.keras_path +
                    "/vars' for layer '" + src.layer->name() + "'");
    }
    for (int i = 0; ds.group->has(std::to_string(i)); ++i) ds.names.push_back(std::to_string(i));
    return ds;
  });
  detail::keras::apply_compile(model, parsed.compile, false);
  return model;
}

void save_keras(const Model& model, const std::string& path) {
  const std::string context = "Keras file '" + path + "': ";
  json config = detail::keras::model_config(model, context, /*legacy=*/false);
  const json compile = detail::keras::compile_config(model);
  if (!compile.is_null()) config["compile_config"] = compile;
  auto file = detail::h5::File::create(context);
  write_weights(file.root(), model);
  const std::string archive = detail::zip_archive({{"metadata.json", metadata_json()},
                                                   {"config.json", config.dump()},
                                                   {"model.weights.h5", file.image()}});
  detail::write_file_atomic(path, archive, context);
}

// ---------------------------------------------------------------------------------------------
// legacy .h5

namespace {

std::string strip_suffix(std::string s) {
  const auto colon = s.rfind(':');
  if (colon != std::string::npos) s.resize(colon);
  return s;
}

// The last two components of a legacy weight name ("seq/conv2d_1/kernel:0" -> conv2d_1).
std::string owner_of(const std::string& weight_name) {
  const std::string s = strip_suffix(weight_name);
  const auto last = s.rfind('/');
  if (last == std::string::npos) return "";
  const auto prev = s.rfind('/', last - 1);
  return s.substr(prev == std::string::npos ? 0 : prev + 1,
                  last - (prev == std::string::npos ? 0 : prev + 1));
}

LayerDatasets legacy_datasets(const detail::h5::Group& weights_root,
                              const std::set<std::string>& listed, const std::string& group,
                              const std::string& inner, const std::string& context,
                              const std::string& layer_name) {
  LayerDatasets ds;
  if (!listed.count(group)) {
    throw IoError(context + "layer '" + layer_name + "': '" + group +
                  "' is not in the file's layer_names");
  }
  ds.group = weights_root.group(group);
  const auto names = ds.group->string_list_attr("weight_names");
  if (!names) ds.group->fail("", "has no weight_names attribute");
  for (const auto& n : *names) {
    if (inner.empty() || owner_of(n) == inner) ds.names.push_back(n);
  }
  return ds;
}

}  // namespace

Model load_keras_h5(const std::string& path) {
  const std::string context = "Keras HDF5 file '" + path + "': ";
  return detail::keras::load_h5_bytes(detail::read_file(path, context, kMaxFileBytes), context);
}

Model detail::keras::load_h5_bytes(std::span<const unsigned char> bytes,
                                   const std::string& context) {
  const auto file = detail::h5::File::open(bytes, context);
  const auto root = file.root();
  const auto config_text = root.string_attr("model_config");
  if (!config_text) {
    if (root.string_list_attr("layer_names") || root.has("layers")) {
      throw IoError(context +
                    "holds weights only (no model_config); build the model and load "
                    "them with load_keras_weights / --weights");
    }
    throw IoError(context + "has no model_config attribute (not a Keras model file)");
  }
  if (config_text->size() > kMaxConfigBytes)
    throw IoError(context + "model_config is implausibly large");
  const json config = parse_json(*config_text, context, "model_config");
  ParsedModel parsed = detail::keras::parse_model(config, context);
  const auto weights_root = root.group("model_weights");
  const auto layer_names = weights_root.string_list_attr("layer_names");
  if (!layer_names) weights_root.fail("", "has no layer_names attribute");
  const std::set<std::string> listed(layer_names->begin(), layer_names->end());
  Model model = load_weights_into_new_model(parsed, context, [&](const WeightSource& src) {
    return legacy_datasets(weights_root, listed, src.legacy_group, src.legacy_layer, context,
                           src.layer->name());
  });
  if (const auto training = root.string_attr("training_config")) {
    if (training->size() <= kMaxConfigBytes) {
      detail::keras::apply_compile(model, parse_json(*training, context, "training_config"), true);
    }
  }
  return model;
}

void save_keras_h5(const Model& model, const std::string& path) {
  const std::string context = "Keras HDF5 file '" + path + "': ";
  const json config = detail::keras::model_config(model, context, /*legacy=*/true);
  auto file = detail::h5::File::create(context);
  const auto root = file.root();
  root.write_string_attr("backend", "tensorflow");
  root.write_string_attr("keras_version", kKerasVersion);
  root.write_string_attr("model_config", config.dump());
  json compile = detail::keras::compile_config(model);
  if (!compile.is_null()) {
    // The legacy form: optimizer_config {class_name, config} instead of the envelope.
    compile["optimizer_config"] = {{"class_name", compile["optimizer"]["class_name"]},
                                   {"config", compile["optimizer"]["config"]}};
    compile.erase("optimizer");
    root.write_string_attr("training_config", compile.dump());
  }
  const auto mw = root.create_group("model_weights");
  // Layers in Keras's model.layers order: its legacy loader matches them by position.
  std::vector<std::pair<std::string, const Layer*>> entries;
  if (model.is_sequential()) {
    for (const auto& l : model.layers()) entries.emplace_back(l->name(), l.get());
  } else {
    const Model::FlatGraph g = model.flat_graph();
    for (int op : detail::keras::keras_operation_order(g)) {
      if (op < 0) {
        entries.emplace_back(g.input_names[static_cast<std::size_t>(-op - 1)], nullptr);
      } else {
        const Layer* l = model.layers()[static_cast<std::size_t>(op)].get();
        entries.emplace_back(l->name(), l);
      }
    }
  }
  std::vector<std::string> names;
  for (const auto& e : entries) names.push_back(e.first);
  mw.write_string_list_attr("layer_names", names);
  mw.write_string_attr("backend", "tensorflow");
  mw.write_string_attr("keras_version", kKerasVersion);
  for (const auto& [name, layer] : entries) {
    const auto g = mw.create_group(name);
    std::vector<std::string> wnames;
    if (layer && !layer->weights().empty()) {
      const auto sub = g.create_group(name);
      for (const Variable* v : layer->weights()) {
        wnames.push_back(name + "/" + v->name);
        write_variable(sub, v->name, *layer, *v);
      }
    }
    g.write_string_list_attr("weight_names", wnames);
  }
  mw.create_group("top_level_model_weights").write_string_list_attr("weight_names", {});
  detail::write_file_atomic(path, file.image(), context);
}

// ---------------------------------------------------------------------------------------------
// weights only

void load_keras_weights(Model& model, const std::string& path) {
  const std::string context = "Keras weights file '" + path + "': ";
  if (!model.built()) throw IoError(context + "the model is not built (no input shape yet)");
  const auto bytes = detail::read_file(path, context, kMaxFileBytes);
  const auto file = detail::h5::File::open(bytes, context);
  const auto root = file.root();
  std::vector<Tensor> values;
  auto take = [&](const Layer& layer, const LayerDatasets& ds) {
    const auto vars = layer.weights();
    if (vars.size() != ds.names.size()) {
      throw IoError(context + "layer '" + layer.name() + "' has " +
                    std::to_string(ds.names.size()) +
                    " weights in the file; the model's layer has " + std::to_string(vars.size()));
    }
    for (std::size_t i = 0; i < vars.size(); ++i) {
      Tensor t(vars[i]->value.shape());
      read_weight(ds, i, vars[i]->name, layer_label(layer), t);
      values.push_back(std::move(t));
    }
  };
  if (root.has("layers") && !root.string_list_attr("layer_names")) {
    for (const auto& [layer, p] : detail::keras::keras_weight_paths(model)) {
      if (!layer) continue;
      LayerDatasets ds;
      ds.group = root.find_group(p + "/vars");
      if (!ds.group) {
        if (layer->weights().empty()) continue;
        throw IoError(context + "has no group '" + p + "/vars' for layer '" + layer->name() + "'");
      }
      for (int i = 0; ds.group->has(std::to_string(i)); ++i) ds.names.push_back(std::to_string(i));
      take(*layer, ds);
    }
  } else {
    const auto has_mw = root.find_group("model_weights");
    const auto& wroot = has_mw ? *has_mw : root;
    const auto names = wroot.string_list_attr("layer_names");
    if (!names)
      throw IoError(context + "has neither layer_names nor a layers group (not Keras weights)");
    const std::set<std::string> listed(names->begin(), names->end());
    std::set<std::string> used;
    for (const auto& l : model.layers()) {
      if (l->weights().empty()) continue;
      take(*l, legacy_datasets(wroot, listed, l->name(), "", context, l->name()));
      used.insert(l->name());
    }
    // Like Keras's load_weights: every layer the file has weights for must be in the model.
    std::string extra;
    for (const auto& n : *names) {
      if (used.count(n)) continue;
      const auto g = wroot.find_group(n);
      const auto w = g ? g->string_list_attr("weight_names") : std::nullopt;
      if (w && !w->empty()) extra += (extra.empty() ? "" : ", ") + n;
    }
    if (!extra.empty()) {
      throw IoError(context + "has weights for layers the model does not have: " + extra);
    }
  }
  try {
    model.set_weights(values);
  } catch (const Error& e) {
    throw IoError(context + e.what());
  }
}

}  // namespace bnorm::io
