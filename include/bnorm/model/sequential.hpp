// bnorm/model/sequential.hpp — Keras Sequential: add, compile, fit, evaluate, predict, summary.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "bnorm/core/random.hpp"
#include "bnorm/core/tensor.hpp"
#include "bnorm/layers/layer.hpp"
#include "bnorm/model/callbacks.hpp"
#include "bnorm/model/losses.hpp"
#include "bnorm/model/optimizers.hpp"

namespace bnorm {

// Declares the per-sample input shape, as keras.Input(shape=...): Sequential::add(Input({784})).
struct Input {
  Shape shape;
};

struct FitOptions {
  std::int64_t batch_size = 32;
  int epochs = 1;
  // Keras: the last fraction of x/y (before shuffling) is held out for validation.
  double validation_split = 0.0;
  // Explicit validation data (takes precedence over validation_split).
  const Tensor* validation_x = nullptr;
  const Tensor* validation_y = nullptr;
  bool shuffle = true;
  std::vector<Callback*> callbacks;
};

// Keras's split of n samples for validation_split: the first floor(n * (1 - split)) train.
std::int64_t validation_split_index(std::int64_t n, double split) noexcept;

struct EvaluateResult {
  double loss = 0.0;
  double accuracy = 0.0;
};

class Sequential {
 public:
  // `seed` drives weight initialization, dropout and shuffling: the same seed, data and
  // options give the same weights and the same training run, bit for bit.
  explicit Sequential(std::uint64_t seed = 0, std::string name = "sequential");
  Sequential(Sequential&&) noexcept;
  Sequential& operator=(Sequential&&) noexcept;
  ~Sequential();

  void add(Input input);
  Layer& add(std::unique_ptr<Layer> layer);
  template <class L, class = std::enable_if_t<std::is_base_of_v<Layer, std::decay_t<L>>>>
  std::decay_t<L>& add(L&& layer) {
    return static_cast<std::decay_t<L>&>(add(std::make_unique<std::decay_t<L>>(std::move(layer))));
  }

  const std::string& name() const noexcept { return name_; }
  std::uint64_t seed() const noexcept { return seed_; }
  std::size_t size() const noexcept { return layers_.size(); }
  Layer& layer(std::size_t i) { return *layers_.at(i); }
  const Layer& layer(std::size_t i) const { return *layers_.at(i); }
  // The layer called `name`; ValueError when there is none.
  Layer& layer(const std::string& name);
  const std::optional<Shape>& input_shape() const noexcept { return input_shape_; }
  // Per-sample output shape of the last layer.
  Shape output_shape() const;

  // Creates all weights (needs an Input or an explicit shape). Done by compile/fit if needed.
  void build(const Shape& input_shape);
  void build();
  bool built() const noexcept;

  // Keras compile(optimizer, loss, metrics); metrics: "accuracy" or none.
  void compile(std::unique_ptr<Optimizer> optimizer, LossKind loss,
               std::vector<std::string> metrics = {"accuracy"});
  void compile(const std::string& optimizer, const std::string& loss,
               std::vector<std::string> metrics = {"accuracy"});
  bool compiled() const noexcept { return optimizer_ != nullptr; }
  Optimizer& optimizer();
  const Optimizer& optimizer() const;
  LossKind loss() const noexcept { return loss_; }
  const std::vector<std::string>& metrics() const noexcept { return metrics_; }

  // Trains; throws NonFiniteError naming epoch and step when the loss (or a BN batch) goes
  // non-finite, after calling no further callbacks for that epoch.
  History fit(const Tensor& x, const Tensor& y, const FitOptions& options = {});
  // One gradient step on one batch (Keras train_on_batch); returns the batch loss computed
  // by the forward pass before the update.
  double train_on_batch(const Tensor& x, const Tensor& y);
  // Loss and accuracy over x/y. Mode::training evaluates with batch statistics, leaving every
  // weight and moving statistic untouched (the model state is restored afterwards).
  EvaluateResult evaluate(const Tensor& x, const Tensor& y, std::int64_t batch_size = 32,
                          Mode mode = Mode::inference);
  // Outputs in inference mode, batch by batch.
  Tensor predict(const Tensor& x, std::int64_t batch_size = 32);

