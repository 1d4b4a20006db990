#include "bnorm/model/spec.hpp"

#include <array>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <optional>
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
#include "bnorm/layers/normalization.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/layers/reshape.hpp"
#include "bnorm/layers/separable_conv2d.hpp"
#include "bnorm/layers/zero_padding2d.hpp"

namespace bnorm {

namespace {
constexpr const char* kKnown =
    "known layers: dense<units>[-<activation>], conv<filters>-<k>[x<k>][-same|-valid]"
    "[-<activation>], dwconv<k>[x<k>][-same|-valid][-<activation>], "
    "sepconv<filters>-<k>[x<k>][-same|-valid][-<activation>], maxpool<k>, avgpool<k>, gap, gmp, "
    "zeropad<p>[x<p>] (or zeropad<top>-<bottom>x<left>-<right>), bn, dropout<rate>, flatten, "
    "reshape<d>[x<d>...], rescaling:scale=S, normalization:mean=M:variance=V, identity, "
    "relu[:max_value=..:negative_slope=..:threshold=..], sigmoid, tanh, softmax, linear, silu, "
    "swish, gelu, hard_sigmoid, hard_silu, hard_swish, elu, leaky_relu, relu6";

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      parts.push_back(cur);
      cur.clear();
    } else if (c != ' ' && c != '\t') {
      cur += c;
    }
  }
  parts.push_back(cur);
  return parts;
}

[[noreturn]] void fail(const std::string& spec, const std::string& token, const std::string& why) {
  throw ValueError("model spec '" + spec + "': " + why + " in '" + token + "'");
}

double parse_number(const std::string& spec, const std::string& token, const std::string& text) {
  if (text.empty()) fail(spec, token, "missing number");
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text.c_str(), &end);
  if (*end != '\0' || errno == ERANGE || std::isnan(v))
    fail(spec, token, std::string("'").append(text).append("' is not a number"));
  return v;
}

// A float32 argument: finite and within float's range (converting a larger double to float is
// undefined behaviour).
float parse_float(const std::string& spec, const std::string& token, const std::string& text) {
  const double v = parse_number(spec, token, text);
  if (!std::isfinite(v) || std::fabs(v) > static_cast<double>(std::numeric_limits<float>::max()))
    fail(spec, token, std::string("'").append(text).append("' is outside float32's range"));
  return static_cast<float>(v);
}

// An axis: an integer in [-Shape::kMaxRank, Shape::kMaxRank) (1.5 or 1e10 are not axes).
int parse_axis(const std::string& spec, const std::string& token, const std::string& text) {
  const double v = parse_number(spec, token, text);
  if (v != std::floor(v) || v < -Shape::kMaxRank || v >= Shape::kMaxRank)
    fail(spec, token,
         std::string("axis '")
             .append(text)
             .append("' must be an integer from ")
             .append(std::to_string(-Shape::kMaxRank))
             .append(" to ")
             .append(std::to_string(Shape::kMaxRank - 1)));
  return static_cast<int>(v);
}

bool parse_bool(const std::string& spec, const std::string& token, const std::string& text) {
  if (text == "1" || text == "true") return true;
  if (text == "0" || text == "false") return false;
  fail(spec, token, std::string("'").append(text).append("' is not 0/1/true/false"));
}

std::int64_t parse_count(const std::string& spec, const std::string& token, const std::string& text,
                         const char* what) {
  const double v = parse_number(spec, token, text);
  if (v < 1 || v != std::floor(v) || v > 1e9)
    fail(spec, token, std::string(what) + " must be a positive integer");
  return static_cast<std::int64_t>(v);
}

// "3" -> 3x3, "3x5" -> 3x5 (height x width).
std::array<std::int64_t, 2> parse_pair(const std::string& spec, const std::string& token,
                                       const std::string& text, const char* what) {
  const auto x = text.find('x');
  if (x == std::string::npos) {
    const auto v = parse_count(spec, token, text, what);
    return {v, v};
  }
  return {parse_count(spec, token, text.substr(0, x), what),
          parse_count(spec, token, text.substr(x + 1), what)};
}

