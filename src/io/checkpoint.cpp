// Model files (docs/model-format.md): a fixed 32-byte header, a JSON description of the
// architecture, compile settings and a weights manifest, the raw float32 weights, and a CRC32.
// Loading rebuilds the model through a table keyed by Keras class name; nothing in a file is
// ever executed, and every field is checked before it is used.
#include "bnorm/io/checkpoint.hpp"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/depthwise_conv2d.hpp"
#include "bnorm/layers/dropout.hpp"
#include "bnorm/layers/elementwise.hpp"
#include "bnorm/layers/flatten.hpp"
#include "bnorm/layers/merge.hpp"
#include "bnorm/layers/normalization.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/layers/reshape.hpp"
#include "bnorm/layers/separable_conv2d.hpp"
#include "bnorm/layers/zero_padding2d.hpp"
#include "io/files.hpp"
#include "io/layer_codec.hpp"

namespace bnorm::io {

namespace {

using detail::read_file;
using json = nlohmann::ordered_json;

constexpr char kMagic[8] = {'B', 'N', 'O', 'R', 'M', 'M', 'D', 'L'};
constexpr std::uint32_t kFormatVersion = 1;
constexpr std::size_t kHeaderBytes = 32;  // magic, version, reserved, json length, data length
constexpr std::size_t kChecksumBytes = 4;
constexpr std::uint64_t kMaxJsonBytes = std::uint64_t{1} << 28;  // 256 MiB of JSON is not a model

// ---------------------------------------------------------------------------------------------
// Little-endian encoding, independent of the host's byte order.

void put_u32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}
void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}
std::uint64_t get_le(const unsigned char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
void put_floats(std::string& out, const Tensor& t) {
  const std::size_t n = static_cast<std::size_t>(t.size());
  const std::size_t start = out.size();
  out.resize(start + n * 4);
  char* dst = out.data() + start;
  if constexpr (std::endian::native == std::endian::little) {
    if (n) std::memcpy(dst, t.data(), n * 4);
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      const auto bits = std::bit_cast<std::uint32_t>(t.data()[i]);
      for (int b = 0; b < 4; ++b) dst[4 * i + b] = static_cast<char>((bits >> (8 * b)) & 0xFFu);
    }
  }
}
void get_floats(const unsigned char* src, Tensor& t) {
  const std::size_t n = static_cast<std::size_t>(t.size());
  if constexpr (std::endian::native == std::endian::little) {
    if (n) std::memcpy(t.data(), src, n * 4);
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      t.data()[i] = std::bit_cast<float>(static_cast<std::uint32_t>(get_le(src + 4 * i, 4)));
    }
  }
}

std::uint32_t crc32_of(const void* data, std::size_t size) {
  return static_cast<std::uint32_t>(
      crc32_z(crc32_z(0L, Z_NULL, 0), static_cast<const Bytef*>(data), size));
}

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

std::string shape_str(const std::vector<std::int64_t>& dims) { return Shape(dims).str(); }

// ---------------------------------------------------------------------------------------------
// Configs: writing, and a strict reader (type-checked keys, unknown keys rejected).

json initializer_to_json(const Initializer& init) {
  using K = Initializer::Kind;
  switch (init.kind) {
    case K::zeros:
      return {{"class_name", "Zeros"}};
    case K::ones:
      return {{"class_name", "Ones"}};
    case K::constant:
      return {{"class_name", "Constant"}, {"config", {{"value", init.a}}}};
    case K::glorot_uniform:
      return {{"class_name", "GlorotUniform"}};
    case K::random_uniform:
      return {{"class_name", "RandomUniform"},
              {"config", {{"minval", init.a}, {"maxval", init.b}}}};
    case K::random_normal:
      return {{"class_name", "RandomNormal"}, {"config", {{"mean", init.a}, {"stddev", init.b}}}};
    case K::truncated_normal:
      return {{"class_name", "TruncatedNormal"},
              {"config", {{"mean", init.a}, {"stddev", init.b}}}};
    case K::variance_scaling: {
      using M = Initializer::Mode;
      using D = Initializer::Distribution;
      const char* mode = init.mode == M::fan_in    ? "fan_in"
                         : init.mode == M::fan_out ? "fan_out"
                                                   : "fan_avg";
      const char* dist = init.distribution == D::uniform              ? "uniform"
                         : init.distribution == D::untruncated_normal ? "untruncated_normal"
                                                                      : "truncated_normal";
      return {{"class_name", "VarianceScaling"},
              {"config", {{"scale", init.a}, {"mode", mode}, {"distribution", dist}}}};
    }
  }
  throw IoError("unknown initializer kind");
}

// Reads one JSON object; errors name the file and the place ("layer 2 'dense' (Dense): ...").
class ConfigReader {
 public:
  ConfigReader(const json& object, std::string where, std::string context)
      : object_(object), where_(std::move(where)), context_(std::move(context)) {
    if (!object_.is_object()) fail("expected a JSON object");
  }

  [[noreturn]] void fail(const std::string& problem) const {
    throw IoError(context_ + where_ + ": " + problem);
  }
  bool has(const std::string& key) const { return object_.contains(key); }
  const json& raw(const std::string& key) {
    used_.insert(key);
    if (!object_.contains(key)) fail("missing key '" + key + "'");
    return object_.at(key);
  }
  const std::string& where() const { return where_; }
  const std::string& context() const { return context_; }

  std::string get_string(const std::string& key) {
    const json& v = raw(key);
    if (!v.is_string()) fail("key '" + key + "' must be a string");
    return v.get<std::string>();
  }
  bool get_bool(const std::string& key, bool fallback) {
    if (!has(key)) return fallback;
    const json& v = raw(key);
    if (!v.is_boolean()) fail("key '" + key + "' must be true or false");
    return v.get<bool>();
  }
  // A float32 or float64 option (T), read back exactly as it was written.
  template <class T>
  T get_number(const std::string& key, T fallback) {
    if (!has(key)) return fallback;
    const json& v = raw(key);
    if (!v.is_number()) fail("key '" + key + "' must be a number");
    const double d = v.get<double>();
    const auto t = static_cast<T>(d);
    if (!std::isfinite(d) || !std::isfinite(t)) fail("key '" + key + "' is not a finite number");
    return t;
  }
  float get_float(const std::string& key, float fallback) { return get_number(key, fallback); }
  std::int64_t get_int(const std::string& key, std::int64_t lo, std::int64_t hi) {
    const json& v = raw(key);
    if (!v.is_number_integer()) fail("key '" + key + "' must be an integer");
    if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(hi)) {
      fail("key '" + key + "' is out of range");
    }
    const auto i = v.get<std::int64_t>();
    if (i < lo || i > hi) {
      fail("key '" + key + "' = " + std::to_string(i) + " is outside [" + std::to_string(lo) +
           ", " + std::to_string(hi) + "]");
    }
    return i;
  }
  std::int64_t get_int(const std::string& key, std::int64_t lo, std::int64_t hi,
                       std::int64_t fallback) {
    return has(key) ? get_int(key, lo, hi) : fallback;
  }
  std::uint64_t get_u64(const std::string& key) {
    const json& v = raw(key);
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<std::int64_t>() >= 0)) {
      fail("key '" + key + "' must be a non-negative integer");
    }
    return v.get<std::uint64_t>();
  }
  std::vector<std::int64_t> get_dims(const std::string& key) {
    const json& v = raw(key);
    if (!v.is_array() || v.empty() || v.size() > static_cast<std::size_t>(Shape::kMaxRank)) {
      fail("key '" + key + "' must be a list of 1 to " + std::to_string(Shape::kMaxRank) +
           " dimensions");
    }
    std::vector<std::int64_t> dims;
    for (const auto& d : v) {
      if (!d.is_number_integer() || d.get<std::int64_t>() < 0 ||
          d.get<std::int64_t>() > (std::int64_t{1} << 40)) {
        fail("key '" + key + "' holds an invalid dimension " + d.dump());
      }
      dims.push_back(d.get<std::int64_t>());
    }
    return dims;
  }
  Initializer get_initializer(const std::string& key, Initializer fallback) {
    if (!has(key)) return fallback;
    ConfigReader r(raw(key), where_ + " " + key, context_);
    const std::string cls = r.get_string("class_name");
    auto cfg = [&]() {
      static const json kEmpty = json::object();
      return ConfigReader(r.has("config") ? r.raw("config") : kEmpty,
                          where_ + " " + key + " config", context_);
    };
    Initializer init;
    if (cls == "Zeros") {
      init = Initializer::zeros();
    } else if (cls == "Ones") {
      init = Initializer::ones();
    } else if (cls == "GlorotUniform") {
      init = Initializer::glorot_uniform();
    } else if (cls == "Constant") {
      auto c = cfg();
      init = Initializer::constant(c.get_float("value", 0.0f));
      c.finish();
    } else if (cls == "RandomUniform") {
      auto c = cfg();
      init =
          Initializer::random_uniform(c.get_float("minval", -0.05f), c.get_float("maxval", 0.05f));
      c.finish();
    } else if (cls == "RandomNormal") {
      auto c = cfg();
      init = Initializer::random_normal(c.get_float("mean", 0.0f), c.get_float("stddev", 0.05f));
      c.finish();
    } else if (cls == "TruncatedNormal") {
      auto c = cfg();
      init = Initializer::truncated_normal(c.get_float("mean", 0.0f), c.get_float("stddev", 0.05f));
      c.finish();
    } else if (cls == "VarianceScaling") {
      auto c = cfg();
      using M = Initializer::Mode;
      using D = Initializer::Distribution;
      const float scale = c.get_float("scale", 1.0f);
      if (!(scale > 0.0f)) c.fail("VarianceScaling scale must be > 0");
      const std::string mode = c.has("mode") ? c.get_string("mode") : "fan_in";
      const std::string dist =
          c.has("distribution") ? c.get_string("distribution") : "truncated_normal";
      M m = M::fan_in;
      if (mode == "fan_out")
        m = M::fan_out;
      else if (mode == "fan_avg")
        m = M::fan_avg;
      else if (mode != "fan_in")
        c.fail("VarianceScaling mode must be fan_in, fan_out or fan_avg");
      D d = D::truncated_normal;
      if (dist == "uniform")
        d = D::uniform;
      else if (dist == "untruncated_normal" || dist == "normal")
        d = D::untruncated_normal;
      else if (dist != "truncated_normal")
        c.fail(
            "VarianceScaling distribution must be truncated_normal, untruncated_normal or uniform");
      init = Initializer::variance_scaling(scale, m, d);
      c.finish();
    } else if (cls == "HeNormal" || cls == "HeUniform" || cls == "LecunNormal" ||
               cls == "LecunUniform" || cls == "GlorotNormal") {
      using M = Initializer::Mode;
      using D = Initializer::Distribution;
      const bool uniform = cls == "HeUniform" || cls == "LecunUniform";
      init = Initializer::variance_scaling(cls[0] == 'H' ? 2.0f : 1.0f,
                                           cls == "GlorotNormal" ? M::fan_avg : M::fan_in,
                                           uniform ? D::uniform : D::truncated_normal);
    } else {
      r.fail("unknown initializer class '" + cls +
             "' (known: Zeros, Ones, Constant, GlorotUniform, GlorotNormal, RandomUniform, "
             "RandomNormal, TruncatedNormal, VarianceScaling, HeNormal, HeUniform, LecunNormal, "
             "LecunUniform)");
    }
    if (r.has("config")) r.raw("config");
    r.finish();
    return init;
  }
  // Every key must have been read: an unknown key is a file this version does not understand.
  void finish() const {
    for (auto it = object_.begin(); it != object_.end(); ++it) {
      if (!used_.count(it.key())) fail("unknown key '" + it.key() + "'");
    }
  }

 private:
  const json& object_;
  std::string where_;
  std::string context_;
  std::set<std::string> used_;
};

