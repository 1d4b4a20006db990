// bnorm/model/model.hpp — Keras Model: a graph of layer calls, and the one training engine.
//
//   Input x(Shape{28, 28, 1});
//   SymbolicTensor h = Conv2D(...)(x);
//   h = Add()({BatchNormalization()(h), x});
//   Model model(x, Dense(10, "softmax")(Flatten()(h)));
//   model.compile("adam", "sparse_categorical_crossentropy");
//   model.fit(images, labels, {.batch_size = 64, .epochs = 5});
//
// A Model holds the nodes between its inputs and outputs (Keras's Functional). Sequential is a
// Model whose graph is a chain. Both run on this one engine: compile/fit/evaluate/predict/
// train_on_batch/summary/get_weights/set_weights, and the passes over the graph (BN + ReLU and
// BN + Add + ReLU fusion for training, Conv/Dense -> BN folding for inference). How a graph is
// planned, run, differentiated and rewritten: docs/architecture.md.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/core/random.hpp"
#include "bnorm/core/tensor.hpp"
#include "bnorm/layers/layer.hpp"
#include "bnorm/layers/node.hpp"
#include "bnorm/model/callbacks.hpp"
#include "bnorm/model/losses.hpp"
#include "bnorm/model/optimizers.hpp"

namespace bnorm {

namespace dist {
class Communicator;
}

struct FitOptions {
  std::int64_t batch_size = 32;
  int epochs = 1;
  // Keras: the last fraction of x/y (before shuffling) is held out for validation.
  double validation_split = 0.0;
  // Explicit validation data (takes precedence over validation_split); single-input models.
  const Tensor* validation_x = nullptr;
  const Tensor* validation_y = nullptr;
  bool shuffle = true;
  std::vector<Callback*> callbacks;
  // Keras's initial_epoch: the epoch to start at (epochs counts up to `epochs`, so
  // {initial_epoch = 1, epochs = 2} trains one epoch, numbered 1; none when initial_epoch >=
  // epochs). When the model's training_state() says the run completed exactly initial_epoch
  // epochs on as many training samples, fit continues that run: the same shuffling stream, and
  // with the weights, optimizer state and random streams restored (io::load_model of a
  // checkpoint does all of it) the result is bit for bit the uninterrupted run's. Otherwise a
  // new run starts whose epochs are numbered from initial_epoch, as in Keras.
  int initial_epoch = 0;

  // --- Data-parallel training (bnorm/dist/communicator.hpp): every rank of `communicator` calls
  // fit on its own model replica (built with the same seed) with the same options. Each step's
  // gradient is the global batch's: every rank divides its loss by the global sample count, the
  // gradients are all-reduced (summed in rank order, so every rank applies the same update and
  // the weights stay bit-identical), BatchNormalization(synchronized=true) layers use the
  // global batch's statistics, and non-synchronized ones keep rank 0's moving statistics
  // (PyTorch DDP's broadcast_buffers). Logs (loss, accuracy) are the global batch's. A
  // communicator of one process trains exactly as none.
  dist::Communicator* communicator = nullptr;
  // true: x/y are the whole data set, the same on every rank; the single-process order of global
  // batches (same seed, same shuffling) is kept and each global batch is split into contiguous
  // per-rank shards (dist::block_of: sizes differ by at most one; a rank is empty only when the
  // batch has fewer samples than there are ranks). N ranks with batch_size B then train like one
  // process with batch_size B (B is the global batch). false: x/y are this rank's own samples,
  // batch_size is per rank; the ranks agree on the number of steps per epoch (the most any rank
  // has) and a rank out of data takes part in the remaining steps with empty batches.
  bool shard_batches = true;
  // Every this many steps, check that the weights are bit-identical on every rank (a hash of
  // every weight, all-gathered): DistError on every rank otherwise. 0: never.
  std::int64_t check_replicas_every = 0;
};

// Where fit's current run stands after its last completed epoch: what fit needs, besides the
// weights, the optimizer's state and the random streams, to continue it exactly
// (FitOptions::initial_epoch). Updated at each epoch's end, before the callbacks' on_epoch_end,
// so a checkpoint written there holds the epoch it follows.
struct TrainingState {
  int epoch = 0;                 // epochs completed (the initial_epoch that continues the run)
  std::int64_t samples = 0;      // training samples per epoch (after validation_split)
  std::int64_t shuffles = 0;     // how many epochs shuffled: the sample order is their product
  Random::State shuffle_seed{};  // the run's shuffling stream as it started
  // Every completed epoch's logs, in order (History::epoch_seconds is not kept: timings are not
  // part of a run's result).
  std::map<std::string, std::vector<double>> history;
};

// Keras's split of n samples for validation_split: the first floor(n * (1 - split)) train.
std::int64_t validation_split_index(std::int64_t n, double split) noexcept;

struct EvaluateResult {
  double loss = 0.0;
  double accuracy = 0.0;  // of the first output
};

namespace detail {
struct Plan;
}

// Keras's to_snake_case, which makes default layer names: "BatchNormalization" ->
// "batch_normalization", "Conv2D" -> "conv2d", "MaxPooling2D" -> "max_pooling2d".
std::string snake_case_name(const std::string& class_name);

class Model {
 public:
  // keras.Model(inputs, outputs, name). Keeps exactly the nodes that lead from the inputs to the
  // outputs; builds every layer (weights initialized from `seed` in graph order) and names the
  // unnamed ones as Keras does (dense, dense_1, ...). One-line errors naming the layers: an
  // output that depends on an input not in `inputs`, an input no output uses, a layer called on
  // inputs it cannot take, two layers with one name.
  Model(std::vector<SymbolicTensor> inputs, std::vector<SymbolicTensor> outputs,
        std::string name = "functional", std::uint64_t seed = 0);
  Model(const SymbolicTensor& input, const SymbolicTensor& output, std::string name = "functional",
        std::uint64_t seed = 0);
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  // Calls this model as a layer on symbolic tensors (a nested model): the call shares this
  // model's layers and weights. One output: the tensor; several: use call().
  SymbolicTensor operator()(const SymbolicTensor& x) const;
  SymbolicTensor operator()(const std::vector<SymbolicTensor>& xs) const;
  std::vector<SymbolicTensor> call(const std::vector<SymbolicTensor>& xs) const;