// "[-same|-valid][-<activation>]" after a convolution's sizes: parts[first...].
template <class Options>
void parse_conv_suffix(const std::string& spec, const std::string& token,
                       const std::vector<std::string>& parts, std::size_t first, Options& o) {
  for (std::size_t i = first; i < parts.size(); ++i) {
    if (parts[i] == "same" || parts[i] == "valid") {
      o.padding = parts[i];
    } else if (i + 1 == parts.size()) {
      o.activation = parts[i];
    } else {
      fail(spec, token, "'" + parts[i] + "' is not a padding (same, valid)");
    }
  }
}

// The key=value options of the convolutions (Conv2D, DepthwiseConv2D, SeparableConv2D), read in
// one order so that the first bad one is the one reported; depth_multiplier where the layer has
// one.
template <class Take, class Options>
void take_conv_options(const std::string& spec, const std::string& token, Take& take, Options& o) {
  if (auto v = take("strides")) o.strides = parse_pair(spec, token, *v, "strides");
  if (auto v = take("padding")) o.padding = *v;
  if constexpr (requires { o.depth_multiplier; }) {
    if (auto v = take("depth_multiplier"))
      o.depth_multiplier = parse_count(spec, token, *v, "depth_multiplier");
  }
  if (auto v = take("dilation_rate"))
    o.dilation_rate = parse_pair(spec, token, *v, "dilation_rate");
  if (auto v = take("data_format")) o.data_format = *v;
  if (auto v = take("use_bias")) o.use_bias = parse_bool(spec, token, *v);
  if (auto v = take("activation")) o.activation = *v;
}

// GlobalAveragePooling2D or GlobalMaxPooling2D with its options (data_format, keepdims).
template <class Pool, class Take>
std::unique_ptr<Pool> global_pooling(const std::string& spec, const std::string& token,
                                     Take& take) {
  typename Pool::Options o;
  if (auto v = take("data_format")) o.data_format = *v;
  if (auto v = take("keepdims")) o.keepdims = parse_bool(spec, token, *v);
  return std::make_unique<Pool>(o);
}

// One axis of zeropad: "2" -> (2, 2), "0-1" -> (0, 1) (before, after).
std::array<std::int64_t, 2> parse_pad_axis(const std::string& spec, const std::string& token,
                                           const std::string& text) {
  auto count = [&](const std::string& t) {
    const double v = parse_number(spec, token, t);
    if (v < 0 || v != std::floor(v) || v > 1e9)
      fail(spec, token, "padding must be a non-negative integer");
    return static_cast<std::int64_t>(v);
  };
  const auto dash = text.find('-');
  if (dash == std::string::npos) {
    const auto v = count(text);
    return {v, v};
  }
  return {count(text.substr(0, dash)), count(text.substr(dash + 1))};
}

struct Token {
  std::string head;                            // "dense64-relu"
  std::map<std::string, std::string> options;  // key=value after ':'
};