// ---------------------------------------------------------------------------------------------
// The layer table: one entry per Keras class name, saving the config and re-creating the layer.

struct LayerCodec {
  std::function<json(const Layer&)> save;
  std::function<std::unique_ptr<Layer>(ConfigReader&)> load;
};

// The fields Dense and Conv2D share: activation, bias and the kernel/bias initializers and L2.
template <class Options>
void put_kernel_bias(json& j, const Options& o) {
  j["activation"] = o.activation;
  j["use_bias"] = o.use_bias;
  j["kernel_initializer"] = initializer_to_json(o.kernel_initializer);
  j["bias_initializer"] = initializer_to_json(o.bias_initializer);
  j["kernel_l2"] = o.kernel_l2;
  j["bias_l2"] = o.bias_l2;
}
template <class Options>
void get_kernel_bias(ConfigReader& c, Options& o) {
  o.activation = c.has("activation") ? c.get_string("activation") : o.activation;
  o.use_bias = c.get_bool("use_bias", o.use_bias);
  o.kernel_initializer = c.get_initializer("kernel_initializer", o.kernel_initializer);
  o.bias_initializer = c.get_initializer("bias_initializer", o.bias_initializer);
  o.kernel_l2 = c.get_number<decltype(o.kernel_l2)>("kernel_l2", o.kernel_l2);
  o.bias_l2 = c.get_number<decltype(o.bias_l2)>("bias_l2", o.bias_l2);
}

json dense_config(const Layer& layer) {
  const auto& o = dynamic_cast<const Dense&>(layer).options();
  json j = {{"units", o.units}};
  put_kernel_bias(j, o);
  return j;
}
std::unique_ptr<Layer> dense_from(ConfigReader& c) {
  Dense::Options o;
  o.units = c.get_int("units", 1, std::int64_t{1} << 31);
  get_kernel_bias(c, o);
  c.finish();
  return std::make_unique<Dense>(o);
}

// A list of integers in [lo, hi] (e.g. Keras's axis lists).
std::vector<int> get_int_list(ConfigReader& c, const std::string& key, int lo, int hi) {
  const json& v = c.raw(key);
  if (!v.is_array() || v.size() > static_cast<std::size_t>(Shape::kMaxRank))
    c.fail("key '" + key + "' must be a list of at most " + std::to_string(Shape::kMaxRank) +
           " integers");
  std::vector<int> out;
  for (const auto& e : v) {
    if (!e.is_number_integer() || e.get<std::int64_t>() < lo || e.get<std::int64_t>() > hi)
      c.fail("key '" + key + "' holds " + e.dump() + "; expected integers in [" +
             std::to_string(lo) + ", " + std::to_string(hi) + "]");
    out.push_back(static_cast<int>(e.get<std::int64_t>()));
  }
  return out;
}

// A Keras float-or-list argument (Rescaling scale/offset, Normalization mean/variance): one value
// is written as a number, several as a list; `null` reads as empty (Keras None).
json float_list_json(const std::vector<float>& v) {
  if (v.empty()) return nullptr;
  if (v.size() == 1) return v[0];
  return json(v);
}
std::vector<float> get_float_list(ConfigReader& c, const std::string& key,
                                  std::vector<float> fallback) {
  if (!c.has(key)) return fallback;
  const json& v = c.raw(key);
  auto finite = [&](const json& e) {
    if (!e.is_number()) c.fail("key '" + key + "' must be a number or a list of numbers");
    const double d = e.get<double>();
    const auto f = static_cast<float>(d);
    if (!std::isfinite(d) || !std::isfinite(f))
      c.fail("key '" + key + "' holds a non-finite number");
    return f;
  };
  if (v.is_null()) return {};
  if (!v.is_array()) return {finite(v)};
  if (v.size() > (std::size_t{1} << 24)) c.fail("key '" + key + "' is implausibly long");
  std::vector<float> out;
  for (const auto& e : v) out.push_back(finite(e));
  if (out.empty()) c.fail("key '" + key + "' must not be an empty list");
  return out;
}

json bn_config(const Layer& layer) {
  const auto& o = dynamic_cast<const BatchNormalization&>(layer).options();
  return {{"axis", o.axis},
          {"momentum", o.momentum},
          {"epsilon", o.epsilon},
          {"center", o.center},
          {"scale", o.scale},
          {"beta_initializer", initializer_to_json(o.beta_initializer)},
          {"gamma_initializer", initializer_to_json(o.gamma_initializer)},
          {"moving_mean_initializer", initializer_to_json(o.moving_mean_initializer)},
          {"moving_variance_initializer", initializer_to_json(o.moving_variance_initializer)},
          {"beta_l2", o.beta_l2},
          {"gamma_l2", o.gamma_l2},
          {"unbiased_moving_variance", o.unbiased_moving_variance},
          {"cumulative_moving_average", o.cumulative_moving_average},
          {"track_moving_statistics", o.track_moving_statistics},
          {"error_on_single_value", o.error_on_single_value},
          {"synchronized", o.synchronized},
          {"renorm", o.renorm},
          {"renorm_rmax", o.renorm_rmax ? json(*o.renorm_rmax) : json(nullptr)},
          {"renorm_rmin", o.renorm_rmin ? json(*o.renorm_rmin) : json(nullptr)},
          {"renorm_dmax", o.renorm_dmax ? json(*o.renorm_dmax) : json(nullptr)},
          {"renorm_momentum", o.renorm_momentum},
          {"virtual_batch_size", o.virtual_batch_size}};
}
// A number or null (an optional option), absent = fallback.
std::optional<double> get_optional_number(ConfigReader& c, const std::string& key,
                                          std::optional<double> fallback) {
  if (!c.has(key) || c.raw(key).is_null()) return fallback;
  return c.get_number<double>(key, 0.0);
}
std::unique_ptr<Layer> bn_from(ConfigReader& c) {
  BatchNormalization::Options o;
  if (c.has("axis") && c.raw("axis").is_array()) {
    // Keras writes axis as a list in some configs (legacy [3]); one entry is that axis.
    o = BatchNormalization::with_axis(
        get_int_list(c, "axis", -Shape::kMaxRank, Shape::kMaxRank - 1), o);
  } else {
    o.axis = static_cast<int>(c.get_int("axis", -Shape::kMaxRank, Shape::kMaxRank - 1, o.axis));
  }
  o.momentum = c.get_number<decltype(o.momentum)>("momentum", o.momentum);
  o.epsilon = c.get_number<decltype(o.epsilon)>("epsilon", o.epsilon);
  o.center = c.get_bool("center", o.center);
  o.scale = c.get_bool("scale", o.scale);
  o.beta_initializer = c.get_initializer("beta_initializer", o.beta_initializer);
  o.gamma_initializer = c.get_initializer("gamma_initializer", o.gamma_initializer);
  o.moving_mean_initializer =
      c.get_initializer("moving_mean_initializer", o.moving_mean_initializer);
  o.moving_variance_initializer =
      c.get_initializer("moving_variance_initializer", o.moving_variance_initializer);
  o.beta_l2 = c.get_number<decltype(o.beta_l2)>("beta_l2", o.beta_l2);
  o.gamma_l2 = c.get_number<decltype(o.gamma_l2)>("gamma_l2", o.gamma_l2);
  o.unbiased_moving_variance = c.get_bool("unbiased_moving_variance", o.unbiased_moving_variance);
  o.cumulative_moving_average =
      c.get_bool("cumulative_moving_average", o.cumulative_moving_average);
  o.track_moving_statistics = c.get_bool("track_moving_statistics", o.track_moving_statistics);
  o.error_on_single_value = c.get_bool("error_on_single_value", o.error_on_single_value);
  o.synchronized = c.get_bool("synchronized", o.synchronized);
  o.renorm = c.get_bool("renorm", o.renorm);
  o.renorm_rmax = get_optional_number(c, "renorm_rmax", o.renorm_rmax);
  o.renorm_rmin = get_optional_number(c, "renorm_rmin", o.renorm_rmin);
  o.renorm_dmax = get_optional_number(c, "renorm_dmax", o.renorm_dmax);
  o.renorm_momentum = c.get_number<double>("renorm_momentum", o.renorm_momentum);
  if (c.has("virtual_batch_size"))
    o.virtual_batch_size = c.get_int("virtual_batch_size", 0, std::int64_t{1} << 40);
  c.finish();
  return std::make_unique<BatchNormalization>(o);
}

