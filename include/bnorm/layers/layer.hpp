// bnorm/layers/layer.hpp — the layer contract: build / forward(mode) / backward.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "bnorm/core/random.hpp"
#include "bnorm/core/tensor.hpp"
#include "bnorm/layers/node.hpp"

namespace bnorm {

// Explicit mode, as Keras's `training` argument: training uses batch statistics (BN) and drops
// units (Dropout); inference uses moving statistics and is deterministic.
enum class Mode { training, inference };

// The bytes a Variable's tensors hold, counted against bnorm's weight memory limit (see
// weight_memory_limit): a copy counts again (its tensors are copies), a move hands the count over,
// destruction gives it back.
class WeightMemory {
 public:
  WeightMemory() noexcept = default;
  explicit WeightMemory(std::int64_t bytes) noexcept;  // already reserved (Layer::add_weight)
  WeightMemory(const WeightMemory& other) noexcept;
  WeightMemory(WeightMemory&& other) noexcept;
  WeightMemory& operator=(WeightMemory other) noexcept;
  ~WeightMemory();
  std::int64_t bytes() const noexcept { return bytes_; }

 private:
  std::int64_t bytes_ = 0;
};

// Weight memory: the values and gradients of every weight alive in this process must fit in half
// of the machine's physical memory (the other half is left for optimizer state and activations).
// Layer::add_weight checks before allocating: a ValueError naming the layer, the weight, its
// shape and size, what other weights hold and the limit, instead of allocating gigabytes (a
// 14-character spec asked for 3.1 TB) or dying in the allocator.
std::int64_t weight_memory_limit() noexcept;
std::int64_t weight_memory_in_use() noexcept;

// A weight with its gradient. Keras naming: "kernel", "bias", "gamma", "beta", ...
struct Variable {
  std::string name;
  Tensor value;
  Tensor gradient;  // same shape as value; written by backward() (trainable only)
  bool trainable = true;
  float l2 = 0.0f;  // L2 regularizer factor: adds l2 * sum(value^2) to the loss
  WeightMemory memory;
};

// How a weight starts (Keras initializer names).
struct Initializer {
  enum class Kind {
    zeros,
    ones,
    constant,
    glorot_uniform,
    random_uniform,
    random_normal,
    truncated_normal,  // Keras TruncatedNormal(mean=a, stddev=b): redrawn outside 2 stddev
    variance_scaling   // Keras VarianceScaling(scale=a, mode, distribution)
  };
  // VarianceScaling's fan (Keras "fan_in", "fan_out", "fan_avg") and distribution (Keras
  // "truncated_normal", "untruncated_normal", "uniform").
  enum class Mode { fan_in, fan_out, fan_avg };
  enum class Distribution { truncated_normal, untruncated_normal, uniform };
  Kind kind = Kind::zeros;
  float a = 0.0f;  // constant: value; random_uniform: min; *_normal: mean; variance_scaling: scale
  float b = 0.0f;  // random_uniform: max; *_normal: stddev
  Mode mode = Mode::fan_in;
  Distribution distribution = Distribution::truncated_normal;
  static Initializer zeros() { return {Kind::zeros}; }
  static Initializer ones() { return {Kind::ones}; }
  static Initializer constant(float v) { return {Kind::constant, v}; }
  static Initializer glorot_uniform() { return {Kind::glorot_uniform}; }
  static Initializer random_uniform(float lo = -0.05f, float hi = 0.05f) {
    return {Kind::random_uniform, lo, hi};
  }
  static Initializer random_normal(float mean = 0.0f, float stddev = 0.05f) {
    return {Kind::random_normal, mean, stddev};
  }
  static Initializer truncated_normal(float mean = 0.0f, float stddev = 0.05f) {
    return {Kind::truncated_normal, mean, stddev};
  }
  // Keras: he_normal = (2, fan_in, truncated_normal), he_uniform = (2, fan_in, uniform),
  // lecun_* = scale 1 with fan_in, glorot_normal = (1, fan_avg, truncated_normal).
  static Initializer variance_scaling(float scale = 1.0f, Mode mode = Mode::fan_in,
                                      Distribution distribution = Distribution::truncated_normal) {
    return {Kind::variance_scaling, scale, 0.0f, mode, distribution};
  }
  // Fills t; fan_in/fan_out are used by glorot_uniform (limit = sqrt(6 / (fan_in + fan_out))).
  void apply(Tensor& t, Random& rng, std::int64_t fan_in, std::int64_t fan_out) const;
  std::string str() const;  // "zeros", "constant(0.5)", ...
};

// Layers are shared (a functional graph holds them by std::shared_ptr, one layer may be called
// several times): calling a layer on symbolic tensors (see bnorm/model/model.hpp) adds a node.
class Layer : public std::enable_shared_from_this<Layer> {
 public:
  virtual ~Layer() = default;
  Layer(Layer&&) noexcept = default;
  Layer& operator=(Layer&&) noexcept = default;