std::unique_ptr<Layer> make_layer(const std::string& spec, const std::string& text) {
  auto pieces = split(text, ':');
  Token t{pieces[0], {}};
  for (std::size_t i = 1; i < pieces.size(); ++i) {
    const auto eq = pieces[i].find('=');
    if (eq == std::string::npos || eq == 0)
      fail(spec, text, "option '" + pieces[i] + "' is not key=value");
    t.options[pieces[i].substr(0, eq)] = pieces[i].substr(eq + 1);
  }
  auto take = [&](const char* key) -> std::optional<std::string> {
    auto it = t.options.find(key);
    if (it == t.options.end()) return std::nullopt;
    std::string v = it->second;
    t.options.erase(it);
    return v;
  };
  auto finish = [&](std::unique_ptr<Layer> layer) {
    if (!t.options.empty()) fail(spec, text, "unknown option '" + t.options.begin()->first + "'");
    return layer;
  };
  const std::string& h = t.head;
  if (h.rfind("dense", 0) == 0) {
    const std::string rest = h.substr(5);
    const auto dash = rest.find('-');
    const std::string units_text = rest.substr(0, dash);
    const double units = parse_number(spec, text, units_text);
    if (units < 1 || units != std::floor(units) || units > 1e9)
      fail(spec, text, "units must be a positive integer");
    Dense::Options o;
    o.units = static_cast<std::int64_t>(units);
    o.activation = dash == std::string::npos ? "linear" : rest.substr(dash + 1);
    if (auto v = take("use_bias")) o.use_bias = parse_bool(spec, text, *v);
    if (auto v = take("activation")) o.activation = *v;
    return finish(std::make_unique<Dense>(o));
  }
  if (h == "bn" || h == "batchnorm" || h == "batch_normalization") {
    BatchNormalization::Options o;
    if (auto v = take("axis")) o.axis = parse_axis(spec, text, *v);
    if (auto v = take("momentum")) o.momentum = parse_number(spec, text, *v);
    if (auto v = take("epsilon")) o.epsilon = parse_float(spec, text, *v);
    if (auto v = take("center")) o.center = parse_bool(spec, text, *v);
    if (auto v = take("scale")) o.scale = parse_bool(spec, text, *v);
    return finish(std::make_unique<BatchNormalization>(o));
  }
  if (h.rfind("conv", 0) == 0) {
    // conv<filters>-<k>[x<k>][-same|-valid][-<activation>]
    const auto parts = split(h.substr(4), '-');
    if (parts.size() < 2) fail(spec, text, "expected conv<filters>-<kernel size>");
    Conv2D::Options o;
    o.filters = parse_count(spec, text, parts[0], "filters");
    o.kernel_size = parse_pair(spec, text, parts[1], "kernel_size");
    parse_conv_suffix(spec, text, parts, 2, o);
    take_conv_options(spec, text, take, o);
    return finish(std::make_unique<Conv2D>(o));
  }
  if (h.rfind("dwconv", 0) == 0) {
    // dwconv<k>[x<k>][-same|-valid][-<activation>]
    const auto parts = split(h.substr(6), '-');
    DepthwiseConv2D::Options o;
    o.kernel_size = parse_pair(spec, text, parts[0], "kernel_size");
    parse_conv_suffix(spec, text, parts, 1, o);
    take_conv_options(spec, text, take, o);
    return finish(std::make_unique<DepthwiseConv2D>(o));
  }
  if (h.rfind("sepconv", 0) == 0) {
    // sepconv<filters>-<k>[x<k>][-same|-valid][-<activation>]
    const auto parts = split(h.substr(7), '-');
    if (parts.size() < 2) fail(spec, text, "expected sepconv<filters>-<kernel size>");
    SeparableConv2D::Options o;
    o.filters = parse_count(spec, text, parts[0], "filters");
    o.kernel_size = parse_pair(spec, text, parts[1], "kernel_size");
    parse_conv_suffix(spec, text, parts, 2, o);
    take_conv_options(spec, text, take, o);
    return finish(std::make_unique<SeparableConv2D>(o));
  }
  if (h.rfind("zeropad", 0) == 0) {
    // zeropad<p> | zeropad<h>x<w> | zeropad<top>-<bottom>x<left>-<right>
    const std::string rest = h.substr(7);
    const auto x = rest.find('x');
    ZeroPadding2D::Options o;
    if (x == std::string::npos) {
      o.padding[0] = o.padding[1] = parse_pad_axis(spec, text, rest);
    } else {
      o.padding[0] = parse_pad_axis(spec, text, rest.substr(0, x));
      o.padding[1] = parse_pad_axis(spec, text, rest.substr(x + 1));
    }
    if (auto v = take("data_format")) o.data_format = *v;
    return finish(std::make_unique<ZeroPadding2D>(o));
  }
  if (h.rfind("maxpool", 0) == 0 || h.rfind("avgpool", 0) == 0) {
    // maxpool<k>[x<k>][-same|-valid], avgpool likewise
    const bool max = h[0] == 'm';
    const auto parts = split(h.substr(7), '-');
    Pooling2D::Options o;
    o.pool_size = parse_pair(spec, text, parts[0], "pool_size");
    if (parts.size() > 2 || (parts.size() == 2 && parts[1] != "same" && parts[1] != "valid"))
      fail(spec, text, "expected " + h.substr(0, 7) + "<k>[x<k>][-same|-valid]");
    if (parts.size() == 2) o.padding = parts[1];
    if (auto v = take("strides")) o.strides = parse_pair(spec, text, *v, "strides");
    if (auto v = take("padding")) o.padding = *v;
    if (auto v = take("data_format")) o.data_format = *v;
    if (max) return finish(std::make_unique<MaxPooling2D>(o));
    return finish(std::make_unique<AveragePooling2D>(o));
  }
  if (h == "gap" || h == "global_average_pooling2d")
    return finish(global_pooling<GlobalAveragePooling2D>(spec, text, take));
  if (h == "gmp" || h == "global_max_pooling2d")
    return finish(global_pooling<GlobalMaxPooling2D>(spec, text, take));
  if (h.rfind("dropout", 0) == 0) {
    Dropout::Options o;
    o.rate = parse_float(spec, text, h.substr(7));
    if (auto v = take("seed")) {
      const double seed = parse_number(spec, text, *v);
      if (seed < 0 || seed != std::floor(seed) || seed > 9.0e15)
        fail(spec, text, "seed must be a non-negative integer");
      o.seed = static_cast<std::uint64_t>(seed);
    }
    return finish(std::make_unique<Dropout>(o));
  }
  if (h.rfind("reshape", 0) == 0) {
    // reshape<d>[x<d>...], one d may be -1: reshape7x7x16, reshape-1x4
    std::vector<std::int64_t> dims;
    for (const auto& d : split(h.substr(7), 'x')) {
      const double v = parse_number(spec, text, d);
      if (v != std::floor(v) || v < -1 || v > 1e9)
        fail(spec, text, "target_shape dimensions must be integers >= 0 or -1");
      dims.push_back(static_cast<std::int64_t>(v));
    }
    return finish(std::make_unique<Reshape>(dims));
  }
  if (h == "rescaling") {
    Rescaling::Options o;
    auto scale = take("scale");
    if (!scale) fail(spec, text, "rescaling needs scale=S");
    o.scale = {parse_float(spec, text, *scale)};
    if (auto v = take("offset")) o.offset = {parse_float(spec, text, *v)};
    return finish(std::make_unique<Rescaling>(o));
  }
  if (h == "normalization") {
    Normalization::Options o;
    auto mean = take("mean");
    auto variance = take("variance");
    if (mean) o.mean = {parse_float(spec, text, *mean)};
    if (variance) o.variance = {parse_float(spec, text, *variance)};
    if (auto v = take("invert")) o.invert = parse_bool(spec, text, *v);
    return finish(std::make_unique<Normalization>(o));
  }
  if (h == "identity") return finish(std::make_unique<Identity>());
  if (h == "relu" && !t.options.empty()) {
    // Options make it the ReLU layer; a bare relu stays Activation('relu') (fused after bn).
    ReLU::Options o;
    if (auto v = take("max_value")) o.max_value = parse_float(spec, text, *v);
    if (auto v = take("negative_slope")) o.negative_slope = parse_float(spec, text, *v);
    if (auto v = take("threshold")) o.threshold = parse_float(spec, text, *v);
    return finish(std::make_unique<ReLU>(o));
  }
  if (h == "flatten") {
    Flatten::Options o;
    if (auto v = take("data_format")) o.data_format = *v;
    return finish(std::make_unique<Flatten>(o));
  }
  for (const char* name :
       {"relu", "sigmoid", "tanh", "softmax", "linear", "silu", "swish", "gelu", "hard_sigmoid",
        "hard_silu", "hard_swish", "elu", "leaky_relu", "relu6"}) {
    if (h == name) return finish(std::make_unique<Activation>(h));
  }
  throw ValueError("model spec '" + spec + "': unknown layer '" + text + "'; " + kKnown);
}
}  // namespace

void add_layers_from_spec(Sequential& model, const std::string& spec) {
  std::vector<std::unique_ptr<Layer>> layers;
  for (const auto& token : split(spec, ',')) {
    if (token.empty()) throw ValueError("model spec '" + spec + "': empty layer entry; " + kKnown);
    try {
      layers.push_back(make_layer(spec, token));
    } catch (const ValueError& e) {
      const std::string msg = e.what();
      // Layer constructors name the argument; prefix the spec so the user sees where.
      if (msg.rfind("model spec", 0) == 0) throw;
      throw ValueError("model spec '" + spec + "', layer '" + token + "': " + msg);
    }
  }
  std::vector<std::shared_ptr<Layer>> shared;
  shared.reserve(layers.size());
  for (auto& l : layers) shared.push_back(std::move(l));
  model.add(std::move(shared));
}

}  // namespace bnorm