  const std::string& name() const noexcept { return name_; }
  std::uint64_t seed() const noexcept { return seed_; }
  // "Sequential" or "Functional" (Keras's class names).
  std::string class_name() const { return sequential_ ? "Sequential" : "Functional"; }
  // Whether the graph is a Sequential chain (Sequential(Model&&) accepts exactly those).
  bool is_sequential() const noexcept { return sequential_; }

  // Every layer once, in graph order (a nested model's layers in place of its first call).
  std::size_t size() const noexcept { return layers_.size(); }
  Layer& layer(std::size_t i) { return *layers_.at(i); }
  const Layer& layer(std::size_t i) const { return *layers_.at(i); }
  // The layer called `name`; ValueError when there is none.
  Layer& layer(const std::string& name);
  const std::vector<std::shared_ptr<Layer>>& layers() const noexcept { return layers_; }
  // The symbolic ends (empty for a Sequential that has no input shape yet).
  const std::vector<SymbolicTensor>& inputs() const noexcept { return graph_->inputs; }
  const std::vector<SymbolicTensor>& outputs() const noexcept { return graph_->outputs; }
  // Per-sample shape of the first input (nullopt: a Sequential without one yet).
  const std::optional<Shape>& input_shape() const noexcept { return input_shape_; }
  // Per-sample shape of the first output.
  Shape output_shape() const;

  bool built() const noexcept;

  // Keras compile(optimizer, loss, metrics); metrics: "accuracy" or none. With several outputs
  // the loss applies to each and the total is their sum (Keras's default loss_weights).
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
  // non-finite, after calling no further callbacks for that epoch. One tensor per input/output.
  History fit(const Tensor& x, const Tensor& y, const FitOptions& options = {});
  History fit(const std::vector<const Tensor*>& xs, const std::vector<const Tensor*>& ys,
              const FitOptions& options = {});
  // One gradient step on one batch (Keras train_on_batch); returns the batch loss computed
  // by the forward pass before the update; `correct`, when given, receives the number of the
  // batch's samples that forward pass classified right (the "accuracy" metric's count).
  double train_on_batch(const Tensor& x, const Tensor& y);
  double train_on_batch(const std::vector<const Tensor*>& xs, const std::vector<const Tensor*>& ys,
                        double* correct = nullptr);
  // Loss and accuracy over x/y. Mode::training evaluates with batch statistics, leaving every
  // weight and moving statistic untouched (the model state is restored afterwards).
  EvaluateResult evaluate(const Tensor& x, const Tensor& y, std::int64_t batch_size = 32,
                          Mode mode = Mode::inference);
  EvaluateResult evaluate(const std::vector<const Tensor*>& xs,
                          const std::vector<const Tensor*>& ys, std::int64_t batch_size = 32,
                          Mode mode = Mode::inference);
  // Outputs in inference mode, batch by batch (the first output; predict_all for every one).
  Tensor predict(const Tensor& x, std::int64_t batch_size = 32);
  std::vector<Tensor> predict_all(const std::vector<const Tensor*>& xs,
                                  std::int64_t batch_size = 32);