json pair_json(const std::array<std::int64_t, 2>& v) { return json::array({v[0], v[1]}); }
// A Keras 2-tuple argument ([h, w]); a single integer means (n, n), as Keras accepts.
std::array<std::int64_t, 2> get_pair(ConfigReader& c, const std::string& key,
                                     std::array<std::int64_t, 2> fallback) {
  if (!c.has(key)) return fallback;
  const json& v = c.raw(key);
  auto valid = [](const json& e) {
    return e.is_number_integer() && e.get<std::int64_t>() >= 0 &&
           e.get<std::int64_t>() <= (std::int64_t{1} << 31);
  };
  if (valid(v)) return {v.get<std::int64_t>(), v.get<std::int64_t>()};
  if (!v.is_array() || v.size() != 2 || !valid(v[0]) || !valid(v[1])) {
    c.fail("key '" + key + "' must be a list of two non-negative integers");
  }
  return {v[0].get<std::int64_t>(), v[1].get<std::int64_t>()};
}

json conv2d_config(const Layer& layer) {
  const auto& o = dynamic_cast<const Conv2D&>(layer).options();
  json j = {{"filters", o.filters},
            {"kernel_size", pair_json(o.kernel_size)},
            {"strides", pair_json(o.strides)},
            {"padding", o.padding},
            {"data_format", o.data_format},
            {"dilation_rate", pair_json(o.dilation_rate)}};
  put_kernel_bias(j, o);
  return j;
}
std::unique_ptr<Layer> conv2d_from(ConfigReader& c) {
  Conv2D::Options o;
  o.filters = c.get_int("filters", 1, std::int64_t{1} << 31);
  o.kernel_size = get_pair(c, "kernel_size", o.kernel_size);
  if (!c.has("kernel_size")) c.raw("kernel_size");  // required: reports the missing key
  o.strides = get_pair(c, "strides", o.strides);
  o.padding = c.has("padding") ? c.get_string("padding") : o.padding;
  o.data_format = c.has("data_format") ? c.get_string("data_format") : o.data_format;
  o.dilation_rate = get_pair(c, "dilation_rate", o.dilation_rate);
  get_kernel_bias(c, o);
  c.finish();
  return std::make_unique<Conv2D>(o);
}

// MaxPooling2D and AveragePooling2D: strides are written as in effect (Keras writes
// pool_size for strides=None too).
json pooling_config(const Layer& layer) {
  const auto& p = dynamic_cast<const Pooling2D&>(layer);
  return {{"pool_size", pair_json(p.options().pool_size)},
          {"strides", pair_json(p.strides())},
          {"padding", p.options().padding},
          {"data_format", p.options().data_format}};
}
template <class PoolingLayer>
std::unique_ptr<Layer> pooling_from(ConfigReader& c) {
  Pooling2D::Options o;
  o.pool_size = get_pair(c, "pool_size", o.pool_size);
  if (c.has("strides")) {
    if (c.raw("strides").is_null()) {
      o.strides.reset();
    } else {
      o.strides = get_pair(c, "strides", o.pool_size);
    }
  }
  o.padding = c.has("padding") ? c.get_string("padding") : o.padding;
  o.data_format = c.has("data_format") ? c.get_string("data_format") : o.data_format;
  c.finish();
  return std::make_unique<PoolingLayer>(o);
}

// Dropout writes noise_shape and seed only when set, so files of plain Dropout are unchanged.
json dropout_config(const Layer& layer) {
  const auto& o = dynamic_cast<const Dropout&>(layer).options();
  json j = {{"rate", o.rate}};
  if (!o.noise_shape.empty()) {
    json n = json::array();
    for (const auto& d : o.noise_shape) n.push_back(d ? json(*d) : json(nullptr));
    j["noise_shape"] = n;
  }
  if (o.seed) j["seed"] = *o.seed;
  return j;
}
std::unique_ptr<Layer> dropout_from(ConfigReader& c) {
  Dropout::Options o;
  o.rate = c.get_float("rate", 0.0f);
  if (c.has("noise_shape") && !c.raw("noise_shape").is_null()) {
    const json& v = c.raw("noise_shape");
    if (!v.is_array() || v.size() > static_cast<std::size_t>(Shape::kMaxRank))
      c.fail("key 'noise_shape' must be null or a list of at most " +
             std::to_string(Shape::kMaxRank) + " entries");
    for (const auto& d : v) {
      if (d.is_null()) {
        o.noise_shape.emplace_back();
      } else if (d.is_number_integer() && d.get<std::int64_t>() >= 1 &&
                 d.get<std::int64_t>() <= (std::int64_t{1} << 40)) {
        o.noise_shape.emplace_back(d.get<std::int64_t>());
      } else {
        c.fail("key 'noise_shape' holds " + d.dump() + "; expected null or an integer >= 1");
      }
    }
  }
  if (c.has("seed") && !c.raw("seed").is_null()) o.seed = c.get_u64("seed");
  c.finish();
  return std::make_unique<Dropout>(o);
}

// ReLU: max_value null is Keras's None.
json relu_config(const Layer& layer) {
  const auto& o = dynamic_cast<const ReLU&>(layer).options();
  return {{"max_value", o.max_value ? json(*o.max_value) : json(nullptr)},
          {"negative_slope", o.negative_slope},
          {"threshold", o.threshold}};
}
std::unique_ptr<Layer> relu_from(ConfigReader& c) {
  ReLU::Options o;
  if (c.has("max_value") && !c.raw("max_value").is_null())
    o.max_value = c.get_float("max_value", 0.0f);
  o.negative_slope = c.get_float("negative_slope", o.negative_slope);
  o.threshold = c.get_float("threshold", o.threshold);
  c.finish();
  return std::make_unique<ReLU>(o);
}

json rescaling_config(const Layer& layer) {
  const auto& o = dynamic_cast<const Rescaling&>(layer).options();
  return {{"scale", float_list_json(o.scale)}, {"offset", float_list_json(o.offset)}};
}
std::unique_ptr<Layer> rescaling_from(ConfigReader& c) {
  Rescaling::Options o;
  if (!c.has("scale")) c.raw("scale");  // required, as in Keras: reports the missing key
  o.scale = get_float_list(c, "scale", o.scale);
  o.offset = get_float_list(c, "offset", o.offset);
  if (o.scale.empty() || o.offset.empty()) c.fail("scale and offset must not be null");
  c.finish();
  return std::make_unique<Rescaling>(o);
}

// Normalization: axis is written as Keras does, a list (an integer or null also read; null is
// Keras's axis=None); mean/variance null in adapt mode (the values are then weights).
json normalization_config(const Layer& layer) {
  const auto& o = dynamic_cast<const Normalization&>(layer).options();
  return {{"axis", o.axis},
          {"mean", float_list_json(o.mean)},
          {"variance", float_list_json(o.variance)},
          {"invert", o.invert}};
}
std::unique_ptr<Layer> normalization_from(ConfigReader& c) {
  Normalization::Options o;
  if (c.has("axis")) {
    const json& a = c.raw("axis");
    if (a.is_null()) {
      o.axis.clear();
    } else if (a.is_array()) {
      o.axis = get_int_list(c, "axis", -Shape::kMaxRank, Shape::kMaxRank - 1);
    } else {
      o.axis = {static_cast<int>(c.get_int("axis", -Shape::kMaxRank, Shape::kMaxRank - 1))};
    }
  }
  o.mean = get_float_list(c, "mean", o.mean);
  o.variance = get_float_list(c, "variance", o.variance);
  o.invert = c.get_bool("invert", o.invert);
  c.finish();
  return std::make_unique<Normalization>(o);
}

// DepthwiseConv2D and SeparableConv2D: the depthwise half's keys, read and written alike.
template <class Options>
void put_depthwise(json& j, const Options& o) {
  j["kernel_size"] = pair_json(o.kernel_size);
  j["strides"] = pair_json(o.strides);
  j["padding"] = o.padding;
  j["depth_multiplier"] = o.depth_multiplier;
  j["data_format"] = o.data_format;
  j["dilation_rate"] = pair_json(o.dilation_rate);
  j["activation"] = o.activation;
  j["use_bias"] = o.use_bias;
  j["depthwise_initializer"] = initializer_to_json(o.depthwise_initializer);
}
template <class Options>
void get_depthwise(ConfigReader& c, Options& o) {
  if (!c.has("kernel_size")) c.raw("kernel_size");  // required: reports the missing key
  o.kernel_size = get_pair(c, "kernel_size", o.kernel_size);
  o.strides = get_pair(c, "strides", o.strides);
  o.padding = c.has("padding") ? c.get_string("padding") : o.padding;
  o.depth_multiplier = c.get_int("depth_multiplier", 1, std::int64_t{1} << 31, o.depth_multiplier);
  o.data_format = c.has("data_format") ? c.get_string("data_format") : o.data_format;
  o.dilation_rate = get_pair(c, "dilation_rate", o.dilation_rate);
  o.activation = c.has("activation") ? c.get_string("activation") : o.activation;
  o.use_bias = c.get_bool("use_bias", o.use_bias);
  o.depthwise_initializer = c.get_initializer("depthwise_initializer", o.depthwise_initializer);
  o.bias_initializer = c.get_initializer("bias_initializer", o.bias_initializer);
  o.depthwise_l2 = c.get_number<decltype(o.depthwise_l2)>("depthwise_l2", o.depthwise_l2);
  o.bias_l2 = c.get_number<decltype(o.bias_l2)>("bias_l2", o.bias_l2);
}