  // Batch-norm folding for inference. A Dense or Conv2D with a linear activation directly
  // followed by a BatchNormalization over its channel axis (the last axis; axis 1 for Conv2D
  // channels_first) that normalizes with moving statistics at inference is one affine map:
  //   inv = gamma / sqrt(moving_variance + epsilon)   (gamma = 1 with scale=false)
  //   kernel' = kernel * inv (per output channel, the kernel's last axis)
  //   bias'   = (bias - moving_mean) * inv + beta    (bias = 0 with use_bias=false,
  //                                                    beta = 0 with center=false)
  // computed in float64 and rounded once to float32. Equal to the unfolded pair within 1e-5
  // relative (float32 rounding), not bit for bit.
  //
  // A deep copy of this built model (weights never alias) in which every such pair is one
  // Dense/Conv2D with use_bias=true and folded weights, the BatchNormalization removed, and an
  // elementwise Activation (relu, sigmoid, tanh) that directly follows the pair merged into the
  // folded layer's activation: Conv2D -> BN -> ReLU becomes Conv2D(activation="relu"), the same
  // network as one built without BN. Every other layer is copied as is. The copy keeps the loss and
  // metrics (for evaluate) but has no optimizer: compile it to train it. ValueError when the model
  // is not built or holds a layer class that cannot be copied.
  Sequential folded() const;
  // Number of pairs folded() folds.
  std::size_t foldable_pairs() const;
  // On (the default): predict and evaluate(mode=inference) run on folded() of the current
  // weights whenever a pair can be folded (recomputed on each call, so weight changes are always
  // seen); training and evaluate(mode=training) never fold. Off: the layers as they are.
  void set_inference_folding(bool enabled) noexcept { inference_folding_ = enabled; }
  bool inference_folding() const noexcept { return inference_folding_; }

  // Keras summary() table: layer (type), output shape, param #; totals with trainable and
  // non-trainable counts.
  std::string summary() const;
  std::int64_t count_params() const;
  std::int64_t count_trainable_params() const;

  // All weights of all layers in order (Keras get_weights order), copied.
  std::vector<Tensor> get_weights() const;
  // ShapeError when the count or a shape differs.
  void set_weights(const std::vector<Tensor>& weights);

  // Set by a callback to end fit after the current epoch (Keras model.stop_training).
  bool stop_training = false;

 private:
  const Tensor& forward(const Tensor& x, Mode mode);
  // build() for the per-sample shape of batch x; allocation-free once built for that shape.
  void build_for(const Tensor& x);
  double train_step(const Tensor& x, const Tensor& y, double* correct);
  void collect_trainable();
  void fuse_layers();  // BatchNormalization + Activation('relu') pairs (see sequential.cpp)  //
                       // fills trainable_ from the layers' current trainable flags
  void check_xy(const Tensor& x, const Tensor& y, const std::string& what) const;
  // Index of each foldable producer (its BatchNormalization follows it).
  std::vector<std::size_t> fold_plan() const;
  // folded(), or nullopt when a layer cannot be copied.
  std::optional<Sequential> fold_copy() const;
  // fold_copy() when inference folding is on and a pair can be folded; nullopt otherwise.
  std::optional<Sequential> folded_for_inference() const;
  // Sums of per-sample loss and of correct predictions over x/y, batch by batch.
  std::pair<double, double> evaluate_batches(const Tensor& x, const Tensor& y,
                                             std::int64_t batch_size, Mode mode);
  Tensor predict_batches(const Tensor& x, std::int64_t batch_size);

  std::string name_;
  std::uint64_t seed_;
  Random rng_;
  std::optional<Shape> input_shape_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::unique_ptr<Optimizer> optimizer_;
  LossKind loss_ = LossKind::sparse_categorical_crossentropy;
  std::vector<std::string> metrics_;
  std::vector<Variable*> trainable_;
  Tensor loss_gradient_;
  bool inference_folding_ = true;
};

}  // namespace bnorm