  // PreciseBN (Wu & Johnson 2021, fvcore's update_bn_stats): replaces the moving statistics of
  // every BatchNormalization that learns them (trainable, tracking moving statistics) by the plain
  // average of its batch statistics over the first `batches` batches of `batch_size` samples of x
  // (in order; 0, or more than x has: all of them), the model running forward in training mode
  // as in fit. The exponential moving averages of a short run still weigh their initial values
  // (momentum^steps) and the early weights' statistics; the average of K batches with the final
  // weights does not. The variance averaged is the one the layer stores (biased for Keras,
  // Bessel-corrected for the PyTorch preset). Nothing else changes: weights, optimizer state,
  // random streams (Dropout's draws are put back) and the layers' batch counters are restored.
  // Returns the number of batches used. ValueError for a model that is not built, and for
  // renorm or virtual-batch (Ghost) BN layers, whose statistics are not plain batch averages.
  std::int64_t recalibrate_batch_norm(const Tensor& x, std::int64_t batch_size = 32,
                                      std::int64_t batches = 0);
  std::int64_t recalibrate_batch_norm(const std::vector<const Tensor*>& xs,
                                      std::int64_t batch_size = 32, std::int64_t batches = 0);

  // Batch-norm folding for inference, a rewrite of the graph. A Dense or Conv2D with a linear
  // activation whose output goes only to a BatchNormalization over its channel axis (the last
  // axis; axis 1 for Conv2D channels_first) that normalizes with moving statistics at inference
  // is one affine map:
  //   inv = gamma / sqrt(moving_variance + epsilon)   (gamma = 1 with scale=false)
  //   kernel' = kernel * inv (per output channel, the kernel's last axis)
  //   bias'   = (bias - moving_mean) * inv + beta    (bias = 0 with use_bias=false,
  //                                                    beta = 0 with center=false)
  // computed in float64 and rounded once to float32. Equal to the unfolded pair within 1e-5
  // relative (float32 rounding), not bit for bit. A producer whose output also feeds other
  // layers is not folded (they would see the folded values).
  //
  // A deep copy of this built model (weights never alias) in which every such pair is one
  // Dense/Conv2D with use_bias=true and folded weights, the BatchNormalization removed, and an
  // elementwise Activation (relu, sigmoid, tanh) that alone follows the pair merged into the
  // folded layer's activation: Conv2D -> BN -> ReLU becomes Conv2D(activation="relu"), the same
  // network as one built without BN. The copy keeps the loss and metrics (for evaluate) but has
  // no optimizer: compile it to train it. ValueError when the model is not built or holds a
  // layer class that cannot be copied. A Sequential folds into a Sequential.
  std::unique_ptr<Model> folded_model() const;
  // Number of pairs folded_model() folds.
  std::size_t foldable_pairs() const;
  // On (the default): predict and evaluate(mode=inference) run on folded_model() of the current
  // weights whenever a pair can be folded (recomputed on each call, so weight changes are always
  // seen); training and evaluate(mode=training) never fold. Off: the layers as they are.
  void set_inference_folding(bool enabled) noexcept { inference_folding_ = enabled; }
  bool inference_folding() const noexcept { return inference_folding_; }

  // Keras summary(): a Sequential prints layer (type), output shape, param #; a functional
  // model adds Keras's "Connected to" column. Totals with trainable and non-trainable counts.
  std::string summary() const;
  std::int64_t count_params() const;
  std::int64_t count_trainable_params() const;

  // All weights of all layers in order (Keras get_weights order), copied.
  std::vector<Tensor> get_weights() const;
  // ShapeError when the count or a shape differs.
  void set_weights(const std::vector<Tensor>& weights);

  // The graph flattened for file formats: input i is slot i; call j (of layers()[layer], a
  // shared layer appearing once per call, nested models expanded) produces slot
  // inputs.size() + j. Calls come in graph order, so each layer's first call is in layers()
  // order.
  struct FlatGraph {
    std::vector<std::string> input_names;
    std::vector<Shape> input_shapes;
    struct Call {
      std::size_t layer = 0;
      std::vector<int> inputs;
      Shape output_shape;  // per sample (informational: from_flat_graph infers it)
    };
    std::vector<Call> calls;
    std::vector<int> outputs;
  };
  FlatGraph flat_graph() const;
  // The inverse: calls `layers` as `graph` says; ValueError naming the problem for a graph that
  // refers to a slot or layer that does not exist yet (what a corrupt file would hold).
  static Model from_flat_graph(const FlatGraph& graph, std::vector<std::shared_ptr<Layer>> layers,
                               std::string name, std::uint64_t seed);

