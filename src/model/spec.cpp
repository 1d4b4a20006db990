#include "bnorm/model/spec.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/dropout.hpp"
#include "bnorm/layers/flatten.hpp"

namespace bnorm {

namespace {
constexpr const char* kKnown =
    "known layers: dense<units>[-<activation>], bn, dropout<rate>, flatten, relu, sigmoid, tanh, "
    "softmax, linear";

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

bool parse_bool(const std::string& spec, const std::string& token, const std::string& text) {
  if (text == "1" || text == "true") return true;
  if (text == "0" || text == "false") return false;
  fail(spec, token, std::string("'").append(text).append("' is not 0/1/true/false"));
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
    if (auto v = take("axis")) o.axis = static_cast<int>(parse_number(spec, text, *v));
    if (auto v = take("momentum")) o.momentum = parse_number(spec, text, *v);
    if (auto v = take("epsilon")) o.epsilon = static_cast<float>(parse_number(spec, text, *v));
    if (auto v = take("center")) o.center = parse_bool(spec, text, *v);
    if (auto v = take("scale")) o.scale = parse_bool(spec, text, *v);
    return finish(std::make_unique<BatchNormalization>(o));
  }
  if (h.rfind("dropout", 0) == 0) {
    const double rate = parse_number(spec, text, h.substr(7));
    return finish(std::make_unique<Dropout>(static_cast<float>(rate)));
  }
  if (h == "flatten") return finish(std::make_unique<Flatten>());
  if (h == "relu" || h == "sigmoid" || h == "tanh" || h == "softmax" || h == "linear") {
    return finish(std::make_unique<Activation>(h));
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
  for (auto& l : layers) model.add(std::move(l));
}

}  // namespace bnorm
