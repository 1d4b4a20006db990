// Keras configs <-> bnorm layers and graphs. Reading is an allow-list: each layer's Keras
// config is translated key by key into bnorm's own config (io/layer_codec.hpp), which rejects
// any key it does not know; Keras-only keys are accepted only at the values bnorm honours
// (a null constraint, an L2 regularizer, a float32 dtype policy, ...).
#include "io/keras/keras_config.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/depthwise_conv2d.hpp"
#include "bnorm/layers/normalization.hpp"
#include "bnorm/layers/separable_conv2d.hpp"
#include "bnorm/model/losses.hpp"
#include "bnorm/model/optimizers.hpp"
#include "bnorm/model/sequential.hpp"
#include "io/layer_codec.hpp"

namespace bnorm::io::detail::keras {

namespace {

constexpr std::int64_t kMaxSampleElements = std::int64_t{1} << 28;  // one tensor, per sample
constexpr std::size_t kMaxLayers = 100000;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string type_of(const json& v) {
  if (v.is_object() && v.contains("class_name") && v["class_name"].is_string())
    return v["class_name"].get<std::string>();
  return v.dump().substr(0, 60);
}

// Errors: "<context><where>: <problem>".
struct Where {
  const std::string& context;
  std::string where;
  [[noreturn]] void fail(const std::string& problem) const {
    throw IoError(context + where + ": " + problem);
  }
};

const json& member(const json& obj, const char* key, const Where& w) {
  if (!obj.is_object() || !obj.contains(key)) w.fail(std::string("missing key '") + key + "'");
  return obj.at(key);
}

std::string string_member(const json& obj, const char* key, const Where& w) {
  const json& v = member(obj, key, w);
  if (!v.is_string()) w.fail(std::string("key '") + key + "' must be a string");
  return v.get<std::string>();
}

// Keras 3 envelopes name a module and a registered name; only Keras's own public objects (or
// Keras's Functional) are accepted, so a file can never point at other code.
void check_envelope(const json& obj, const std::string& cls, const Where& w) {
  if (obj.contains("module") && !obj["module"].is_null()) {
    if (!obj["module"].is_string()) w.fail("key 'module' must be a string");
    const std::string module = obj["module"].get<std::string>();
    const bool keras = module == "keras" || module.rfind("keras.", 0) == 0;
    if (!keras) {
      w.fail("class '" + cls + "' comes from module '" + module +
             "'; only Keras's own classes are loaded (custom objects are not supported)");
    }
  }
  if (obj.contains("registered_name") && !obj["registered_name"].is_null()) {
    const json& r = obj["registered_name"];
    const bool functional =
        r.is_string() && r.get<std::string>() == "Functional" && cls == "Functional";
    if (!functional) {
      w.fail("class '" + cls + "' is a registered custom object (" + r.dump() +
             "); custom objects are not supported");
    }
  }
}

// "float32" or a float32 DTypePolicy; mixed precision and quantized policies are refused.
void check_dtype(const json& v, const Where& w) {
  std::string name;
  if (v.is_null()) return;
  if (v.is_string()) {
    name = v.get<std::string>();
  } else if (v.is_object()) {
    const std::string cls = string_member(v, "class_name", w);
    check_envelope(v, cls, w);
    if (cls != "DTypePolicy" && cls != "Policy") {
      w.fail("dtype policy '" + cls + "' (quantized or custom) is not supported");
    }
    const json& c = member(v, "config", w);
    name = string_member(c, "name", w);
  } else {
    w.fail("key 'dtype' must be a string or a DTypePolicy");
  }
  if (name != "float32") {
    w.fail("dtype policy '" + name + "' is not supported (bnorm computes in float32)");
  }
}

// Keras initializer -> bnorm's {"class_name", "config"}. The seed is dropped: bnorm draws from
// its own seeded generator, and loaded models take their weights from the file.
json initializer_from_keras(const json& v, const Where& w) {
  static const std::map<std::string, std::string> kLegacyNames = {
      {"zeros", "Zeros"},
      {"ones", "Ones"},
      {"glorot_uniform", "GlorotUniform"},
      {"random_uniform", "RandomUniform"},
      {"random_normal", "RandomNormal"},
      {"constant", "Constant"},
      {"he_normal", "HeNormal"},
      {"he_uniform", "HeUniform"},
      {"lecun_normal", "LecunNormal"},
      {"lecun_uniform", "LecunUniform"},
      {"glorot_normal", "GlorotNormal"},
      {"truncated_normal", "TruncatedNormal"},
      {"variance_scaling", "VarianceScaling"}};
  if (v.is_string()) {
    const auto it = kLegacyNames.find(v.get<std::string>());
    if (it == kLegacyNames.end())
      w.fail("initializer '" + v.get<std::string>() + "' is not supported");
    return {{"class_name", it->second}};
  }
  if (!v.is_object()) w.fail("an initializer must be a string or an object");
  const std::string cls = string_member(v, "class_name", w);
  check_envelope(v, cls, w);
  json cfg = json::object();
  if (v.contains("config") && v["config"].is_object()) {
    for (auto it = v["config"].begin(); it != v["config"].end(); ++it) {
      const std::string& k = it.key();
      if (k == "seed" || k == "dtype") continue;
      if ((k == "input_axes" || k == "output_axes") && it.value().is_null()) continue;
      cfg[k] = it.value();
    }
  }
  json out = {{"class_name", cls}};
  if (!cfg.empty()) out["config"] = cfg;
  return out;
}

// L2 (or L1L2 with l1 = 0) -> the factor; null -> 0; anything else refused.
std::optional<double> l2_from_keras(const json& v, const std::string& key, const Where& w) {
  if (v.is_null()) return std::nullopt;
  if (!v.is_object()) w.fail("key '" + key + "' must be null or a regularizer object");
  const std::string cls = string_member(v, "class_name", w);
  check_envelope(v, cls, w);
  const json cfg = v.contains("config") ? v["config"] : json::object();
  auto number = [&](const char* k) -> double {
    if (!cfg.contains(k)) return 0.0;
    if (!cfg[k].is_number()) w.fail("regularizer " + cls + ": '" + k + "' must be a number");
    return cfg[k].get<double>();
  };
  if ((cls == "L2" || cls == "l2") || (cls == "L1L2" && number("l1") == 0.0)) return number("l2");
  w.fail("regularizer '" + cls + "' in '" + key + "' is not supported (only L2)");
}

// Keras's config of one layer -> bnorm's; also returns the name and trainable flag.
json config_from_keras(const std::string& cls, const json& kcfg, const Where& w, std::string& name,
                       bool& trainable) {
  if (!kcfg.is_object()) w.fail("key 'config' must be an object");
  json out = json::object();
  const bool bn = cls == "BatchNormalization";
  const bool separable = cls == "SeparableConv2D" || cls == "DepthwiseConv2D";
  auto require = [&](bool ok, const std::string& key, const json& value, const std::string& what) {
    if (!ok) w.fail(what + " ('" + key + "': " + value.dump() + ") is not supported");
  };
  for (auto it = kcfg.begin(); it != kcfg.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "name") {
      if (!v.is_string()) w.fail("key 'name' must be a string");
      name = v.get<std::string>();
    } else if (key == "trainable") {
      if (!v.is_boolean()) w.fail("key 'trainable' must be true or false");
      trainable = v.get<bool>();
    } else if (key == "dtype") {
      check_dtype(v, w);
    } else if (key == "shared_object_id" || key == "batch_input_shape" || key == "batch_shape" ||
               key == "input_shape" || key == "input_dim" || key == "autocast") {
      // Bookkeeping (and the legacy first-layer input shape, read by the model parser).
    } else if (separable && key == "kernel_initializer") {
      // tf.keras 2's separable layers inherit Conv's kernel_* keys and never use them.
    } else if (separable && (key == "kernel_regularizer" || key == "kernel_constraint")) {
      require(v.is_null(), key, v, "a kernel regularizer or constraint on a separable layer");
    } else if (ends_with(key, "_initializer")) {
      out[key] = initializer_from_keras(v, Where{w.context, w.where + " " + key});
    } else if (key == "activity_regularizer") {
      require(v.is_null(), key, v, "an activity regularizer");
    } else if (ends_with(key, "_regularizer")) {
      const std::string prefix = key.substr(0, key.size() - std::string("_regularizer").size());
      if (auto l2 = l2_from_keras(v, key, w)) out[prefix + "_l2"] = *l2;
    } else if (ends_with(key, "_constraint")) {
      require(v.is_null(), key, v, "a weight constraint");
    } else if (key == "quantization_config" || key == "lora_rank" || key == "lora_alpha") {
      require(v.is_null(), key, v, "quantization or LoRA");
    } else if (bn && key == "synchronized") {
      // Keras 3: statistics over every replica of a distributed run (bnorm: every MPI rank).
      require(v.is_boolean(), key, v, "a non-boolean 'synchronized'");
      out[key] = v;
    } else if (bn && key == "renorm") {
      require(v.is_boolean(), key, v, "a non-boolean 'renorm'");
      out[key] = v;
    } else if (bn && key == "renorm_clipping") {
      // Keras: null or a dict of rmax, rmin, dmax (each a number or absent/null).
      require(v.is_null() || v.is_object(), key, v, "a 'renorm_clipping' that is not a dict");
      if (v.is_object()) {
        for (auto c = v.begin(); c != v.end(); ++c) {
          require(c.key() == "rmax" || c.key() == "rmin" || c.key() == "dmax", key, v,
                  "a 'renorm_clipping' key other than rmax, rmin, dmax");
          require(c.value().is_null() || c.value().is_number(), key, v,
                  "a non-numeric 'renorm_clipping' value");
          if (c.value().is_number()) out["renorm_" + c.key()] = c.value();
        }
      }
    } else if (bn && key == "renorm_momentum") {
      require(v.is_number(), key, v, "a non-numeric 'renorm_momentum'");
      out[key] = v;
    } else if (bn && key == "fused") {
      // A TF 1 kernel choice: the same math.
    } else if (bn && key == "virtual_batch_size") {
      // tf.keras 2's Ghost BN (legacy .h5 files).
      require(v.is_null() || (v.is_number_integer() && v.get<std::int64_t>() >= 1), key, v,
              "a 'virtual_batch_size' that is not a positive integer");
      if (!v.is_null()) out[key] = v;
    } else if (bn && key == "adjustment") {
      require(v.is_null(), key, v, "BatchNormalization adjustment");
    } else if (key == "groups") {
      require(v.is_number_integer() && v.get<std::int64_t>() == 1, key, v, "grouped convolution");
    } else if (key == "activation" && v.is_object()) {
      // Keras 3 may write a built-in activation as {"class_name": "function", "config": "relu"}.
      const std::string acls = string_member(v, "class_name", w);
      check_envelope(v, acls, w);
      if (acls != "function" || !v.contains("config") || !v["config"].is_string()) {
        w.fail("activation " + type_of(v) +
               " is not a built-in activation name (code is never loaded)");
      }
      out[key] = v["config"];
    } else {
      out[key] = v;
    }
  }
  // Keras's legacy BN axis list [3] is bnorm's list form; bnorm's codec reads both.
  // tf.keras 2's Ghost BN inserts a virtual-batch axis at 1 when it is built and shifts its own
  // axis by one, which get_config then saves: a saved (built) layer's axis counts that extra
  // axis (tf.keras 2 cannot load such a file back: "Invalid value for `axis` argument"). The
  // data's axis is one less.
  if (bn && out.contains("virtual_batch_size") && out.contains("axis")) {
    json& axis = out["axis"];
    const auto unshift = [&](json& a) {
      if (a.is_number_integer() && a.get<std::int64_t>() >= 2) a = a.get<std::int64_t>() - 1;
    };
    if (axis.is_array()) {
      for (auto& a : axis) unshift(a);
    } else {
      unshift(axis);
    }
  }
  return out;
}

std::string snake(const std::string& cls) { return snake_case_name(cls); }

// Keras's numbering of repeated names: dense, dense_1, dense_2, ...
std::string numbered(const std::string& base, int n) {
  std::string out = base;
  if (n > 0) {
    out += '_';
    out += std::to_string(n);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Graph building

struct TensorRef {
  std::string layer;
  std::size_t node = 0, tensor = 0;
  // Written in a form that counts a nested model's own construction as its node 0 (tf.keras 2
  // node lists, and input_layers/output_layers): such an index is one past the call's.
  bool counts_built_in_node = false;
};

TensorRef ref_from_history(const json& h, const Where& w) {
  if (!h.is_array() || h.size() < 3 || !h[0].is_string() || !h[1].is_number_unsigned() ||
      !h[2].is_number_unsigned()) {
    w.fail("a tensor reference must be [layer, node_index, tensor_index]; received " +
           h.dump().substr(0, 80));
  }
  return {h[0].get<std::string>(), h[1].get<std::size_t>(), h[2].get<std::size_t>()};
}

// A call's `training` keyword: unset (the usual), or baked into the graph by the model's author.
enum class CallMode { unset, inference, training };

// Reads call keyword arguments; `mask=None` and `training` are the only ones accepted.
CallMode call_mode(const json& kwargs, const Where& w) {
  CallMode mode = CallMode::unset;
  if (kwargs.is_null()) return mode;
  if (!kwargs.is_object()) w.fail("call keyword arguments must be an object");
  for (auto it = kwargs.begin(); it != kwargs.end(); ++it) {
    if (it.key() == "mask" && it.value().is_null()) continue;
    if (it.key() == "training" && it.value().is_boolean()) {
      mode = it.value().get<bool>() ? CallMode::training : CallMode::inference;
      continue;
    }
    if (it.key() == "training" && it.value().is_null()) continue;
    w.fail("call argument '" + it.key() + "' = " + it.value().dump().substr(0, 60) +
           " is not supported");
  }
  return mode;
}

// One node's input references, from the Keras 3 form {"args": [...], "kwargs": {...}} or the
// legacy form [[name, node, tensor, kwargs], ...].
std::vector<TensorRef> node_inputs(const json& node, const Where& w, CallMode& mode) {
  std::vector<TensorRef> refs;
  mode = CallMode::unset;
  if (node.is_object()) {
    const json& args = member(node, "args", w);
    if (!args.is_array() || args.empty()) w.fail("a node's 'args' must be a non-empty list");
    if (args.size() > 1) w.fail("extra positional call arguments are not supported");
    if (node.contains("kwargs")) mode = call_mode(node["kwargs"], w);
    std::function<void(const json&)> collect = [&](const json& a) {
      if (a.is_array()) {
        if (a.size() > kMaxLayers) w.fail("implausibly many call inputs");
        for (const auto& e : a) collect(e);
        return;
      }
      if (!a.is_object() || !a.contains("class_name") || a["class_name"] != "__keras_tensor__") {
        w.fail("a call argument that is not a tensor (" + type_of(a) + ") is not supported");
      }
      refs.push_back(ref_from_history(member(member(a, "config", w), "keras_history", w), w));
    };
    collect(args[0]);
  } else if (node.is_array()) {
    for (const auto& e : node) {
      if (!e.is_array() || e.size() < 3) w.fail("a legacy inbound node entry must be a list");
      refs.push_back(ref_from_history(e, w));
      refs.back().counts_built_in_node = true;
      if (e.size() > 3) mode = call_mode(e[3], w);
    }
  } else {
    w.fail("an inbound node must be an object or a list");
  }
  if (refs.empty()) w.fail("a call without inputs");
  return refs;
}

// [name, node, tensor] or a list of them (input_layers / output_layers).
std::vector<TensorRef> end_refs(const json& v, const Where& w) {
  std::vector<TensorRef> out;
  if (v.is_array() && v.size() >= 3 && v[0].is_string()) {
    out = {ref_from_history(v, w)};
    out[0].counts_built_in_node = true;
    return out;
  }
  if (!v.is_array()) w.fail("input_layers/output_layers must be a list (dicts are not supported)");
  for (const auto& e : v) {
    out.push_back(ref_from_history(e, w));
    out.back().counts_built_in_node = true;
  }
  if (out.empty()) w.fail("a model needs at least one input and one output");
  return out;
}

class Builder {
 public:
  explicit Builder(const std::string& context) : context_(context) {}

  // A model config (top level or nested), instantiated once: its layers exist after this, and
  // apply() calls them (again, for a nested model called twice: the layers are shared).
  struct Instance {
    std::string cls;  // Sequential | Functional
    std::string name;
    json config;
    Shape input_shape;  // sequential
    bool has_input_shape = false;
    struct Entry {
      std::string cls, name;
      json nodes;  // inbound nodes (functional)
      std::shared_ptr<Layer> layer;
      std::shared_ptr<Instance> nested;
      Shape input_shape;  // InputLayer
    };
    std::vector<Entry> entries;
    bool legacy_nodes = false;  // tf.keras 2 node lists
  };

  std::shared_ptr<Instance> instantiate(const json& model, const std::string& keras_prefix,
                                        const std::string& legacy_group, const std::string& where,
                                        int depth) {
    Where w{context_, where};
    if (depth > 16) w.fail("models nested more than 16 deep");
    const std::string cls = string_member(model, "class_name", w);
    check_envelope(model, cls, w);
    auto inst = std::make_shared<Instance>();
    inst->cls = cls == "Sequential" ? "Sequential" : "Functional";
    if (cls != "Sequential" && cls != "Functional" && cls != "Model") {
      w.fail("model class '" + cls + "' is not supported (Sequential, Functional)");
    }
    const json& cfg = member(model, "config", w);
    inst->config = cfg;
    if (cfg.contains("name") && cfg["name"].is_string())
      inst->name = cfg["name"].get<std::string>();
    if (cfg.contains("dtype")) check_dtype(cfg["dtype"], w);
    const json& layers = member(cfg, "layers", w);
    if (!layers.is_array()) w.fail("key 'layers' must be a list");
    if (layers.size() > kMaxLayers) w.fail("implausibly many layers");
    const bool seq = inst->cls == "Sequential";
    if (seq) {
      if (cfg.contains("build_input_shape") && !cfg["build_input_shape"].is_null()) {
        set_shape(*inst, cfg["build_input_shape"], w);
      }
    }
    std::map<std::string, int> counters;  // Keras's per-class numbering of the weights groups
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const json& l = layers[i];
      Where lw{context_, where + " layer " + std::to_string(i)};
      const std::string lcls = string_member(l, "class_name", lw);
      check_envelope(l, lcls, lw);
      Instance::Entry e;
      e.cls = lcls;
      const json& lcfg = member(l, "config", lw);
      if (l.contains("name") && l["name"].is_string()) e.name = l["name"].get<std::string>();
      if (e.name.empty() && lcfg.is_object() && lcfg.contains("name") && lcfg["name"].is_string())
        e.name = lcfg["name"].get<std::string>();
      lw.where = where + " layer '" + e.name + "' (" + lcls + ")";
      if (!seq) {
        e.nodes = l.contains("inbound_nodes") ? l["inbound_nodes"] : json::array();
        if (!e.nodes.is_array()) lw.fail("key 'inbound_nodes' must be a list");
        for (const auto& n : e.nodes)
          if (n.is_array()) inst->legacy_nodes = true;
      }
      // .keras weights path: Sequential lists exclude the InputLayer, Functional ones include it.
      std::string path;
      if (!(seq && lcls == "InputLayer")) {
        const std::string s = snake(lcls == "Model" ? "Functional" : lcls);
        path = keras_prefix + "layers/" + numbered(s, counters[s]++);
      }
      if (lcls == "InputLayer") {
        const json& shape_json = lcfg.contains("batch_shape")         ? lcfg["batch_shape"]
                                 : lcfg.contains("batch_input_shape") ? lcfg["batch_input_shape"]
                                                                      : json();
        for (auto it = lcfg.begin(); it != lcfg.end(); ++it) {
          const std::string& k = it.key();
          if (k == "dtype") {
            check_dtype(it.value(), lw);
          } else if ((k == "sparse" || k == "ragged" || k == "optional") && it.value() == false) {
          } else if (k != "batch_shape" && k != "batch_input_shape" && k != "name" &&
                     k != "input_tensor") {
            lw.fail("InputLayer option '" + k + "' = " + it.value().dump() + " is not supported");
          }
        }
        if (lcfg.contains("input_tensor") && !lcfg["input_tensor"].is_null())
          lw.fail("InputLayer input_tensor is not supported");
        if (shape_json.is_null()) lw.fail("an InputLayer needs batch_shape");
        e.input_shape = parse_shape(shape_json, lw);
        if (seq) {
          inst->input_shape = e.input_shape;
          inst->has_input_shape = true;
          continue;
        }
      } else if (lcls == "Sequential" || lcls == "Functional" || lcls == "Model") {
        e.nested = instantiate(l, path + "/", legacy_group.empty() ? e.name : legacy_group,
                               lw.where, depth + 1);
        if (e.nested->name.empty()) e.nested->name = e.name;
      } else {
        if (!known_layer_class(lcls)) unknown_class(lcls, lw);
        std::string name = e.name;
        bool trainable = true;
        const json native = config_from_keras(lcls, lcfg, lw, name, trainable);
        e.layer = layer_from_config(lcls, native, lw.where, context_);
        if (seq && !inst->has_input_shape) {
          for (const char* key : {"batch_input_shape", "batch_shape"}) {
            if (lcfg.contains(key) && !lcfg[key].is_null()) set_shape(*inst, lcfg[key], lw);
          }
        }
        e.layer->set_name(unique_name(name));
        e.layer->set_trainable(trainable);
        WeightSource src;
        src.layer = e.layer;
        src.keras_path = path;
        src.legacy_group = legacy_group.empty() ? name : legacy_group;
        src.legacy_layer = legacy_group.empty() ? "" : name;
        sources_.push_back(src);
      }
      inst->entries.push_back(std::move(e));
    }
    return inst;
  }

  // Calls the instance on `xs` (nested) and returns its outputs.
  // `inference`: the call (or an enclosing model's call) has training=False baked in.
  std::vector<SymbolicTensor> apply(Instance& inst, const std::vector<SymbolicTensor>& xs,
                                    const std::string& where, bool inference) {
    Where w{context_, where};
    if (inst.cls == "Sequential") {
      if (xs.size() != 1) w.fail("a Sequential model takes one input");
      SymbolicTensor h = xs[0];
      for (auto& e : inst.entries) {
        if (e.nested) {
          h = apply(*e.nested, {h}, where + " '" + e.name + "'", inference)[0];
        } else {
          h = call(e.layer, {h}, Where{context_, where + " layer '" + e.name + "'"}, inference);
        }
      }
      return {h};
    }
    // Functional: Keras's order (list order, re-queueing nodes whose inputs do not exist yet).
    const json& cfg = inst.config;
    const auto ins = end_refs(member(cfg, "input_layers", w), w);
    const auto outs = end_refs(member(cfg, "output_layers", w), w);
    if (ins.size() != xs.size()) {
      w.fail("takes " + std::to_string(ins.size()) + " inputs; called with " +
             std::to_string(xs.size()));
    }
    std::map<std::string, std::vector<std::vector<SymbolicTensor>>> produced;
    std::map<std::string, const Instance::Entry*> by_name;
    for (const auto& e : inst.entries) {
      if (!by_name.emplace(e.name, &e).second) w.fail("two layers are named '" + e.name + "'");
    }
    for (std::size_t i = 0; i < ins.size(); ++i) {
      const auto it = by_name.find(ins[i].layer);
      if (it == by_name.end() || it->second->cls != "InputLayer")
        w.fail("input '" + ins[i].layer + "' is not an InputLayer of the model");
      const Shape& declared = it->second->input_shape;
      if (xs[i].shape() != declared) {
        w.fail("input '" + ins[i].layer + "' expects per-sample shape " + declared.str() +
               "; received " + xs[i].shape().str());
      }
      produced[ins[i].layer] = {{xs[i]}};
    }
    std::vector<std::size_t> done(inst.entries.size(), 0);
    std::size_t remaining = 0;
    for (const auto& e : inst.entries)
      if (e.cls != "InputLayer") remaining += e.nodes.size();
    while (remaining > 0) {
      bool progress = false;
      for (std::size_t i = 0; i < inst.entries.size(); ++i) {
        auto& e = inst.entries[i];
        if (e.cls == "InputLayer") continue;
        while (done[i] < e.nodes.size()) {
          Where nw{context_, where + " layer '" + e.name + "' node " + std::to_string(done[i])};
          CallMode mode = CallMode::unset;
          const auto refs = node_inputs(e.nodes[done[i]], nw, mode);
          if (mode == CallMode::training) {
            nw.fail(
                "is called with training=True baked into the model, so Keras runs it in "
                "training mode at inference too (batch statistics, dropout); bnorm does not "
                "reproduce that: rebuild the model without the argument");
          }
          const bool forced = inference || mode == CallMode::inference;
          std::vector<SymbolicTensor> args;
          bool ready = true;
          for (auto r : refs) {
            r.node = call_index(r, by_name, inst.legacy_nodes);
            const auto it = produced.find(r.layer);
            if (it == produced.end() || r.node >= it->second.size()) {
              ready = false;
              break;
            }
            if (r.tensor >= it->second[r.node].size())
              nw.fail("refers to output " + std::to_string(r.tensor) + " of '" + r.layer +
                      "', which has " + std::to_string(it->second[r.node].size()));
            args.push_back(it->second[r.node][r.tensor]);
          }
          if (!ready) break;
          if (e.nested) {
            produced[e.name].push_back(apply(*e.nested, args, nw.where, forced));
          } else {
            produced[e.name].push_back({call(e.layer, args, nw, forced)});
          }
          ++done[i];
          --remaining;
          progress = true;
        }
      }
      if (!progress) w.fail("the graph has loops, or nodes whose inputs never exist");
    }
    std::vector<SymbolicTensor> result;
    for (auto r : outs) {
      r.node = call_index(r, by_name, inst.legacy_nodes);
      const auto it = produced.find(r.layer);
      if (it == produced.end() || r.node >= it->second.size() ||
          r.tensor >= it->second[r.node].size())
        w.fail("output '" + r.layer + "' is not computed by the graph");
      result.push_back(it->second[r.node][r.tensor]);
    }
    return result;
  }

  // The layers the graph calls (a Dropout left out as the identity is not among them).
  std::vector<WeightSource> called_sources() const {
    std::vector<WeightSource> out;
    for (const auto& s : sources_) {
      if (skipped_.count(s.layer.get()) && s.input_shape.rank() == 0) continue;
      out.push_back(s);
    }
    return out;
  }
  const std::string& context() const { return context_; }

  Shape parse_shape(const json& v, const Where& w) const {
    if (!v.is_array() || v.size() < 2 || v.size() > 5)
      w.fail("a batch shape must be [null, d1, ...] with 1 to 4 dimensions; received " +
             v.dump().substr(0, 80));
    std::vector<std::int64_t> dims;
    for (std::size_t i = 1; i < v.size(); ++i) {
      if (!v[i].is_number_integer() || v[i].get<std::int64_t>() < 1 ||
          v[i].get<std::int64_t>() > kMaxSampleElements)
        w.fail("input dimensions must be known positive integers; received " + v.dump());
      dims.push_back(v[i].get<std::int64_t>());
    }
    Shape s(dims);
    if (s.size() > kMaxSampleElements) w.fail("the input shape is implausibly large");
    return s;
  }

 private:
  void set_shape(Instance& inst, const json& v, const Where& w) {
    inst.input_shape = parse_shape(v, w);
    inst.has_input_shape = true;
  }

  std::string unique_name(const std::string& name) {
    std::string n = name;
    for (int k = 1; !names_.insert(n).second; ++k) n = numbered(name, k);
    return n;
  }

  [[noreturn]] void unknown_class(const std::string& cls, const Where& w) {
    static const std::set<std::string> kCode = {"Lambda", "TFSMLayer", "TorchModuleWrapper",
                                                "JaxLayer", "FlaxLayer"};
    if (kCode.count(cls)) {
      w.fail("class '" + cls + "' runs code from the file; it is never loaded");
    }
    w.fail("layer class '" + cls + "' is not supported (bnorm implements: InputLayer, " +
           known_layer_classes() + ")");
  }

  // The call of `r.layer` a reference means. Keras counts a nested functional model's own
  // construction as its node 0 where it writes input_layers/output_layers, and tf.keras 2 did so
  // in node lists for any nested model built on an Input; Keras 3's {"args"} nodes count calls
  // from 0.
  static std::size_t call_index(const TensorRef& r,
                                const std::map<std::string, const Instance::Entry*>& by_name,
                                bool legacy) {
    if (!r.counts_built_in_node || r.node == 0) return r.node;
    const auto it = by_name.find(r.layer);
    if (it == by_name.end() || !it->second->nested) return r.node;
    const std::string& cls = it->second->cls;
    const bool shifted = cls == "Functional" || cls == "Model" || (legacy && cls == "Sequential");
    return shifted ? r.node - 1 : r.node;
  }

  // training=False baked into a call means "inference behaviour, also inside fit()". bnorm
  // reproduces it exactly where its own semantics agree: a Dropout so called is the identity
  // (it is left out of the graph), a BatchNormalization must be non-trainable (bnorm, like
  // Keras 3, then always normalizes with the moving statistics); anything else is refused.
  SymbolicTensor call(const std::shared_ptr<Layer>& layer, const std::vector<SymbolicTensor>& xs,
                      const Where& w, bool inference) {
    if (inference) {
      const std::string cls = layer->class_name();
      if (cls == "Dropout" && xs.size() == 1) {
        skipped_.insert(layer.get());
        return xs[0];
      }
      if (cls == "BatchNormalization" && layer->trainable()) {
        w.fail(
            "is called with training=False baked into the model while trainable: Keras then "
            "normalizes with the moving statistics even in fit() but still trains gamma and "
            "beta, which bnorm does not reproduce; set trainable=False on it (or its model) or "
            "rebuild the model without the argument");
      }
    }
    SymbolicTensor y;
    try {
      y = (*layer)(xs);
    } catch (const IoError&) {
      throw;
    } catch (const Error& e) {
      w.fail(e.what());
    }
    if (y.shape().size() > kMaxSampleElements)
      w.fail("output shape " + y.shape().str() + " is implausibly large");
    for (auto& s : sources_) {
      if (s.layer == layer && s.input_shape.rank() == 0) s.input_shape = xs[0].shape();
    }
    return y;
  }

  const std::string& context_;
  std::vector<WeightSource> sources_;
  std::set<const Layer*> skipped_;
  std::set<std::string> names_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

ParsedModel parse_model(const json& model, const std::string& context) {
  Builder b(context);
  auto inst = b.instantiate(model, "", "", "model", 0);
  ParsedModel p;
  p.name =
      inst->name.empty() ? (inst->cls == "Sequential" ? "sequential" : "functional") : inst->name;
  Where w{context, "model '" + p.name + "'"};
  bool plain_chain = inst->cls == "Sequential";
  for (const auto& e : inst->entries)
    if (e.nested) plain_chain = false;
  if (inst->cls == "Sequential") {
    if (!inst->has_input_shape) {
      w.fail("a Sequential model without an input shape cannot be loaded (its weights need one)");
    }
    p.input_shape = inst->input_shape;
    Input x(inst->input_shape);
    p.inputs = {x};
    p.outputs = b.apply(*inst, {x}, "model '" + p.name + "'", false);
    p.sequential = plain_chain;
  } else {
    const auto ins = end_refs(member(inst->config, "input_layers", w), w);
    std::vector<SymbolicTensor> xs;
    for (const auto& r : ins) {
      const Builder::Instance::Entry* entry = nullptr;
      for (const auto& e : inst->entries)
        if (e.name == r.layer && e.cls == "InputLayer") entry = &e;
      if (!entry) w.fail("input '" + r.layer + "' is not an InputLayer of the model");
      xs.push_back(Input(entry->input_shape, r.layer));
    }
    p.inputs = xs;
    p.outputs = b.apply(*inst, xs, "model '" + p.name + "'", false);
  }
  p.layers = b.called_sources();
  for (const auto& s : p.layers) {
    if (s.input_shape.rank() == 0) {
      throw IoError(context + "layer '" + s.layer->name() + "' is never called by the model");
    }
  }
  if (model.contains("compile_config")) p.compile = model["compile_config"];
  return p;
}

Model build_model(ParsedModel& p, const std::string& context) {
  try {
    if (p.sequential) {
      Sequential s(0, p.name);
      s.add(Input(p.input_shape));
      for (auto& src : p.layers) s.add(src.layer);
      return Model(std::move(s));
    }
    return Model(p.inputs, p.outputs, p.name);
  } catch (const IoError&) {
    throw;
  } catch (const Error& e) {
    throw IoError(context + "the architecture cannot be built: " + e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// compile

void apply_compile(Model& model, const json& compile, bool legacy) {
  if (!compile.is_object()) return;
  const json* opt = nullptr;
  if (legacy && compile.contains("optimizer_config")) opt = &compile["optimizer_config"];
  if (!legacy && compile.contains("optimizer")) opt = &compile["optimizer"];
  if (!opt) return;
  std::string opt_name;
  std::map<std::string, double> values;
  if (opt->is_string()) {
    opt_name = opt->get<std::string>();
  } else if (opt->is_object() && opt->contains("class_name") && (*opt)["class_name"].is_string()) {
    opt_name = (*opt)["class_name"].get<std::string>();
    if (opt->contains("config") && (*opt)["config"].is_object()) {
      for (auto it = (*opt)["config"].begin(); it != (*opt)["config"].end(); ++it) {
        const json& v = it.value();
        if (v.is_number()) {
          values[it.key()] = v.get<double>();
        } else if (v.is_boolean()) {
          if (v.get<bool>() && it.key() != "nesterov" && it.key() != "centered") return;
          values[it.key()] = v.get<bool>() ? 1.0 : 0.0;
        } else if (!v.is_null() && !v.is_string()) {
          return;  // a learning-rate schedule or other object bnorm cannot honour
        }
      }
    }
  } else {
    return;
  }
  // Keras defaults that bnorm's optimizers do not have are harmless only at their defaults.
  for (const char* k : {"weight_decay", "clipnorm", "global_clipnorm", "clipvalue",
                        "loss_scale_factor", "gradient_accumulation_steps"}) {
    if (values.count(k) && values[k] != 0.0) return;
    values.erase(k);
  }
  std::string loss_text;
  const json& loss = compile.contains("loss") ? compile["loss"] : json();
  if (loss.is_string()) {
    loss_text = loss.get<std::string>();
  } else if (loss.is_object() && loss.contains("class_name") && loss["class_name"].is_string()) {
    const json cfg = loss.contains("config") ? loss["config"] : json::object();
    if (cfg.is_object() && cfg.contains("from_logits") && cfg["from_logits"] == true) return;
    loss_text = snake_case_name(loss["class_name"].get<std::string>());
  } else {
    return;
  }
  std::vector<std::string> metrics;
  const json& m = compile.contains("metrics") ? compile["metrics"] : json();
  std::function<void(const json&)> add_metric = [&](const json& v) {
    if (v.is_array()) {
      for (const auto& e : v) add_metric(e);
    } else if (v.is_string()) {
      const std::string s = v.get<std::string>();
      if (s == "accuracy" || s == "acc" || s == "sparse_categorical_accuracy")
        metrics = {"accuracy"};
    } else if (v.is_object() && v.contains("class_name") && v["class_name"].is_string()) {
      const std::string c = v["class_name"].get<std::string>();
      if (c == "SparseCategoricalAccuracy" || c == "MeanMetricWrapper") metrics = {"accuracy"};
    }
  };
  add_metric(m);
  try {
    // tf.keras 2 names its optimizers "Custom>Adam" in training_config.
    if (opt_name.rfind("Custom>", 0) == 0) opt_name = opt_name.substr(7);
    auto optimizer = make_optimizer(opt_name, values);  // matches names in any case
    model.compile(std::move(optimizer), parse_loss(loss_text), metrics);
  } catch (const Error&) {
    // An optimizer or loss bnorm does not have: the model loads uncompiled.
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace {

json dtype_policy() {
  return {{"module", "keras"},
          {"class_name", "DTypePolicy"},
          {"config", {{"name", "float32"}}},
          {"registered_name", nullptr}};
}

json initializer_to_keras(const json& native) {
  const std::string cls = native.at("class_name").get<std::string>();
  json cfg = native.contains("config") ? native["config"] : json::object();
  if (cls != "Zeros" && cls != "Ones" && cls != "Constant") cfg["seed"] = nullptr;
  return {{"module", "keras.initializers"},
          {"class_name", cls},
          {"config", cfg},
          {"registered_name", nullptr}};
}

json regularizer_to_keras(double l2) {
  if (l2 == 0.0) return nullptr;
  return {{"module", "keras.regularizers"},
          {"class_name", "L2"},
          {"config", {{"l2", l2}}},
          {"registered_name", nullptr}};
}

json batch_shape(const Shape& s) {
  json v = json::array({nullptr});
  for (auto d : s.dims()) v.push_back(d);
  return v;
}

json layer_config_to_keras(const Layer& layer, const std::string& context) {
  const json native = layer_config(layer, context);
  json out = {{"name", layer.name()}, {"trainable", layer.trainable()}, {"dtype", dtype_policy()}};
  const bool bn = layer.class_name() == "BatchNormalization";
  for (auto it = native.begin(); it != native.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (ends_with(key, "_initializer")) {
      out[key] = initializer_to_keras(v);
    } else if (ends_with(key, "_l2")) {
      out[key.substr(0, key.size() - 3) + "_regularizer"] = regularizer_to_keras(v.get<double>());
    } else if (bn && (key == "unbiased_moving_variance" || key == "cumulative_moving_average" ||
                      key == "error_on_single_value")) {
      if (v == true) {
        throw IoError(context + "layer '" + layer.name() + "' (BatchNormalization) uses '" + key +
                      "' (PyTorch semantics), which Keras cannot express");
      }
    } else if (bn && (key == "renorm_rmax" || key == "renorm_rmin" || key == "renorm_dmax")) {
      // Written below as Keras's renorm_clipping dict.
    } else if (bn && key == "virtual_batch_size") {
      if (v != 0) {
        throw IoError(context + "layer '" + layer.name() +
                      "' (BatchNormalization) uses virtual_batch_size (tf.keras 2's Ghost BN), "
                      "which Keras 3 cannot express");
      }
    } else if (bn && key == "track_moving_statistics") {
      if (v == false) {
        throw IoError(context + "layer '" + layer.name() +
                      "' (BatchNormalization) does not track moving statistics (PyTorch "
                      "track_running_stats=False), which Keras cannot express");
      }
    } else {
      out[key] = v;
    }
  }
  if (bn) {
    json clipping = nullptr;
    for (const char* k : {"rmax", "rmin", "dmax"}) {
      const std::string native_key = std::string("renorm_") + k;
      if (native.contains(native_key) && !native[native_key].is_null())
        clipping[k] = native[native_key];
    }
    out["renorm_clipping"] = clipping;
  }
  return out;
}

}  // namespace

// Keras's order of a functional model's operations (Function.map_graph): a depth-first walk
// from the outputs numbers each operation when first seen; an operation's depth is its longest
// distance to an output; operations come by decreasing depth, ties in walk order. Keras derives
// model.layers, the config's layer list and the weights' numbering from this order, and its
// legacy .h5 loader matches layers by position in it, so a writer must use the same order.
// Returns operation ids: -(i + 1) for input i, else the index into model.layers().
std::vector<int> keras_operation_order(const Model::FlatGraph& g) {
  const int n_in = static_cast<int>(g.input_names.size());
  const int n_nodes = n_in + static_cast<int>(g.calls.size());
  auto op_of = [&](int node) {
    return node < n_in ? -(node + 1)
                       : static_cast<int>(g.calls[static_cast<std::size_t>(node - n_in)].layer);
  };
  auto parents = [&](int node) -> std::vector<int> {
    if (node < n_in) return {};
    return g.calls[static_cast<std::size_t>(node - n_in)].inputs;
  };
  std::vector<char> finished(static_cast<std::size_t>(n_nodes), 0);
  std::map<int, int> op_index;
  std::vector<int> order;  // nodes in decreasing depth (inputs first)
  std::function<void(int)> visit = [&](int node) {
    if (finished[static_cast<std::size_t>(node)]) return;
    op_index.emplace(op_of(node), static_cast<int>(op_index.size()));
    for (int p : parents(node)) visit(p);
    finished[static_cast<std::size_t>(node)] = 1;
    order.push_back(node);
  };
  for (int out : g.outputs) visit(out);
  std::map<int, int> node_depth, op_depth;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const int node = *it;
    int depth = node_depth.emplace(node, 0).first->second;
    const int op = op_of(node);
    depth = std::max(depth, op_depth.count(op) ? op_depth[op] : 0);
    op_depth[op] = depth;
    node_depth[node] = depth;
    for (int p : parents(node))
      node_depth[p] = std::max(depth + 1, node_depth.count(p) ? node_depth[p] : 0);
  }
  for (int i = 0; i < n_in; ++i) {
    if (!op_depth.count(-(i + 1))) {
      op_depth[-(i + 1)] = 0;
      op_index[-(i + 1)] = -1;
    }
  }
  std::vector<int> ops;
  for (const auto& [op, d] : op_depth) ops.push_back(op);
  std::stable_sort(ops.begin(), ops.end(), [&](int a, int b) {
    if (op_depth[a] != op_depth[b]) return op_depth[a] > op_depth[b];
    return op_index[a] < op_index[b];
  });
  return ops;
}

std::vector<std::pair<const Layer*, std::string>> keras_weight_paths(const Model& model) {
  std::vector<std::pair<const Layer*, std::string>> out;
  std::map<std::string, int> counters;
  auto next = [&](const std::string& cls) {
    const std::string s = snake(cls);
    return "layers/" + numbered(s, counters[s]++);
  };
  if (model.is_sequential()) {
    for (const auto& l : model.layers()) out.emplace_back(l.get(), next(l->class_name()));
    return out;
  }
  for (int op : keras_operation_order(model.flat_graph())) {
    if (op < 0) {
      out.emplace_back(nullptr, next("InputLayer"));
    } else {
      const Layer* l = model.layers()[static_cast<std::size_t>(op)].get();
      out.emplace_back(l, next(l->class_name()));
    }
  }
  return out;
}

json model_config(const Model& model, const std::string& context, bool legacy) {
  if (!model.built()) throw IoError(context + "the model is not built (no input shape yet)");
  const Model::FlatGraph g = model.flat_graph();
  auto envelope = [&](const std::string& cls, json cfg, const json& build_input) {
    json e = json::object();
    if (!legacy) e["module"] = "keras.layers";
    e["class_name"] = cls;
    e["config"] = std::move(cfg);
    if (!legacy) {
      e["registered_name"] = nullptr;
      if (!build_input.is_null()) e["build_config"] = {{"input_shape", build_input}};
    }
    return e;
  };
  auto input_layer = [&](const std::string& name, const Shape& shape) {
    return envelope("InputLayer",
                    {{"batch_shape", batch_shape(shape)},
                     {"dtype", "float32"},
                     {"sparse", false},
                     {"ragged", false},
                     {"name", name},
                     {"optional", false}},
                    nullptr);
  };
  // Per-sample shape of each slot, for build_config and the tensors' descriptions.
  std::vector<Shape> slot_shape(g.input_shapes);
  for (const auto& c : g.calls) slot_shape.push_back(c.output_shape);

  json layers = json::array();
  json doc;
  if (model.is_sequential()) {
    layers.push_back(input_layer("input_layer", g.input_shapes[0]));
    for (std::size_t j = 0; j < g.calls.size(); ++j) {
      const Layer& l = model.layer(g.calls[j].layer);
      layers.push_back(
          envelope(l.class_name(), layer_config_to_keras(l, context),
                   batch_shape(slot_shape[static_cast<std::size_t>(g.calls[j].inputs[0])])));
    }
    json cfg = {{"name", model.name()},
                {"trainable", true},
                {"dtype", dtype_policy()},
                {"layers", layers},
                {"build_input_shape", batch_shape(g.input_shapes[0])}};
    if (legacy) return {{"class_name", "Sequential"}, {"config", cfg}};
    return {{"module", "keras"},
            {"class_name", "Sequential"},
            {"config", cfg},
            {"registered_name", nullptr},
            {"build_config", {{"input_shape", batch_shape(g.input_shapes[0])}}}};
  }

  // Functional: each slot is [producer name, node index, 0].
  std::vector<json> history;
  for (std::size_t i = 0; i < g.input_names.size(); ++i)
    history.push_back(json::array({g.input_names[i], 0, 0}));
  std::vector<int> calls_of(model.size(), 0);
  std::vector<json> nodes(model.size(), json::array());
  for (const auto& c : g.calls) {
    const Layer& l = model.layer(c.layer);
    json args = json::array();
    for (int s : c.inputs) {
      args.push_back({{"class_name", "__keras_tensor__"},
                      {"config",
                       {{"shape", batch_shape(slot_shape[static_cast<std::size_t>(s)])},
                        {"dtype", "float32"},
                        {"keras_history", history[static_cast<std::size_t>(s)]}}}});
    }
    const bool merge = c.inputs.size() > 1 || l.class_name() == "Add" ||
                       l.class_name() == "Concatenate" || l.class_name() == "Multiply" ||
                       l.class_name() == "Subtract" || l.class_name() == "Average";
    nodes[c.layer].push_back(
        {{"args", json::array({merge ? args : args[0]})}, {"kwargs", json::object()}});
    history.push_back(json::array({l.name(), calls_of[c.layer]++, 0}));
  }
  // Per layer: the input slots of its first call (build_config: one shape, or a list for merges).
  std::vector<std::vector<int>> first_inputs(model.size());
  for (const auto& c : g.calls)
    if (first_inputs[c.layer].empty()) first_inputs[c.layer] = c.inputs;
  for (int op : keras_operation_order(g)) {
    if (op < 0) {
      const auto i = static_cast<std::size_t>(-op - 1);
      json e = input_layer(g.input_names[i], g.input_shapes[i]);
      e["name"] = g.input_names[i];
      e["inbound_nodes"] = json::array();
      layers.push_back(e);
      continue;
    }
    const auto i = static_cast<std::size_t>(op);
    const Layer& l = model.layer(i);
    json build = json();
    const auto& fi = first_inputs[i];
    if (fi.size() == 1) {
      build = batch_shape(slot_shape[static_cast<std::size_t>(fi[0])]);
    } else if (fi.size() > 1) {
      build = json::array();
      for (int s : fi) build.push_back(batch_shape(slot_shape[static_cast<std::size_t>(s)]));
    }
    json e = envelope(l.class_name(), layer_config_to_keras(l, context), build);
    e["name"] = l.name();
    e["inbound_nodes"] = nodes[i];
    layers.push_back(e);
  }
  auto ends = [&](const std::vector<int>& slots, bool inputs) {
    json v = json::array();
    for (int s : slots) v.push_back(history[static_cast<std::size_t>(s)]);
    if (v.size() == 1 && inputs) return v[0];
    return v;
  };
  std::vector<int> input_slots;
  for (std::size_t i = 0; i < g.input_names.size(); ++i) input_slots.push_back(static_cast<int>(i));
  json cfg = {
      {"name", model.name()},
      {"trainable", true},
      {"layers", layers},
      {"input_layers", ends(input_slots, true)},
      {"output_layers", g.outputs.size() == 1 ? ends(g.outputs, true) : ends(g.outputs, false)}};
  if (legacy) return {{"class_name", "Functional"}, {"config", cfg}};
  return {{"module", "keras.src.models.functional"},
          {"class_name", "Functional"},
          {"config", cfg},
          {"registered_name", "Functional"}};
}

json compile_config(const Model& model) {
  if (!model.compiled()) return nullptr;
  const Optimizer& opt = model.optimizer();
  // Optimizer::name() is Keras's class name ("Adam"); the instance name Keras writes is lower case.
  const std::string cls = opt.name();
  std::string instance = cls;
  for (auto& ch : instance) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  json cfg = {{"name", instance}};
  for (const auto& [k, v] : opt.config()) {
    if (k == "nesterov" || k == "centered") {
      cfg[k] = v != 0.0;
    } else {
      cfg[k] = v;
    }
  }
  json metrics = json::array();
  for (const auto& m : model.metrics()) metrics.push_back(m);
  return {{"optimizer",
           {{"module", "keras.optimizers"},
            {"class_name", cls},
            {"config", cfg},
            {"registered_name", nullptr}}},
          {"loss", loss_name(model.loss())},
          {"loss_weights", nullptr},
          {"metrics", metrics},
          {"weighted_metrics", nullptr},
          {"run_eagerly", false},
          {"steps_per_execution", 1},
          {"jit_compile", false}};
}

}  // namespace bnorm::io::detail::keras

namespace bnorm::io {

std::shared_ptr<Layer> make_keras_layer(const std::string& class_name,
                                        const std::string& args_json) {
  using detail::keras::json;
  const std::string context = class_name + "()";
  if (!detail::known_layer_class(class_name)) {
    throw ValueError(context + ": bnorm has no layer class '" + class_name + "' (it has " +
                     detail::known_layer_classes() + ")");
  }
  const json args = json::parse(args_json, nullptr, /*allow_exceptions=*/false);
  if (!args.is_object()) throw ValueError(context + ": the arguments must be a JSON object");
  try {
    std::string name;
    bool trainable = true;
    const detail::keras::Where w{context, ""};
    const json native = detail::keras::config_from_keras(class_name, args, w, name, trainable);
    std::shared_ptr<Layer> layer = detail::layer_from_config(class_name, native, "", context);
    if (!name.empty()) layer->set_name(name);
    layer->set_trainable(trainable);
    return layer;
  } catch (const IoError& e) {
    throw ValueError(e.what());  // a bad argument, not a bad file
  }
}

std::string keras_layer_config(const Layer& layer) {
  try {
    return detail::keras::layer_config_to_keras(layer, "").dump();
  } catch (const IoError& e) {
    throw ValueError(e.what());
  }
}

}  // namespace bnorm::io