json depthwise_conv2d_config(const Layer& layer) {
  const auto& o = dynamic_cast<const DepthwiseConv2D&>(layer).options();
  json j = json::object();
  put_depthwise(j, o);
  j["bias_initializer"] = initializer_to_json(o.bias_initializer);
  j["depthwise_l2"] = o.depthwise_l2;
  j["bias_l2"] = o.bias_l2;
  return j;
}
std::unique_ptr<Layer> depthwise_conv2d_from(ConfigReader& c) {
  DepthwiseConv2D::Options o;
  get_depthwise(c, o);
  c.finish();
  return std::make_unique<DepthwiseConv2D>(o);
}

json separable_conv2d_config(const Layer& layer) {
  const auto& o = dynamic_cast<const SeparableConv2D&>(layer).options();
  json j = {{"filters", o.filters}};
  put_depthwise(j, o);
  j["pointwise_initializer"] = initializer_to_json(o.pointwise_initializer);
  j["bias_initializer"] = initializer_to_json(o.bias_initializer);
  j["depthwise_l2"] = o.depthwise_l2;
  j["pointwise_l2"] = o.pointwise_l2;
  j["bias_l2"] = o.bias_l2;
  return j;
}
std::unique_ptr<Layer> separable_conv2d_from(ConfigReader& c) {
  SeparableConv2D::Options o;
  o.filters = c.get_int("filters", 1, std::int64_t{1} << 31);
  get_depthwise(c, o);
  o.pointwise_initializer = c.get_initializer("pointwise_initializer", o.pointwise_initializer);
  o.pointwise_l2 = c.get_number<decltype(o.pointwise_l2)>("pointwise_l2", o.pointwise_l2);
  c.finish();
  return std::make_unique<SeparableConv2D>(o);
}

// ZeroPadding2D writes ((top, bottom), (left, right)) as Keras does, and reads every form Keras
// accepts: n, [sym_h, sym_w] or [[top, bottom], [left, right]].
json zero_padding2d_config(const Layer& layer) {
  const auto& o = dynamic_cast<const ZeroPadding2D&>(layer).options();
  return {{"padding", json::array({pair_json(o.padding[0]), pair_json(o.padding[1])})},
          {"data_format", o.data_format}};
}
std::unique_ptr<Layer> zero_padding2d_from(ConfigReader& c) {
  ZeroPadding2D::Options o;
  if (c.has("padding")) {
    const json& v = c.raw("padding");
    auto count = [](const json& e) {
      return e.is_number_integer() && e.get<std::int64_t>() >= 0 &&
             e.get<std::int64_t>() <= (std::int64_t{1} << 31);
    };
    auto axis = [&](const json& e, std::array<std::int64_t, 2>& out) {
      if (count(e)) {
        out = {e.get<std::int64_t>(), e.get<std::int64_t>()};
        return true;
      }
      if (e.is_array() && e.size() == 2 && count(e[0]) && count(e[1])) {
        out = {e[0].get<std::int64_t>(), e[1].get<std::int64_t>()};
        return true;
      }
      return false;
    };
    const bool ok = count(v) ? axis(v, o.padding[0]) && axis(v, o.padding[1])
                             : v.is_array() && v.size() == 2 && axis(v[0], o.padding[0]) &&
                                   axis(v[1], o.padding[1]);
    if (!ok) {
      c.fail(
          "key 'padding' must be a non-negative integer, [sym_h, sym_w] or "
          "[[top, bottom], [left, right]]");
    }
  }
  o.data_format = c.has("data_format") ? c.get_string("data_format") : o.data_format;
  c.finish();
  return std::make_unique<ZeroPadding2D>(o);
}

// GlobalAveragePooling2D and GlobalMaxPooling2D: the same two keys.
template <class GlobalPooling>
json global_pooling_config(const Layer& layer) {
  const auto& o = dynamic_cast<const GlobalPooling&>(layer).options();
  return {{"data_format", o.data_format}, {"keepdims", o.keepdims}};
}
template <class GlobalPooling>
std::unique_ptr<Layer> global_pooling_from(ConfigReader& c) {
  typename GlobalPooling::Options o;
  o.data_format = c.has("data_format") ? c.get_string("data_format") : o.data_format;
  o.keepdims = c.get_bool("keepdims", o.keepdims);
  c.finish();
  return std::make_unique<GlobalPooling>(o);
}

// Merge layers without options (Add, Subtract, Multiply, Average).
json no_config(const Layer&) { return json::object(); }
template <class M>
std::unique_ptr<Layer> merge_from(ConfigReader& c) {
  c.finish();
  return std::make_unique<M>();
}

const std::map<std::string, LayerCodec>& layer_table() {
  static const std::map<std::string, LayerCodec> table = {
      {"Dense", {dense_config, dense_from}},
      {"BatchNormalization", {bn_config, bn_from}},
      {"Activation",
       {[](const Layer& l) -> json {
          return {{"activation", activation_name(dynamic_cast<const Activation&>(l).activation())}};
        },
        [](ConfigReader& c) -> std::unique_ptr<Layer> {
          auto name = c.get_string("activation");
          c.finish();
          return std::make_unique<Activation>(name);
        }}},
      {"Dropout", {dropout_config, dropout_from}},
      {"ReLU", {relu_config, relu_from}},
      {"Rescaling", {rescaling_config, rescaling_from}},
      {"Normalization", {normalization_config, normalization_from}},
      {"Reshape",
       {[](const Layer& l) -> json {
          return {{"target_shape", dynamic_cast<const Reshape&>(l).target_shape()}};
        },
        [](ConfigReader& c) -> std::unique_ptr<Layer> {
          const json& v = c.raw("target_shape");
          if (!v.is_array() || v.empty() || v.size() > static_cast<std::size_t>(Shape::kMaxRank))
            c.fail("key 'target_shape' must be a list of 1 to " +
                   std::to_string(Shape::kMaxRank - 1) + " dimensions");
          std::vector<std::int64_t> dims;
          for (const auto& d : v) {
            if (!d.is_number_integer() || d.get<std::int64_t>() < -1 ||
                d.get<std::int64_t>() > (std::int64_t{1} << 40))
              c.fail("key 'target_shape' holds an invalid dimension " + d.dump());
            dims.push_back(d.get<std::int64_t>());
          }
          c.finish();
          return std::make_unique<Reshape>(dims);
        }}},
      {"Identity",
       {[](const Layer&) -> json { return json::object(); },
        [](ConfigReader& c) -> std::unique_ptr<Layer> {
          c.finish();
          return std::make_unique<Identity>();
        }}},
      {"Add", {no_config, merge_from<Add>}},
      {"Subtract", {no_config, merge_from<Subtract>}},
      {"Multiply", {no_config, merge_from<Multiply>}},
      {"Average", {no_config, merge_from<Average>}},
      {"Concatenate",
       {[](const Layer& l) -> json {
          return {{"axis", dynamic_cast<const Concatenate&>(l).axis()}};
        },
        [](ConfigReader& c) -> std::unique_ptr<Layer> {
          const auto axis =
              static_cast<int>(c.get_int("axis", -Shape::kMaxRank, Shape::kMaxRank - 1, -1));
          c.finish();
          return std::make_unique<Concatenate>(axis);
        }}},
      {"Conv2D", {conv2d_config, conv2d_from}},
      {"MaxPooling2D", {pooling_config, pooling_from<MaxPooling2D>}},
      {"AveragePooling2D", {pooling_config, pooling_from<AveragePooling2D>}},
      {"GlobalAveragePooling2D",
       {global_pooling_config<GlobalAveragePooling2D>,
        global_pooling_from<GlobalAveragePooling2D>}},
      {"GlobalMaxPooling2D",
       {global_pooling_config<GlobalMaxPooling2D>, global_pooling_from<GlobalMaxPooling2D>}},
      {"DepthwiseConv2D", {depthwise_conv2d_config, depthwise_conv2d_from}},
      {"SeparableConv2D", {separable_conv2d_config, separable_conv2d_from}},
      {"ZeroPadding2D", {zero_padding2d_config, zero_padding2d_from}},
      {"Flatten",
       {[](const Layer& l) -> json {
          return {{"data_format", dynamic_cast<const Flatten&>(l).options().data_format}};
        },
        [](ConfigReader& c) -> std::unique_ptr<Layer> {
          Flatten::Options o;
          o.data_format = c.has("data_format") ? c.get_string("data_format") : o.data_format;
          c.finish();
          return std::make_unique<Flatten>(o);
        }}},
  };
  return table;
}

std::string known_classes() {
  std::string s;
  for (const auto& [name, codec] : layer_table()) s += (s.empty() ? "" : ", ") + name;
  return s;
}

// ---------------------------------------------------------------------------------------------
// Save.

json training_json(const Model& model, std::string& data, const std::string& context);