  // Keras's functional call: `Dense(64)(x)` adds a call of this layer to the graph of x and
  // returns its output. On a temporary the layer is moved into the graph (it must be unbuilt);
  // on a named layer it must be owned by a std::shared_ptr (std::make_shared), so that calling
  // it twice shares its weights (ValueError otherwise). ShapeError, naming the layer and the
  // layers its inputs come from, when the inputs do not suit it.
  SymbolicTensor operator()(const SymbolicTensor& x) &;
  SymbolicTensor operator()(const SymbolicTensor& x) &&;
  SymbolicTensor operator()(const std::vector<SymbolicTensor>& xs) &;
  SymbolicTensor operator()(const std::vector<SymbolicTensor>& xs) &&;

  // --- The graph interface: n inputs -> 1 output. Most layers take exactly one input and
  // implement these through build/forward/backward below; merges (Add, Concatenate, ...) take 2+.
  virtual int min_inputs() const noexcept { return 1; }
  virtual int max_inputs() const noexcept { return 1; }
  // Per-sample output shape for per-sample input shapes; ShapeError when they do not suit.
  virtual Shape output_shape_for(std::span<const Shape> input_shapes) const;
  virtual void build_inputs(std::span<const Shape> input_shapes, Random& rng);
  virtual const Tensor& forward_inputs(std::span<const Tensor* const> xs, Mode mode);
  // Gradients of the last forward_inputs: dxs[i] is set to dL/dx_i (owned by the layer, or dy
  // itself) when need_dx[i], else to nullptr. Trainable weights' gradients are overwritten.
  virtual void backward_inputs(const Tensor& dy, std::span<const bool> need_dx,
                               std::span<const Tensor*> dxs);

  // Keras class name: "Dense", "BatchNormalization", ...
  virtual std::string class_name() const = 0;
  const std::string& name() const noexcept { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }

  // Keras: trainable=false freezes the weights (no gradient updates) and makes
  // BatchNormalization run in inference mode even during fit.
  bool trainable() const noexcept { return trainable_; }
  void set_trainable(bool trainable) noexcept { trainable_ = trainable; }

  // Creates the weights for a per-sample input shape (no batch dimension). ShapeError when the
  // shape does not suit the layer. Calling build again with the same shape is a no-op.
  void build(const Shape& input_shape, Random& rng);
  bool built() const noexcept { return built_; }
  const Shape& input_shape() const noexcept { return input_shape_; }
  // Per-sample output shape for a per-sample input shape.
  virtual Shape output_shape(const Shape& input_shape) const = 0;

  // Forward on a batch (dim 0 is the batch). The result is owned by the layer and valid until
  // the next forward. `x` must stay alive and unchanged until backward() (the model's job).
  const Tensor& forward(const Tensor& x, Mode mode);
  // A temporary would be gone by backward(): binding one is a compile error, not a dangling read.
  const Tensor& forward(Tensor&& x, Mode mode) = delete;
  // Gradients of the last forward given dL/dy: writes every trainable weight's gradient and
  // returns dL/dx (owned by the layer). compute_dx=false skips dx (the model's first layer).
  const Tensor& backward(const Tensor& dy, bool compute_dx = true);

