// bnorm/model/optimizers.hpp — Keras 3 optimizers with Keras defaults and update formulas.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "bnorm/layers/layer.hpp"

namespace bnorm {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string name() const = 0;  // "SGD", "Adam", "RMSprop"
  // Applies one update to every variable from its gradient, then counts an iteration.
  void apply(std::span<Variable* const> variables);
  float learning_rate() const noexcept { return learning_rate_; }
  // Sets the rate the next updates use (what Keras's optimizer.learning_rate.assign does; a
  // LearningRateScheduler calls it each epoch). ValueError unless finite and >= 0.
  void set_learning_rate(double learning_rate);
  std::int64_t iterations() const noexcept { return iterations_; }
  // Hyper-parameters by Keras name, for saving and printing ({"learning_rate": 0.001, ...}).
  virtual std::map<std::string, double> config() const = 0;

  // The state an exact resume restores (Keras's optimizer.variables): the iteration count and
  // each variable's slots. slot_names: the slots kept per variable, in order, for this
  // configuration: SGD {"momentum"} ({} without momentum), Adam {"momentum", "velocity"},
  // RMSprop {"velocity"} + "average_gradient" when centered + "momentum" with momentum.
  virtual std::vector<std::string> slot_names() const = 0;
  // The slots of `v` (slot_names() order), or nullptr while no update has touched `v`.
  const std::vector<Tensor>* slots_of(const Variable& v) const;
  // Replaces the slots of `v`. ValueError unless there is one tensor per slot name, each of v's
  // shape and finite.
  void set_slots(const Variable& v, std::vector<Tensor> values);
  // The next update counts as step iterations + 1 (Adam's bias correction). ValueError if < 0.
  void set_iterations(std::int64_t iterations);

 protected:
  explicit Optimizer(float learning_rate);
  // Slot tensors per variable (momentum, velocity, ...), created zeroed on first use.
  std::vector<Tensor>& slots(const Variable& v, int count);
  virtual void update(Variable& v, std::int64_t step) = 0;  // step counts from 1
  float learning_rate_;

 private:
  std::int64_t iterations_ = 0;
  std::unordered_map<const Variable*, std::vector<Tensor>> slots_;
};

// w -= lr * g; with momentum: m = momentum * m - lr * g; w += m (nesterov: w += momentum * m - lr *
// g). ValueError for momentum outside [0, 1], as Keras.
class SGD final : public Optimizer {
 public:
  struct Options {
    float learning_rate = 0.01f;
    float momentum = 0.0f;
    bool nesterov = false;
  };
  SGD() : SGD(Options{}) {}
  explicit SGD(Options options);
  std::string name() const override { return "SGD"; }
  std::map<std::string, double> config() const override;
  std::vector<std::string> slot_names() const override;

 protected:
  void update(Variable& v, std::int64_t step) override;

 private:
  Options options_;
};

// lr_t = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t); m += (g - m)(1 - beta_1);
// v += (g^2 - v)(1 - beta_2); w -= lr_t * m / (sqrt(v) + epsilon).
class Adam final : public Optimizer {
 public:
  struct Options {
    float learning_rate = 0.001f;
    float beta_1 = 0.9f;
    float beta_2 = 0.999f;
    float epsilon = 1e-7f;
  };
  Adam() : Adam(Options{}) {}
  explicit Adam(Options options);
  std::string name() const override { return "Adam"; }
  std::map<std::string, double> config() const override;
  std::vector<std::string> slot_names() const override;

 protected:
  void update(Variable& v, std::int64_t step) override;

 private:
  Options options_;
};

// v = rho * v + (1 - rho) g^2; (centered: a = rho * a + (1 - rho) g, denominator v - a^2)
// inc = lr * g / sqrt(denominator + epsilon); with momentum: m = momentum * m + inc; w -= m.
class RMSprop final : public Optimizer {
 public:
  struct Options {
    float learning_rate = 0.001f;
    float rho = 0.9f;
    float momentum = 0.0f;
    float epsilon = 1e-7f;
    bool centered = false;
  };
  RMSprop() : RMSprop(Options{}) {}
  explicit RMSprop(Options options);
  std::string name() const override { return "RMSprop"; }
  std::map<std::string, double> config() const override;
  std::vector<std::string> slot_names() const override;

 protected:
  void update(Variable& v, std::int64_t step) override;

 private:
  Options options_;
};

// "sgd" / "adam" / "rmsprop" (any case) with Keras defaults; learning_rate < 0 keeps the default.
// ValueError for an unknown name or a learning rate that is not finite and > 0.
std::unique_ptr<Optimizer> make_optimizer(const std::string& name, double learning_rate = -1.0);
// Rebuilds an optimizer from name() and config().
std::unique_ptr<Optimizer> make_optimizer(const std::string& name,
                                          const std::map<std::string, double>& config);

}  // namespace bnorm