std::string serialize(const Model& model, const std::string& path) {
  const std::string context = "model file '" + path + "': ";
  json doc;
  doc["format"] = "bnorm-model";
  doc["format_version"] = kFormatVersion;

  std::optional<Shape> input_shape = model.input_shape();
  const bool built = model.built();
  if (!input_shape && built && model.size() > 0) input_shape = model.layer(0).input_shape();
  json m;
  m["class_name"] = model.class_name();
  m["name"] = model.name();
  m["seed"] = model.seed();
  m["input_shape"] = input_shape ? json(input_shape->dims()) : json(nullptr);
  m["built"] = built;
  doc["model"] = m;

  std::string data;
  json layers = json::array();
  for (std::size_t i = 0; i < model.size(); ++i) {
    const Layer& layer = model.layer(i);
    const auto it = layer_table().find(layer.class_name());
    if (it == layer_table().end()) {
      throw IoError(context + "cannot save layer '" + layer.name() + "': class '" +
                    layer.class_name() +
                    "' is not supported by the model format (known: " + known_classes() + ")");
    }
    json entry;
    entry["class_name"] = layer.class_name();
    entry["name"] = layer.name();
    entry["trainable"] = layer.trainable();
    entry["config"] = it->second.save(layer);
    if (const auto* bn = dynamic_cast<const BatchNormalization*>(&layer)) {
      entry["state"] = {{"num_batches_tracked", bn->num_batches_tracked()}};
    }
    json weights = json::array();
    for (const Variable* v : layer.weights()) {
      weights.push_back({{"name", v->name},
                         {"shape", v->value.shape().dims()},
                         {"dtype", "float32"},
                         {"offset", data.size()},
                         {"trainable", v->trainable}});
      put_floats(data, v->value);
    }
    entry["weights"] = weights;
    layers.push_back(entry);
  }
  doc["layers"] = layers;
  if (!model.is_sequential()) {
    // The graph: input i is tensor i, call j's output is tensor (number of inputs + j).
    const Model::FlatGraph g = model.flat_graph();
    json graph;
    json inputs = json::array();
    for (std::size_t i = 0; i < g.input_shapes.size(); ++i)
      inputs.push_back({{"name", g.input_names[i]}, {"shape", g.input_shapes[i].dims()}});
    json calls = json::array();
    for (const auto& c : g.calls) calls.push_back({{"layer", c.layer}, {"inputs", c.inputs}});
    graph["inputs"] = inputs;
    graph["calls"] = calls;
    graph["outputs"] = g.outputs;
    doc["graph"] = graph;
  }

  if (model.compiled()) {
    const auto& opt = model.optimizer();
    json cfg = json::object();
    for (const auto& [key, value] : opt.config()) cfg[key] = value;
    doc["compile"] = {{"optimizer", {{"name", opt.name()}, {"config", cfg}}},
                      {"loss", loss_name(model.loss())},
                      {"metrics", model.metrics()}};
  } else {
    doc["compile"] = nullptr;
  }
  // A model that has trained carries what its run needs to continue exactly (the optimizer's
  // slots follow the weights in the weights section).
  if (model.compiled() &&
      (model.optimizer().iterations() > 0 || model.training_state().epoch > 0)) {
    doc["training"] = training_json(model, data, context);
  }

  // Names with invalid UTF-8 are written with U+FFFD rather than failing the save.
  const std::string text = doc.dump(1, ' ', false, json::error_handler_t::replace);
  std::string out;
  out.reserve(kHeaderBytes + text.size() + data.size() + kChecksumBytes);
  out.append(kMagic, sizeof kMagic);
  put_u32(out, kFormatVersion);
  put_u32(out, 0);  // reserved
  put_u64(out, text.size());
  put_u64(out, data.size());
  out += text;
  out += data;
  put_u32(out, crc32_of(out.data(), out.size()));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Load.

struct Container {
  std::vector<unsigned char> bytes;
  json doc;
  const unsigned char* data = nullptr;  // weights section
  std::uint64_t data_bytes = 0;
};

Container open_container(const std::string& path, const std::string& context) {
  Container c;
  c.bytes = read_file(path, context);
  const auto size = static_cast<std::uint64_t>(c.bytes.size());
  const unsigned char* p = c.bytes.data();
  if (size < sizeof kMagic || std::memcmp(p, kMagic, sizeof kMagic) != 0) {
    throw IoError(context + "not a bnorm model (bad magic)");
  }
  if (size < kHeaderBytes) {
    throw IoError(context + "truncated (the header needs " + std::to_string(kHeaderBytes) +
                  " bytes, found " + std::to_string(size) + ")");
  }
  const auto version = static_cast<std::uint32_t>(get_le(p + 8, 4));
  if (version != kFormatVersion) {
    throw IoError(context + "format version " + std::to_string(version) +
                  " is not supported (this bnorm reads version " + std::to_string(kFormatVersion) +
                  ")");
  }
  const std::uint64_t json_bytes = get_le(p + 16, 8);
  const std::uint64_t data_bytes = get_le(p + 24, 8);
  if (json_bytes > kMaxJsonBytes || data_bytes > (std::uint64_t{1} << 48)) {
    throw IoError(context + "corrupt header (implausible section sizes)");
  }
  const std::uint64_t after_header = size - kHeaderBytes;
  if (after_header < json_bytes) {
    throw IoError(context + "truncated (expected " + std::to_string(json_bytes) +
                  " bytes of JSON, found " + std::to_string(after_header) + ")");
  }
  const std::uint64_t after_json = after_header - json_bytes;
  if (after_json < data_bytes + kChecksumBytes) {
    const std::uint64_t found = after_json > kChecksumBytes ? after_json - kChecksumBytes : 0;
    throw IoError(context + "truncated (expected " + std::to_string(data_bytes) +
                  " bytes of weights and a 4-byte checksum, found " +
                  (after_json < data_bytes
                       ? std::to_string(after_json) + " bytes"
                       : std::to_string(found) + " bytes of weights and " +
                             std::to_string(after_json - data_bytes) + " of the checksum") +
                  ")");
  }
  if (after_json > data_bytes + kChecksumBytes) {
    throw IoError(context + std::to_string(after_json - data_bytes - kChecksumBytes) +
                  " unexpected bytes after the checksum");
  }
  const std::size_t body = static_cast<std::size_t>(size - kChecksumBytes);
  const auto stored = static_cast<std::uint32_t>(get_le(p + body, 4));
  const std::uint32_t computed = crc32_of(p, body);
  if (stored != computed) {
    throw IoError(context + "checksum mismatch (stored " + hex32(stored) + ", computed " +
                  hex32(computed) + "); the file is corrupt");
  }
  const auto* text = reinterpret_cast<const char*>(p + kHeaderBytes);
  c.doc = json::parse(text, text + json_bytes, nullptr, /*allow_exceptions=*/false);
  if (c.doc.is_discarded()) throw IoError(context + "malformed JSON description");
  c.data = p + kHeaderBytes + json_bytes;
  c.data_bytes = data_bytes;
  return c;
}

void load_compile(Model& model, const json& compile, const std::string& context) {
  if (compile.is_null()) return;
  ConfigReader c(compile, "compile", context);
  ConfigReader opt(c.raw("optimizer"), "compile optimizer", context);
  const std::string name = opt.get_string("name");
  ConfigReader cfg(opt.raw("config"), "compile optimizer config", context);
  std::map<std::string, double> values;
  const json& cfg_json = opt.raw("config");
  for (auto it = cfg_json.begin(); it != cfg_json.end(); ++it) {
    if (!it.value().is_number()) cfg.fail("key '" + it.key() + "' must be a number");
    values[it.key()] = it.value().get<double>();
  }
  opt.finish();
  const std::string loss = c.get_string("loss");
  std::vector<std::string> metrics;
  const json& m = c.raw("metrics");
  if (!m.is_array()) c.fail("key 'metrics' must be a list of names");
  for (const auto& name_json : m) {
    if (!name_json.is_string()) c.fail("key 'metrics' must be a list of names");
    metrics.push_back(name_json.get<std::string>());
  }
  c.finish();
  try {
    // The stored rate is the current one, which a schedule may have set to 0 (valid for
    // set_learning_rate, not for a new optimizer): the optimizer is made with its default then.
    const auto rate = values.find("learning_rate");
    const bool zero_rate = rate != values.end() && rate->second == 0.0;
    if (zero_rate) values.erase(rate);
    std::unique_ptr<Optimizer> optimizer = make_optimizer(name, values);
    if (zero_rate) optimizer->set_learning_rate(0.0);
    model.compile(std::move(optimizer), parse_loss(loss), metrics);
  } catch (const IoError&) {
    throw;
  } catch (const Error& e) {
    throw IoError(context + "compile settings: " + e.what());
  }
}

}  // namespace