  // Set by a callback to end fit after the current epoch (Keras model.stop_training).
  bool stop_training = false;

  // The progress of fit's current run (see TrainingState); empty before the first epoch.
  const TrainingState& training_state() const noexcept { return training_state_; }
  // ValueError for a state no run can have (negative counts, more shuffles than epochs, a
  // history whose lists are not one value per epoch, the all-zero stream).
  void set_training_state(TrainingState state);

  // Every random stream training draws from, which an exact resume restores: the model's own
  // generator (each new run of fit splits its shuffling stream from it) and, in graph order, the
  // stream of each layer call that draws (Dropout's masks; a shared layer's later calls have
  // their own), named by the layer.
  struct RandomStreams {
    Random model;
    std::vector<std::pair<std::string, Random>> layers;
  };
  RandomStreams random_streams() const;
  // ValueError unless `streams.layers` names the same layer calls in the same order.
  void set_random_streams(const RandomStreams& streams);

 protected:
  // An empty model (Sequential's start).
  Model(std::uint64_t seed, std::string name);
  // Replaces the graph: keeps the nodes between inputs and outputs, names, builds, plans.
  void set_graph(std::vector<SymbolicTensor> inputs, std::vector<SymbolicTensor> outputs);
  // Called before any run to make sure a graph exists for inputs whose per-sample shapes are
  // `shapes` (a Sequential without Input builds on its first batch).
  void ensure_graph(const std::vector<Shape>& shapes);
  // Sequential: the graph Input(input_shape) -> layers_ in order.
  void build_chain(const Shape& input_shape);
  // Decides which BN + ReLU / BN + Add + ReLU groups are fused (steps and aliases).
  void apply_fusion();
  void set_fusion_flags();
  // A copy of the graph with every layer cloned (and pairs folded when `fold`); nullptr when a
  // layer cannot be copied. A Sequential's copy is a Sequential.
  std::unique_ptr<Model> copy_graph(bool fold) const;
  std::unique_ptr<Model> make_empty() const;

  // Sequential's state lives here too (Sequential adds no members, so a Model that holds a
  // Sequential can be moved back into one).
  Random rng_;
  std::vector<std::shared_ptr<Layer>> layers_;
  bool sequential_ = false;
  std::shared_ptr<GraphDef> graph_;
  std::unique_ptr<detail::Plan> plan_;
  std::optional<Shape> input_shape_;  // of graph_->inputs[0]

 private:
  struct Batch;
  struct DistStep;
  using Tensors = std::span<const Tensor* const>;
  void check_xy(Tensors xs, Tensors ys, const char* what) const;
  void prepare(Tensors xs);
  double train_on_batch_impl(Tensors xs, Tensors ys, double* correct = nullptr);
  void forward(std::span<const Tensor* const> xs, Mode mode);
  double train_step(std::span<const Tensor* const> xs, std::span<const Tensor* const> ys,
                    double* correct, const DistStep* dist = nullptr);
  // A distributed step on a rank with no samples: the collectives of a step with data.
  void forward_empty();
  void backward_empty();
  void exchange_gradients(dist::Communicator& comm);
  // The moving statistics of the BN layers that are not synchronized (dist_moving_), once per
  // fit, and rank 0's of them to every rank, after each step.
  void collect_rank_zero_statistics();
  void broadcast_moving_statistics(dist::Communicator& comm);
  void check_replicas(dist::Communicator& comm, const std::string& where);
  void collect_trainable();
  std::unique_ptr<Model> folded_for_inference() const;
  std::pair<double, double> evaluate_batches(const std::vector<const Tensor*>& xs,
                                             const std::vector<const Tensor*>& ys,
                                             std::int64_t batch_size, Mode mode);
  std::vector<Tensor> predict_batches(const std::vector<const Tensor*>& xs,
                                      std::int64_t batch_size);
  std::string summary_functional() const;
  std::string summary_sequential() const;

  std::string name_;
  std::uint64_t seed_;
  std::unique_ptr<Optimizer> optimizer_;
  LossKind loss_ = LossKind::sparse_categorical_crossentropy;
  std::vector<std::string> metrics_;
  std::vector<Variable*> trainable_;
  bool inference_folding_ = true;
  TrainingState training_state_;
  std::vector<float> dist_buffer_;      // gradients (or moving statistics) as one message
  std::vector<Variable*> dist_moving_;  // see collect_rank_zero_statistics
};

}  // namespace bnorm
