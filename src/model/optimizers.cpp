#include "bnorm/model/optimizers.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

#include "bnorm/core/error.hpp"
#include "kernels/optimizer.hpp"

namespace bnorm {

Optimizer::Optimizer(float learning_rate) : learning_rate_(learning_rate) {
  if (!(learning_rate > 0.0f) || !std::isfinite(learning_rate)) {
    throw ValueError("optimizer: learning_rate must be a finite number > 0; received " +
                     std::to_string(learning_rate));
  }
}

void Optimizer::set_learning_rate(double learning_rate) {
  if (!(learning_rate >= 0.0) || !std::isfinite(learning_rate) ||
      learning_rate > std::numeric_limits<float>::max()) {
    throw ValueError("optimizer: learning_rate must be a finite number >= 0; received " +
                     std::to_string(learning_rate));
  }
  learning_rate_ = static_cast<float>(learning_rate);
}

void Optimizer::apply(std::span<Variable* const> variables) {
  const std::int64_t step = iterations_ + 1;
  for (Variable* v : variables) update(*v, step);
  iterations_ = step;
}

std::vector<Tensor>& Optimizer::slots(const Variable& v, int count) {
  auto& s = slots_[&v];
  if (static_cast<int>(s.size()) != count) {
    s.clear();
    for (int i = 0; i < count; ++i) s.emplace_back(v.value.shape());
  }
  return s;
}

const std::vector<Tensor>* Optimizer::slots_of(const Variable& v) const {
  const auto it = slots_.find(&v);
  return it == slots_.end() ? nullptr : &it->second;
}

void Optimizer::set_slots(const Variable& v, std::vector<Tensor> values) {
  const std::vector<std::string> names = slot_names();
  if (values.size() != names.size()) {
    throw ValueError(name() + ": variable '" + v.name + "' needs " + std::to_string(names.size()) +
                     " slots; received " + std::to_string(values.size()));
  }
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (values[i].shape() != v.value.shape()) {
      throw ValueError(name() + ": slot '" + names[i] + "' of variable '" + v.name +
                       "' has shape " + values[i].shape().str() + "; the variable has " +
                       v.value.shape().str());
    }
    if (!values[i].all_finite()) {
      throw ValueError(name() + ": slot '" + names[i] + "' of variable '" + v.name +
                       "' contains NaN or Inf");
    }
  }
  slots_[&v] = std::move(values);
}

void Optimizer::set_iterations(std::int64_t iterations) {
  if (iterations < 0) {
    throw ValueError(name() + ": iterations must be >= 0; received " + std::to_string(iterations));
  }
  iterations_ = iterations;
}

// ---- SGD ----
SGD::SGD(Options options) : Optimizer(options.learning_rate), options_(options) {
  if (!(options.momentum >= 0.0f && options.momentum <= 1.0f)) {
    throw ValueError("SGD: momentum must be in [0, 1]; received " +
                     std::to_string(options.momentum));
  }
}

std::map<std::string, double> SGD::config() const {
  return {{"learning_rate", learning_rate_},
          {"momentum", options_.momentum},
          {"nesterov", options_.nesterov ? 1.0 : 0.0}};
}

std::vector<std::string> SGD::slot_names() const {
  if (options_.momentum == 0.0f) return {};
  return {"momentum"};
}

void SGD::update(Variable& v, std::int64_t) {
  const float mu = options_.momentum;
  float* m = mu == 0.0f ? nullptr : slots(v, 1)[0].data();
  kernels::sgd_update(v.value.size(), v.gradient.data(), learning_rate_, mu, options_.nesterov,
                      v.value.data(), m);
}

// ---- Adam ----
Adam::Adam(Options options) : Optimizer(options.learning_rate), options_(options) {
  if (!(options.beta_1 >= 0.0f && options.beta_1 < 1.0f) ||
      !(options.beta_2 >= 0.0f && options.beta_2 < 1.0f) || !(options.epsilon >= 0.0f)) {
    throw ValueError("Adam: need 0 <= beta_1, beta_2 < 1 and epsilon >= 0");
  }
}

std::map<std::string, double> Adam::config() const {
  return {{"learning_rate", learning_rate_},
          {"beta_1", options_.beta_1},
          {"beta_2", options_.beta_2},
          {"epsilon", options_.epsilon}};
}