namespace detail {

json layer_config(const Layer& layer, const std::string& context) {
  const auto it = layer_table().find(layer.class_name());
  if (it == layer_table().end()) {
    throw IoError(context + "layer '" + layer.name() + "': class '" + layer.class_name() +
                  "' is not supported by the file formats (known: " + known_classes() + ")");
  }
  return it->second.save(layer);
}

std::unique_ptr<Layer> layer_from_config(const std::string& class_name, const json& config,
                                         const std::string& where, const std::string& context) {
  const auto it = layer_table().find(class_name);
  if (it == layer_table().end()) {
    throw IoError(context + where + ": unknown layer class '" + class_name +
                  "' (known: " + known_classes() + ")");
  }
  ConfigReader cfg(config, where, context);
  try {
    return it->second.load(cfg);
  } catch (const IoError&) {
    throw;
  } catch (const Error& e) {
    cfg.fail(e.what());
  }
}

bool known_layer_class(const std::string& class_name) {
  return layer_table().count(class_name) > 0;
}
std::string known_layer_classes() { return known_classes(); }

namespace {
// a * b, saturating at INT64_MAX (dimensions from a file can be up to 2^40 each).
std::int64_t saturating_mul(std::int64_t a, std::int64_t b) {
  std::int64_t r = 0;
  return __builtin_mul_overflow(a, b, &r) ? std::numeric_limits<std::int64_t>::max() : r;
}
// The input channels of a convolution's per-sample input (H, W, C) or (C, H, W).
std::int64_t input_channels(const std::string& data_format, const Shape& in) {
  if (in.rank() == 0) return 0;  // build refuses it
  return data_format == "channels_first" && in.rank() == 3 ? in[0] : in.dims().back();
}
// The per-channel size of BatchNormalization's and Normalization's statistics for `in`
// (saturating; an axis out of range gives the last axis, and build reports the axis).
std::int64_t statistics_channels(const Layer& layer, const Shape& in) {
  const auto last = in.dims().empty() ? 0 : in.dims().back();
  if (const auto* bn = dynamic_cast<const BatchNormalization*>(&layer)) {
    const int axis = bn->options().axis < 0 ? bn->options().axis + in.rank() + 1
                                            : bn->options().axis;  // Keras axes count the batch
    return axis >= 1 && axis <= in.rank() ? in[axis - 1] : last;
  }
  if (const auto* n = dynamic_cast<const Normalization*>(&layer)) {
    std::int64_t channels = 1;
    for (int a : n->options().axis) {
      const int full = a < 0 ? a + in.rank() + 1 : a;
      if (full >= 1 && full <= in.rank()) channels = saturating_mul(channels, in[full - 1]);
    }
    return channels;
  }
  return 0;
}
}  // namespace

std::vector<std::vector<std::int64_t>> expected_weight_dims(const Layer& layer, const Shape& in) {
  using Dims = std::vector<std::int64_t>;
  std::vector<Dims> out;
  const auto last = in.dims().empty() ? 0 : in.dims().back();
  if (const auto* d = dynamic_cast<const Dense*>(&layer)) {
    out.push_back({last, d->options().units});
    if (d->options().use_bias) out.push_back({d->options().units});
  } else if (const auto* c = dynamic_cast<const Conv2D*>(&layer)) {
    const auto& o = c->options();
    const std::int64_t cin = input_channels(o.data_format, in);
    out.push_back({o.kernel_size[0], o.kernel_size[1], cin, o.filters});
    if (o.use_bias) out.push_back({o.filters});
  } else if (const auto* s = dynamic_cast<const SeparableConv2D*>(&layer)) {
    const auto& o = s->options();
    const std::int64_t cin = input_channels(o.data_format, in);
    out.push_back({o.kernel_size[0], o.kernel_size[1], cin, o.depth_multiplier});
    out.push_back({1, 1, saturating_mul(cin, o.depth_multiplier), o.filters});
    if (o.use_bias) out.push_back({o.filters});
  } else if (const auto* dw = dynamic_cast<const DepthwiseConv2D*>(&layer)) {
    const auto& o = dw->options();
    const std::int64_t cin = input_channels(o.data_format, in);
    out.push_back({o.kernel_size[0], o.kernel_size[1], cin, o.depth_multiplier});
    if (o.use_bias) out.push_back({saturating_mul(cin, o.depth_multiplier)});
  } else if (const auto* bn = dynamic_cast<const BatchNormalization*>(&layer)) {
    const auto& o = bn->options();
    const std::int64_t c = statistics_channels(layer, in);
    const int n = (o.scale ? 1 : 0) + (o.center ? 1 : 0) + (o.track_moving_statistics ? 2 : 0) +
                  (o.renorm ? 3 : 0);  // moving_stddev, renorm_mean, renorm_stddev
    for (int i = 0; i < n; ++i) out.push_back({c});
  } else if (const auto* nz = dynamic_cast<const Normalization*>(&layer)) {
    if (!nz->fixed_statistics()) {  // adapt mode: mean, variance over the kept axes, and count
      Dims kept;
      std::vector<int> axes;
      for (int a : nz->options().axis) axes.push_back(a < 0 ? a + in.rank() + 1 : a);
      std::sort(axes.begin(), axes.end());
      for (int a : axes)
        if (a >= 1 && a <= in.rank()) kept.push_back(in[a - 1]);
      if (kept.empty()) kept.push_back(1);
      out.push_back(kept);
      out.push_back(kept);
      out.push_back({1});
    }
  }
  return out;
}

std::int64_t unstored_statistics_channels(const Layer& layer, const Shape& input_shape) {
  const auto* bn = dynamic_cast<const BatchNormalization*>(&layer);
  const auto* nz = dynamic_cast<const Normalization*>(&layer);
  if (bn && (bn->options().scale || bn->options().center || bn->options().track_moving_statistics))
    return 0;
  if (nz && !nz->fixed_statistics()) return 0;
  return bn || nz ? statistics_channels(layer, input_shape) : 0;
}

}  // namespace detail

void save_native_model(const Model& model, const std::string& path) {
  detail::write_file_atomic(path, serialize(model, path), "model file '" + path + "': ");
}

// The "graph" section of a functional model, checked before anything is built: every count is
// bounded by what the file itself holds.
Model::FlatGraph read_graph(const json& g, std::size_t layer_count, const std::string& context) {
  ConfigReader r(g, "graph", context);
  Model::FlatGraph out;
  const json& inputs = r.raw("inputs");
  if (!inputs.is_array() || inputs.empty() || inputs.size() > 4096)
    r.fail("key 'inputs' must be a list of 1 to 4096 inputs");
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    ConfigReader in(inputs[i], "graph input " + std::to_string(i), context);
    out.input_names.push_back(in.get_string("name"));
    out.input_shapes.emplace_back(in.get_dims("shape"));
    in.finish();
  }
  const json& calls = r.raw("calls");
  if (!calls.is_array() || calls.size() > std::size_t{1} << 20)
    r.fail("key 'calls' must be a list of at most 1048576 calls");
  const auto slot_ok = [](const json& v, std::size_t available) {
    return v.is_number_integer() && v.get<std::int64_t>() >= 0 &&
           static_cast<std::uint64_t>(v.get<std::int64_t>()) < available;
  };
  for (std::size_t j = 0; j < calls.size(); ++j) {
    ConfigReader c(calls[j], "graph call " + std::to_string(j), context);
    Model::FlatGraph::Call call;
    call.layer =
        static_cast<std::size_t>(c.get_int("layer", 0, static_cast<std::int64_t>(layer_count) - 1));
    const json& xs = c.raw("inputs");
    if (!xs.is_array() || xs.empty() || xs.size() > 4096)
      c.fail("key 'inputs' must be a list of 1 to 4096 tensors");
    for (const json& v : xs) {
      if (!slot_ok(v, inputs.size() + j))
        c.fail("reads tensor " + v.dump() + ", which is not computed before this call");
      call.inputs.push_back(static_cast<int>(v.get<std::int64_t>()));
    }
    c.finish();
    out.calls.push_back(std::move(call));
  }
  const json& outs = r.raw("outputs");
  if (!outs.is_array() || outs.empty() || outs.size() > 4096)
    r.fail("key 'outputs' must be a list of 1 to 4096 tensors");
  for (const json& v : outs) {
    if (!slot_ok(v, inputs.size() + calls.size()))
      r.fail("output tensor " + v.dump() + " does not exist");
    out.outputs.push_back(static_cast<int>(v.get<std::int64_t>()));
  }
  r.finish();
  return out;
}