  // Set by a model that computes this layer inside the previous one (BatchNormalization fused
  // with a following ReLU): forward then returns x itself and backward returns dy unchanged.
  // Weights, names and summaries are unaffected.
  void set_absorbed(bool absorbed) noexcept { absorbed_ = absorbed; }
  bool absorbed() const noexcept { return absorbed_; }

  // A deep copy: same class, options, name and trainable flag; when built, built for the same
  // input shape with every weight's value copied (no aliasing) and the layer's own state (BN's
  // batch count, Dropout's random stream). Gradients and forward buffers are not copied.
  // nullptr for a layer class that does not implement do_clone.
  std::unique_ptr<Layer> clone() const;

  // The layer's own random stream (Dropout's masks); nullptr for a layer that draws nothing.
  // Saving and restoring it lets training resume exactly (Model::random_streams).
  virtual const Random* random_stream() const noexcept { return nullptr; }
  Random* random_stream() noexcept {
    return const_cast<Random*>(static_cast<const Layer&>(*this).random_stream());
  }

  // Distributed training: where this rank's batch starts in the global batch (its first sample's
  // index there), so that per-sample randomness (Dropout's masks) is the one process's; 0
  // otherwise.
  virtual void set_batch_offset(std::int64_t /*samples*/) noexcept {}
  // A distributed step in which this rank has no samples: the layer is not run, but state that a
  // forward in `mode` advances (Dropout's random stream) advances the same, so the ranks stay in
  // step.
  virtual void forward_skipped(Mode /*mode*/) {}
  // Layers whose output is softmax(z) expose z after forward, so a cross-entropy loss can work
  // from logits (as Keras does); backward_from_logits then takes dL/dz instead of dL/dy.
  virtual const Tensor* softmax_logits() const noexcept { return nullptr; }
  const Tensor& backward_from_logits(const Tensor& dlogits, bool compute_dx = true);

  // All weights in Keras order (trainable and non-trainable), e.g. gamma, beta, moving_mean,
  // moving_variance.
  std::vector<Variable*> weights();
  std::vector<const Variable*> weights() const;
  // Weights the optimizer updates: the trainable ones, none when trainable() is false.
  std::vector<Variable*> trainable_weights();
  // Appends the same weights to `out`: no allocation when `out` has the capacity (per-step use).
  void append_trainable_weights(std::vector<Variable*>& out);
  std::int64_t count_params() const;
  std::int64_t count_trainable_params() const;
  // sum of l2 * ||w||^2 over regularized trainable weights, and adds 2 * l2 * w to their gradients.
  double regularization_loss() const;
  void add_regularization_gradients();

 protected:
  explicit Layer(std::string name) : name_(std::move(name)) {}
  Variable& add_weight(std::string name, Shape shape, bool trainable, float l2 = 0.0f);
  // Subclass hooks. do_build validates the shape and creates/initializes weights.
  virtual void do_build(const Shape& input_shape, Random& rng) = 0;
  virtual void do_forward(const Tensor& x, Mode mode, Tensor& y) = 0;
  virtual void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) = 0;
  virtual void do_backward_from_logits(const Tensor& dlogits, bool compute_dx, Tensor& dx);
  // clone() hooks: a new unbuilt layer with the same options (nullptr: not copyable), and the
  // state beyond the weights, copied after the copy is built.
  virtual std::unique_ptr<Layer> do_clone() const { return nullptr; }
  virtual void copy_state_from(const Layer& /*other*/) {}
  // "<class> '<name>'" for error messages.
  std::string label() const { return class_name() + " '" + name_ + "'"; }
  // Checks a batch against the built per-sample shape; ShapeError naming the layer otherwise.
  void check_input(const Tensor& x) const;

  const Tensor* last_input_ = nullptr;
  Tensor output_;

 private:
  std::string name_;
  bool trainable_ = true;
  bool built_ = false;
  bool absorbed_ = false;
  Shape input_shape_;
  std::vector<std::unique_ptr<Variable>> weights_;  // stable addresses for optimizers
  Tensor dx_;
};

}  // namespace bnorm