std::vector<std::string> Adam::slot_names() const { return {"momentum", "velocity"}; }

void Adam::update(Variable& v, std::int64_t step) {
  const double t = static_cast<double>(step);
  const float alpha =
      static_cast<float>(learning_rate_ * std::sqrt(1.0 - std::pow(options_.beta_2, t)) /
                         (1.0 - std::pow(options_.beta_1, t)));
  auto& s = slots(v, 2);
  kernels::adam_update(v.value.size(), v.gradient.data(), alpha, options_.beta_1, options_.beta_2,
                       options_.epsilon, v.value.data(), s[0].data(), s[1].data());
}

// ---- RMSprop ----
RMSprop::RMSprop(Options options) : Optimizer(options.learning_rate), options_(options) {
  if (!(options.rho >= 0.0f && options.rho < 1.0f) ||
      !(options.momentum >= 0.0f && options.momentum <= 1.0f) || !(options.epsilon >= 0.0f)) {
    throw ValueError("RMSprop: need 0 <= rho < 1, 0 <= momentum <= 1 and epsilon >= 0");
  }
}

std::map<std::string, double> RMSprop::config() const {
  return {{"learning_rate", learning_rate_},
          {"rho", options_.rho},
          {"momentum", options_.momentum},
          {"epsilon", options_.epsilon},
          {"centered", options_.centered ? 1.0 : 0.0}};
}

std::vector<std::string> RMSprop::slot_names() const {
  std::vector<std::string> names = {"velocity"};
  if (options_.centered) names.push_back("average_gradient");
  if (options_.momentum > 0.0f) names.push_back("momentum");
  return names;
}

void RMSprop::update(Variable& v, std::int64_t) {
  const float mu = options_.momentum;
  const int nslots = 1 + (options_.centered ? 1 : 0) + (mu > 0.0f ? 1 : 0);
  auto& s = slots(v, nslots);
  kernels::rmsprop_update(v.value.size(), v.gradient.data(), learning_rate_, options_.rho, mu,
                          options_.epsilon, v.value.data(), s[0].data(),
                          options_.centered ? s[1].data() : nullptr,
                          mu > 0.0f ? s[static_cast<std::size_t>(nslots - 1)].data() : nullptr);
}

namespace {
std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}
double get(const std::map<std::string, double>& c, const char* key, double fallback) {
  auto it = c.find(key);
  return it == c.end() ? fallback : it->second;
}
}  // namespace

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, double learning_rate) {
  std::map<std::string, double> config;
  if (learning_rate >= 0.0 || std::isnan(learning_rate)) config["learning_rate"] = learning_rate;
  return make_optimizer(name, config);
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name,
                                          const std::map<std::string, double>& c) {
  const std::string n = lower(name);
  if (n == "sgd") {
    SGD::Options o;
    o.learning_rate = static_cast<float>(get(c, "learning_rate", o.learning_rate));
    o.momentum = static_cast<float>(get(c, "momentum", o.momentum));
    o.nesterov = get(c, "nesterov", 0.0) != 0.0;
    return std::make_unique<SGD>(o);
  }
  if (n == "adam") {
    Adam::Options o;
    o.learning_rate = static_cast<float>(get(c, "learning_rate", o.learning_rate));
    o.beta_1 = static_cast<float>(get(c, "beta_1", o.beta_1));
    o.beta_2 = static_cast<float>(get(c, "beta_2", o.beta_2));
    o.epsilon = static_cast<float>(get(c, "epsilon", o.epsilon));
    return std::make_unique<Adam>(o);
  }
  if (n == "rmsprop") {
    RMSprop::Options o;
    o.learning_rate = static_cast<float>(get(c, "learning_rate", o.learning_rate));
    o.rho = static_cast<float>(get(c, "rho", o.rho));
    o.momentum = static_cast<float>(get(c, "momentum", o.momentum));
    o.epsilon = static_cast<float>(get(c, "epsilon", o.epsilon));
    o.centered = get(c, "centered", 0.0) != 0.0;
    return std::make_unique<RMSprop>(o);
  }
  throw ValueError("unknown optimizer '" + name + "'; expected one of: sgd, adam, rmsprop");
}

}  // namespace bnorm