namespace {

// One weight (or optimizer slot) as the file lists it, checked against the weights section
// before anything is built.
struct PendingWeight {
  std::string name;
  std::vector<std::int64_t> shape;
  std::uint64_t offset = 0;
};

// The number of bytes of float32 values of `dims`, or nullopt when it overflows.
std::optional<std::uint64_t> float_bytes(const std::vector<std::int64_t>& dims) {
  std::uint64_t n = 4;
  for (const auto d : dims)
    if (__builtin_mul_overflow(n, static_cast<std::uint64_t>(d), &n)) return std::nullopt;
  return n;
}

// Offsets are consecutive from `offset`, and every value lies inside the weights section.
void check_offsets(const std::vector<PendingWeight>& weights, const std::string& owner,
                   std::uint64_t& offset, std::uint64_t data_bytes, const std::string& context) {
  for (const PendingWeight& w : weights) {
    const std::string wname = owner + "/" + w.name + "'";
    if (w.offset != offset) {
      throw IoError(context + wname + " starts at byte " + std::to_string(w.offset) +
                    " of the weights; expected " + std::to_string(offset));
    }
    const auto bytes = float_bytes(w.shape);
    if (!bytes || *bytes > data_bytes - offset) {
      throw IoError(context + wname + " (shape " + shape_str(w.shape) +
                    ") runs past the end of the weights section (" + std::to_string(data_bytes) +
                    " bytes)");
    }
    offset += *bytes;
  }
}

// Keras's layer call order gives the shapes each layer is built for; every layer's weights in
// the file must be what its config implies for them, and a layer's own per-channel buffers that
// no stored weight bounds are limited, all before anything is built (building allocates).
constexpr std::int64_t kMaxUnstoredChannels = std::int64_t{1} << 24;

void check_layer_against_file(const Layer& layer, const Shape& input_shape,
                              const std::vector<PendingWeight>& listed,
                              const std::string& context) {
  const std::string lname = "layer '" + layer.name() + "' (" + layer.class_name() + ")";
  const auto expected = detail::expected_weight_dims(layer, input_shape);
  if (listed.size() != expected.size()) {
    throw IoError(context + lname + " has " + std::to_string(listed.size()) +
                  " weights in the file; its config and input shape " + input_shape.str() +
                  " need " + std::to_string(expected.size()));
  }
  for (std::size_t j = 0; j < expected.size(); ++j) {
    if (listed[j].shape != expected[j]) {
      throw IoError(context + "weight '" + layer.name() + "/" + listed[j].name + "' has shape " +
                    shape_str(listed[j].shape) + " in the file; the architecture needs " +
                    shape_str(expected[j]) + " (" + lname + " on input shape " + input_shape.str() +
                    ")");
    }
  }
  const std::int64_t channels = detail::unstored_statistics_channels(layer, input_shape);
  if (channels > kMaxUnstoredChannels) {
    throw IoError(context + lname + " would normalize " + std::to_string(channels) +
                  " channels (input shape " + input_shape.str() + ") with no stored weights; " +
                  "the limit for such a layer is " + std::to_string(kMaxUnstoredChannels));
  }
}

// ---- The training section: what a run needs to continue exactly (see docs/model-format.md).

std::string joined(const std::vector<std::string>& names) {
  std::string all;
  for (const auto& n : names) all += (all.empty() ? "" : ", ") + n;
  return all;
}

json stream_json(const Random& r) {
  json a = json::array();
  for (const std::uint64_t v : r.state()) a.push_back(v);
  return a;
}

json training_json(const Model& model, std::string& data, const std::string& context) {
  const TrainingState& state = model.training_state();
  const Optimizer& opt = model.optimizer();
  json t;
  t["epoch"] = state.epoch;
  t["samples"] = state.samples;
  t["shuffles"] = state.shuffles;
  json seed = json::array();
  for (const std::uint64_t v : state.shuffle_seed) seed.push_back(v);
  t["shuffle_seed"] = seed;
  json history = json::object();
  for (const auto& [key, values] : state.history) {
    json list = json::array();
    for (const double v : values) list.push_back(std::isfinite(v) ? json(v) : json(nullptr));
    history[key] = list;
  }
  t["history"] = history;
  const Model::RandomStreams streams = model.random_streams();
  json layer_streams = json::array();
  for (const auto& [name, stream] : streams.layers)
    layer_streams.push_back({{"layer", name}, {"state", stream_json(stream)}});
  t["random_streams"] = {{"model", stream_json(streams.model)}, {"layers", layer_streams}};
  json slots = json::array();
  const std::vector<std::string> slot_names = opt.slot_names();
  for (std::size_t i = 0; i < model.size(); ++i) {
    const Layer& layer = model.layer(i);
    for (const Variable* v : layer.weights()) {
      const std::vector<Tensor>* values = opt.slots_of(*v);
      if (!values) continue;
      if (values->size() != slot_names.size()) {
        throw IoError(context + "the optimizer keeps " + std::to_string(values->size()) +
                      " slots for '" + layer.name() + "/" + v->name + "'; " + opt.name() + " has " +
                      std::to_string(slot_names.size()));
      }
      for (std::size_t k = 0; k < values->size(); ++k) {
        slots.push_back({{"layer", layer.name()},
                         {"weight", v->name},
                         {"slot", slot_names[k]},
                         {"shape", (*values)[k].shape().dims()},
                         {"offset", data.size()}});
        put_floats(data, (*values)[k]);
      }
    }
  }
  t["optimizer"] = {{"iterations", opt.iterations()}, {"slots", slots}};
  return t;
}

// The training section as read, checked for form; applied once the model is built.
struct PendingTraining {
  TrainingState state;
  Random model_stream;
  std::vector<std::pair<std::string, Random>> layer_streams;
  std::int64_t iterations = 0;
  struct Slot {
    std::string layer, weight, slot;
    PendingWeight where;
  };
  std::vector<Slot> slots;
};

Random read_stream(ConfigReader& r, const std::string& key) {
  const json& v = r.raw(key);
  if (!v.is_array() || v.size() != 4) r.fail("key '" + key + "' must be a list of 4 integers");
  Random::State state{};
  for (std::size_t i = 0; i < 4; ++i) {
    if (!v[i].is_number_unsigned() && !(v[i].is_number_integer() && v[i].get<std::int64_t>() >= 0))
      r.fail("key '" + key + "' must hold integers in [0, 2^64)");
    state[i] = v[i].get<std::uint64_t>();
  }
  try {
    return Random::from_state(state);
  } catch (const ValueError& e) {
    r.fail("key '" + key + "': " + e.what());
  }
}

PendingTraining read_training(const json& t, const std::string& context) {
  PendingTraining p;
  ConfigReader r(t, "training", context);
  constexpr std::int64_t kMaxCount = std::numeric_limits<std::int64_t>::max();
  p.state.epoch = static_cast<int>(r.get_int("epoch", 0, std::numeric_limits<int>::max()));
  p.state.samples = r.get_int("samples", 0, kMaxCount);
  p.state.shuffles = r.get_int("shuffles", 0, p.state.epoch);
  {
    const json& v = r.raw("shuffle_seed");
    if (!v.is_array() || v.size() != 4) r.fail("key 'shuffle_seed' must be a list of 4 integers");
    for (std::size_t i = 0; i < 4; ++i) {
      if (!v[i].is_number_unsigned() &&
          !(v[i].is_number_integer() && v[i].get<std::int64_t>() >= 0))
        r.fail("key 'shuffle_seed' must hold integers in [0, 2^64)");
      p.state.shuffle_seed[i] = v[i].get<std::uint64_t>();
    }
  }
  const json& history = r.raw("history");
  if (!history.is_object()) r.fail("key 'history' must be an object of lists");
  for (auto it = history.begin(); it != history.end(); ++it) {
    if (!it.value().is_array() || it.value().size() > static_cast<std::size_t>(p.state.epoch))
      r.fail("history '" + it.key() + "' must be a list of at most one value per epoch");
    std::vector<double>& values = p.state.history[it.key()];
    for (const json& v : it.value()) {
      if (v.is_null()) {
        values.push_back(std::numeric_limits<double>::quiet_NaN());
      } else if (v.is_number()) {
        values.push_back(v.get<double>());
      } else {
        r.fail("history '" + it.key() + "' must hold numbers (null for NaN)");
      }
    }
  }
  ConfigReader streams(r.raw("random_streams"), "training random_streams", context);
  p.model_stream = read_stream(streams, "model");
  const json& layers = streams.raw("layers");
  if (!layers.is_array()) streams.fail("key 'layers' must be a list");
  for (std::size_t i = 0; i < layers.size(); ++i) {
    ConfigReader l(layers[i], "training random stream " + std::to_string(i), context);
    const std::string name = l.get_string("layer");
    p.layer_streams.emplace_back(name, read_stream(l, "state"));
    l.finish();
  }
  streams.finish();
  ConfigReader opt(r.raw("optimizer"), "training optimizer", context);
  p.iterations = opt.get_int("iterations", 0, kMaxCount);
  const json& slots = opt.raw("slots");
  if (!slots.is_array()) opt.fail("key 'slots' must be a list");
  for (std::size_t i = 0; i < slots.size(); ++i) {
    ConfigReader s(slots[i], "training optimizer slot " + std::to_string(i), context);
    PendingTraining::Slot slot;
    slot.layer = s.get_string("layer");
    slot.weight = s.get_string("weight");
    slot.slot = s.get_string("slot");
    slot.where.name = slot.weight + "' slot '" + slot.slot;
    slot.where.shape = s.get_dims("shape");
    slot.where.offset = s.get_u64("offset");
    s.finish();
    p.slots.push_back(std::move(slot));
  }
  opt.finish();
  r.finish();
  return p;
}

// Restores the optimizer's slots and iteration count, the random streams and the run's progress
// into the built, compiled model; every slot is checked against the variable it belongs to.
void apply_training(Model& model, const PendingTraining& p, const unsigned char* data,
                    const std::string& context) {
  if (!model.compiled()) throw IoError(context + "training state without compile settings");
  Optimizer& opt = model.optimizer();
  const std::vector<std::string> slot_names = opt.slot_names();
  std::map<std::pair<std::string, std::string>, Variable*> variables;
  for (std::size_t i = 0; i < model.size(); ++i)
    for (Variable* v : model.layer(i).weights()) variables[{model.layer(i).name(), v->name}] = v;
  try {
    for (std::size_t i = 0; i < p.slots.size();) {
      const auto& first = p.slots[i];
      const auto it = variables.find({first.layer, first.weight});
      const std::string vname = "'" + first.layer + "/" + first.weight + "'";
      if (it == variables.end()) {
        throw IoError(context + "optimizer slots for " + vname + ", which the model does not have");
      }
      if (slot_names.empty()) {
        throw IoError(context + "optimizer slots for " + vname + ", but " + opt.name() +
                      " with this configuration keeps none");
      }
      Variable& v = *it->second;
      std::vector<Tensor> values;
      for (const std::string& slot_name : slot_names) {
        if (i >= p.slots.size() || p.slots[i].layer != first.layer ||
            p.slots[i].weight != first.weight || p.slots[i].slot != slot_name) {
          throw IoError(context + opt.name() + " keeps the slots (" + joined(slot_names) +
                        ") for each variable; the slots of " + vname + " in the file differ");
        }
        const auto& s = p.slots[i];
        if (s.where.shape != v.value.shape().dims()) {
          throw IoError(context + "optimizer slot '" + s.slot + "' of " + vname + " has shape " +
                        shape_str(s.where.shape) + "; the variable has " + v.value.shape().str());
        }
        Tensor t(v.value.shape());
        get_floats(data + s.where.offset, t);
        if (!t.all_finite())
          throw IoError(context + "optimizer slot '" + s.slot + "' of " + vname +
                        " contains NaN or Inf");
        values.push_back(std::move(t));
        ++i;
      }
      if (opt.slots_of(v)) throw IoError(context + "optimizer slots for " + vname + " twice");
      opt.set_slots(v, std::move(values));
    }
    opt.set_iterations(p.iterations);
    model.set_random_streams({p.model_stream, p.layer_streams});
    model.set_training_state(p.state);
  } catch (const IoError&) {
    throw;
  } catch (const Error& e) {
    throw IoError(context + "training state: " + e.what());
  }
}

}  // namespace

Model load_native_model(const std::string& path) {
  const std::string context = "model file '" + path + "': ";
  const Container file = open_container(path, context);

  ConfigReader doc(file.doc, "description", context);
  if (doc.get_string("format") != "bnorm-model") doc.fail("key 'format' is not 'bnorm-model'");
  if (doc.get_u64("format_version") != kFormatVersion) {
    doc.fail("format_version does not match the header");
  }

  ConfigReader m(doc.raw("model"), "model", context);
  const std::string model_class = m.get_string("class_name");
  if (model_class != "Sequential" && model_class != "Functional") {
    m.fail("class_name must be Sequential or Functional; received '" + model_class + "'");
  }
  const bool functional = model_class == "Functional";
  const std::string model_name = m.get_string("name");
  const std::uint64_t seed = m.get_u64("seed");
  std::optional<Shape> input_shape;
  if (!m.raw("input_shape").is_null()) {
    try {
      input_shape = Shape(m.get_dims("input_shape"));
    } catch (const ShapeError& e) {
      m.fail(std::string("key 'input_shape': ") + e.what());
    }
  }
  const bool built = m.get_bool("built", false);
  m.finish();
  if (built && !input_shape && !functional) m.fail("a built model needs an input_shape");
  if (functional && !built) m.fail("a functional model is always built");

  const json& layers = doc.raw("layers");
  if (!layers.is_array()) doc.fail("key 'layers' must be a list");
  const json& compile = doc.raw("compile");
  Model::FlatGraph graph;
  if (functional) graph = read_graph(doc.raw("graph"), layers.size(), context);
  std::optional<PendingTraining> training;
  if (doc.has("training")) training = read_training(doc.raw("training"), context);
  doc.finish();

  // Every layer from its config (nothing is built yet), with its weights manifest.
  std::vector<std::shared_ptr<Layer>> loaded;
  std::vector<bool> trainable_flags;
  std::vector<std::vector<PendingWeight>> manifest;
  std::vector<std::int64_t> batches_tracked;
  std::set<std::string> names;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    ConfigReader l(layers[i], "layer " + std::to_string(i), context);
    const std::string cls = l.get_string("class_name");
    const std::string name = l.get_string("name");
    const std::string where = "layer " + std::to_string(i) + " '" + name + "' (" + cls + ")";
    const auto it = layer_table().find(cls);
    if (it == layer_table().end()) {
      l.fail("unknown layer class '" + cls + "' (known: " + known_classes() + ")");
    }
    if (!names.insert(name).second) l.fail("duplicate layer name '" + name + "'");
    const bool trainable = l.get_bool("trainable", true);
    ConfigReader cfg(l.raw("config"), where + " config", context);
    std::unique_ptr<Layer> layer;
    try {
      layer = it->second.load(cfg);
    } catch (const IoError&) {
      throw;
    } catch (const Error& e) {
      cfg.fail(e.what());
    }
    std::int64_t tracked = -1;
    if (l.has("state")) {
      ConfigReader state(l.raw("state"), where + " state", context);
      tracked =
          state.get_int("num_batches_tracked", 0, std::numeric_limits<std::int64_t>::max(), 0);
      state.finish();
    }
    std::vector<PendingWeight> weights;
    const json& wl = l.raw("weights");
    if (!wl.is_array()) l.fail("key 'weights' must be a list");
    for (std::size_t j = 0; j < wl.size(); ++j) {
      ConfigReader w(wl[j], where + " weight " + std::to_string(j), context);
      PendingWeight pw;
      pw.name = w.get_string("name");
      pw.shape = w.get_dims("shape");
      if (w.has("dtype") && w.get_string("dtype") != "float32") w.fail("dtype must be float32");
      pw.offset = w.get_u64("offset");
      w.get_bool("trainable", true);  // informational; the layer decides
      w.finish();
      weights.push_back(std::move(pw));
    }
    l.finish();
    if (!built && !weights.empty()) {
      throw IoError(context + "layer '" + name + "' lists weights but the model is not built");
    }
    layer->set_name(name);
    layer->set_trainable(trainable);
    loaded.emplace_back(std::move(layer));
    trainable_flags.push_back(trainable);
    manifest.push_back(std::move(weights));
    batches_tracked.push_back(tracked);
  }

  // The architecture against the manifest, from the shapes each layer will be built for.
  try {
    if (functional) {
      std::vector<Shape> slot_shapes = graph.input_shapes;
      std::vector<bool> seen(loaded.size(), false);
      for (const auto& call : graph.calls) {
        std::vector<Shape> in;
        for (const int s : call.inputs) in.push_back(slot_shapes[static_cast<std::size_t>(s)]);
        const Layer& layer = *loaded[call.layer];
        if (!seen[call.layer]) {
          seen[call.layer] = true;
          check_layer_against_file(layer, in[0], manifest[call.layer], context);
        }
        slot_shapes.push_back(layer.output_shape_for(in));
      }
    } else if (built) {
      Shape in = *input_shape;
      for (std::size_t i = 0; i < loaded.size(); ++i) {
        check_layer_against_file(*loaded[i], in, manifest[i], context);
        in = loaded[i]->output_shape(in);
      }
    }
  } catch (const IoError&) {
    throw;
  } catch (const Error& e) {
    throw IoError(context + "the architecture cannot be rebuilt: " + e.what());
  }

  // The manifest against the file's bytes: consecutive offsets, the model's weights and then
  // the optimizer's slots filling the weights section exactly.
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < loaded.size(); ++i)
    check_offsets(manifest[i], "weight '" + loaded[i]->name(), offset, file.data_bytes, context);
  if (training) {
    for (const auto& slot : training->slots)
      check_offsets({slot.where}, "optimizer slot for '" + slot.layer, offset, file.data_bytes,
                    context);
  }
  if (offset != file.data_bytes) {
    throw IoError(context + "the weights section holds " + std::to_string(file.data_bytes) +
                  " bytes; the manifest describes " + std::to_string(offset));
  }

  Model model = Sequential(seed, model_name);
  try {
    if (functional) {
      model = Model::from_flat_graph(graph, loaded, model_name, seed);
      for (std::size_t i = 0; i < loaded.size(); ++i)
        if (model.layer(i).name() != loaded[i]->name())
          throw IoError(context + "layer name '" + loaded[i]->name() + "' is not unique");
    } else {
      auto& chain = static_cast<Sequential&>(model);
      if (input_shape) chain.add(Input{*input_shape});
      chain.add(loaded);  // one graph build for the whole chain
      for (std::size_t i = 0; i < loaded.size(); ++i) {
        model.layer(i).set_name(loaded[i]->name());
        model.layer(i).set_trainable(trainable_flags[i]);
      }
      if (built) chain.build(*input_shape);
    }
  } catch (const IoError&) {
    throw;
  } catch (const Error& e) {
    throw IoError(context + "the architecture cannot be rebuilt: " + e.what());
  }

  // Weights: names, shapes and order must be exactly what the re-created architecture has.
  std::vector<Tensor> values;
  for (std::size_t i = 0; i < model.size(); ++i) {
    Layer& layer = model.layer(i);
    const auto vars = layer.weights();
    const auto& listed = manifest[i];
    const std::string lname = "layer '" + layer.name() + "'";
    if (built && vars.size() != listed.size()) {
      std::string need;
      for (const Variable* v : vars) need += (need.empty() ? "" : ", ") + v->name;
      throw IoError(context + lname + " has " + std::to_string(listed.size()) +
                    " weights in the file; the architecture needs " + std::to_string(vars.size()) +
                    " (" + (need.empty() ? "none" : need) + ")");
    }
    for (std::size_t j = 0; j < listed.size(); ++j) {
      const PendingWeight& pw = listed[j];
      const Variable& v = *vars[j];
      const std::string wname = "weight '" + layer.name() + "/" + pw.name + "'";
      if (pw.name != v.name) {
        throw IoError(context + wname + " is in the place of '" + layer.name() + "/" + v.name +
                      "' that the architecture needs");
      }
      if (pw.shape != v.value.shape().dims()) {
        throw IoError(context + wname + " has shape " + shape_str(pw.shape) +
                      " in the file; the architecture needs " + v.value.shape().str());
      }
      Tensor t(v.value.shape());
      get_floats(file.data + pw.offset, t);
      // A file may carry a valid checksum and still hold NaN/Inf (or a negative variance):
      // such weights would poison every output, so they are refused at the door.
      if (!t.all_finite()) throw IoError(context + wname + " contains NaN or Inf");
      if (pw.name == "moving_variance" || pw.name == "variance") {
        for (float value : t.values())
          if (value < 0.0f)
            throw IoError(context + wname + " has a negative value " + std::to_string(value));
      }
      values.push_back(std::move(t));
    }
  }
  try {
    if (built) model.set_weights(values);
    for (std::size_t i = 0; i < model.size(); ++i) {
      if (batches_tracked[i] < 0) continue;
      auto* bn = dynamic_cast<BatchNormalization*>(&model.layer(i));
      if (!bn) {
        throw IoError(context + "layer '" + model.layer(i).name() +
                      "' has BatchNormalization state but is a " + model.layer(i).class_name());
      }
      bn->set_num_batches_tracked(batches_tracked[i]);
    }
  } catch (const IoError&) {
    throw;
  } catch (const Error& e) {
    throw IoError(context + e.what());
  }
  load_compile(model, compile, context);
  if (training) apply_training(model, *training, file.data, context);
  return model;
}

}  // namespace bnorm::io
