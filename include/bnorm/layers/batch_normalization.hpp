// bnorm/layers/batch_normalization.hpp — Keras 3 BatchNormalization (and a PyTorch preset).
#pragma once

#include <optional>
#include <vector>

#include "bnorm/layers/layer.hpp"

namespace bnorm {

namespace dist {
class Communicator;
}

// Training (mode == training && trainable()): normalize with the batch mean and biased batch
// variance over every axis but `axis`, then
//   moving_mean     = moving_mean * momentum + batch_mean * (1 - momentum)
//   moving_variance = moving_variance * momentum + batch_variance * (1 - momentum).
// Inference (or trainable() == false): normalize with the moving statistics.
// y = (x - mean) / sqrt(variance + epsilon) * gamma + beta.
// Degenerate cases: one value per channel in training gives batch variance 0, so y = beta
// exactly (Keras does the same; PyTorch raises, see Options::error_on_single_value). An empty
// batch is a ShapeError. A batch whose statistics are not finite raises NonFiniteError before
// the moving statistics are touched, so they are never poisoned.
class BatchNormalization final : public Layer {
 public:
  struct Options {
    int axis = -1;
    double momentum = 0.99;  // double, like Keras's Python float (see batch_norm_update_moving)
    float epsilon = 1e-3f;
    bool center = true;
    bool scale = true;
    Initializer beta_initializer = Initializer::zeros();
    Initializer gamma_initializer = Initializer::ones();
    Initializer moving_mean_initializer = Initializer::zeros();
    Initializer moving_variance_initializer = Initializer::ones();
    float beta_l2 = 0.0f;   // Keras beta_regularizer=L2(beta_l2); 0 = none
    float gamma_l2 = 0.0f;  // Keras gamma_regularizer=L2(gamma_l2); 0 = none
    // Keras synchronized=True: in a distributed fit, the batch statistics (and the backward's
    // sums) are those of the global batch, over every rank (see set_communicator). Without a
    // communicator of more than one process it changes nothing, as in Keras.
    bool synchronized = false;
    // --- Batch Renormalization (Ioffe 2017; Keras 3.14+ renorm=True) ---
    // Training normalizes with the batch statistics, then corrects towards the renorm moving
    // statistics: with stddev = sqrt(batch_variance + epsilon) and
    // renorm_stddev' = max(renorm_stddev, sqrt(epsilon)),
    //   r = clip(stddev / renorm_stddev', rmin, rmax), d = clip((batch_mean - renorm_mean) /
    //   renorm_stddev', -dmax, dmax),  y = xhat * (r gamma) + (d gamma + beta),
    // r and d constants for the gradients. Then renorm_mean/renorm_stddev move towards the
    // batch's mean/stddev with renorm_momentum, moving_mean/moving_stddev with momentum, and
    // moving_variance = max(moving_stddev^2 - epsilon, 0) (what inference uses). Extra weights,
    // after moving_variance in Keras's order: moving_stddev, renorm_mean, renorm_stddev.
    bool renorm = false;
    std::optional<double> renorm_rmax, renorm_rmin, renorm_dmax;  // Keras renorm_clipping
    double renorm_momentum = 0.99;
    // --- Ghost BN (tf.keras 2 virtual_batch_size; 0 = none) ---
    // Training splits each batch of N samples into N / V ghost batches of V samples (N must be a
    // multiple of V, a ShapeError otherwise) the way tf.keras 2 does, by reshaping to
    // (V, N / V, ...): ghost batch g holds samples g, g + N/V, g + 2 N/V, ... Each is normalized
    // with its own statistics (gamma and beta shared); the moving statistics move towards the
    // mean over ghost batches of their means and of their variances. Inference is unchanged.
    std::int64_t virtual_batch_size = 0;
    // --- PyTorch conventions (all off for Keras) ---
    // Store the Bessel-corrected (n / (n - 1)) batch variance in moving_variance.
    bool unbiased_moving_variance = false;
    // momentum unset in PyTorch: moving = cumulative average over the batches seen so far.
    bool cumulative_moving_average = false;
    // false: no moving statistics at all, batch statistics in every mode.
    bool track_moving_statistics = true;
    // Raise on one value per channel in training, as PyTorch does.
    bool error_on_single_value = false;
  };

  BatchNormalization() : BatchNormalization(Options{}) {}
  explicit BatchNormalization(Options options);
  // PyTorch BatchNorm*d defaults in this layer's terms: momentum 0.9 (= 1 - 0.1), epsilon 1e-5,
  // Bessel-corrected moving variance, error on one value per channel.
  static Options pytorch_defaults();
  // Keras accepts axis as a list; legacy configs carry e.g. [3]. A list of exactly one axis is
  // that axis (BatchNormalization(BatchNormalization::with_axis({3}))); any other length is a
  // ValueError, as bnorm normalizes over one axis.
  static Options with_axis(const std::vector<int>& axis, Options options);
  static Options with_axis(const std::vector<int>& axis) { return with_axis(axis, Options{}); }

  std::string class_name() const override { return "BatchNormalization"; }
  Shape output_shape(const Shape& input_shape) const override { return input_shape; }
  const Options& options() const noexcept { return options_; }
  // Normalized axis of the full batch tensor (>= 1) once built.
  int axis() const noexcept { return axis_; }
  std::int64_t channels() const noexcept { return channels_; }
  // Number of training batches whose statistics entered the moving averages.
  std::int64_t num_batches_tracked() const noexcept { return num_batches_tracked_; }
  void set_num_batches_tracked(std::int64_t n) noexcept { num_batches_tracked_ = n; }
  // Whether this forward in `mode` normalizes with batch statistics (Keras: training && trainable).
  bool uses_batch_statistics(Mode mode) const noexcept;

  // max(y, 0) computed in the same pass (and its gradient in the backward's passes), for a model
  // that absorbs the Activation('relu') that follows this layer; the ReLU mask is re-derived
  // from x in the backward, never stored. Off by default: a lone layer is plain Keras BN.
  void set_fused_relu(bool fused) noexcept { fused_relu_ = fused; }
  bool fused_relu() const noexcept { return fused_relu_; }
  // The residual block's tail in one layer: relu(bn(x) + shortcut), for a model that absorbs
  // the Add(bn, shortcut) and the ReLU after it. The layer then takes two inputs (x, shortcut)
  // through forward_inputs and returns dL/dshortcut as the second gradient; the ReLU mask is
  // re-derived in the backward, never stored. Same bits as the three layers (tested).
  void set_fused_add_relu(bool fused) noexcept { fused_add_relu_ = fused; }
  bool fused_add_relu() const noexcept { return fused_add_relu_; }
  int max_inputs() const noexcept override { return fused_add_relu_ ? 2 : 1; }
  const Tensor& forward_inputs(std::span<const Tensor* const> xs, Mode mode) override;
  void backward_inputs(const Tensor& dy, std::span<const bool> need_dx,
                       std::span<const Tensor*> dxs) override;

  // Synchronized BN (Options::synchronized). Set by a distributed fit for the duration of each
  // training step (nullptr: none). A synchronized training forward all-gathers each rank's
  // (count, mean, M2) per channel, merges them in rank order with Chan's formula (every rank gets
  // the same bits), and normalizes with the global statistics; the moving statistics are updated
  // from them on every rank (count = the global batch's, so PyTorch's unbiased variance uses it).
  // The backward all-reduces (sum dy, sum dy * xhat) per channel and divides by the global count.
  // gamma/beta gradients stay this rank's share (the gradient all-reduce adds them up).
  void set_communicator(dist::Communicator* communicator) noexcept { communicator_ = communicator; }
  // Options::synchronized after construction (the CLI's --sync-bn on a preset or loaded model).
  void set_synchronized(bool synchronized) noexcept { options_.synchronized = synchronized; }
  // Options::cumulative_moving_average after construction (Model::recalibrate_batch_norm).
  void set_cumulative_moving_average(bool on) noexcept { options_.cumulative_moving_average = on; }
  // Whether a forward in `mode` exchanges statistics with the other ranks.
  bool synchronizes(Mode mode) const noexcept;
  // For a rank whose share of the step is empty: the same exchanges as a forward and a backward
  // with data, contributing count 0 (the moving statistics are updated like every rank's).
  void forward_empty(Mode mode);
  void backward_empty();

  // Whether a model may run this layer fused with a following ReLU or Add + ReLU (not with
  // virtual batches).
  bool fusable() const noexcept { return options_.virtual_batch_size == 0; }

  // The statistics the last forward normalized with when it used the batch's (training), and its
  // output (after the fused ReLU when there is one): what BatchNormMonitor reads.
  const Tensor& batch_mean() const noexcept { return used_mean_; }
  const Tensor& batch_variance() const noexcept { return used_variance_; }
  bool used_batch_statistics() const noexcept { return used_batch_statistics_; }
  const Tensor& last_output() const noexcept { return output_; }

  Variable* gamma() noexcept { return gamma_; }
  Variable* beta() noexcept { return beta_; }
  Variable* moving_mean() noexcept { return moving_mean_; }
  Variable* moving_variance() noexcept { return moving_variance_; }
  Variable* moving_stddev() noexcept { return moving_stddev_; }  // renorm only
  Variable* renorm_mean() noexcept { return renorm_mean_; }
  Variable* renorm_stddev() noexcept { return renorm_stddev_; }

 protected:
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override {
    return std::make_unique<BatchNormalization>(options_);
  }
  // Every weight finite and the moving variance >= 0 (weights come from files and set_weights).
  void check_state() const;
  // The checks of a batch's statistics (finite, variance + epsilon finite) and the moving update
  // from `count` values.
  void check_batch_statistics();
  void update_moving_statistics(Mode mode, double count);
  // Fills used_mean_/used_variance_ with the statistics over every rank (x: this rank's batch,
  // nullptr for none) and sync_count_ with their count.
  void exchange_statistics(const Tensor* x);
  // masked_dy_ = dy where the last forward's output is > 0 (the fused ReLU's gradient), else 0.
  void mask_by_output(const Tensor& dy);
  // Renorm: r, d and the effective gamma/beta from the batch statistics in used_*_.
  void renorm_corrections();
  void update_renorm_statistics(Mode mode);
  // gamma (or the renorm-corrected one) as the last training forward applied it; nullptr: none.
  const float* applied_gamma() const noexcept;
  const float* applied_beta() const noexcept;
  // Renorm: turns dgamma = sum(dy * xhat) into the gradient of gamma (r * that + d * sum(dy)).
  void renorm_gradients(float* dgamma, const float* sum_dy);
  // Ghost BN training forward / backward.
  void ghost_forward(const Tensor& x, Tensor& y);
  void ghost_backward(const Tensor& dy, float* dx, float* dgamma, float* dbeta);
  // The synchronized backward of g (dy, with the fused ReLU's mask already applied).
  void synchronized_backward(const Tensor& g, float* dx, float* dgamma, float* dbeta);
  void copy_state_from(const Layer& other) override {
    num_batches_tracked_ = static_cast<const BatchNormalization&>(other).num_batches_tracked_;
  }

 private:
  Options options_;
  int axis_ = -1;
  std::int64_t channels_ = 0;
  std::int64_t num_batches_tracked_ = 0;
  Variable* gamma_ = nullptr;
  Variable* beta_ = nullptr;
  Variable* moving_mean_ = nullptr;
  Variable* moving_variance_ = nullptr;
  Variable* moving_stddev_ = nullptr;
  Variable* renorm_mean_ = nullptr;
  Variable* renorm_stddev_ = nullptr;
  bool renormalized_ = false;  // the last forward applied the renorm correction
  Tensor renorm_r_, renorm_d_, effective_gamma_, effective_beta_, renorm_sum_dy_;
  Tensor ghost_x_, ghost_y_, ghost_dy_, ghost_dx_, ghost_mean_, ghost_variance_, ghost_dgamma_,
      ghost_dbeta_;
  bool ghost_forward_ = false;  // the last forward used virtual batches
  // Statistics used by the last forward (batch or moving), for backward.
  Tensor used_mean_, used_variance_;
  bool used_batch_statistics_ = false;
  bool fused_relu_ = false;
  bool fused_add_relu_ = false;
  const Tensor* pending_shortcut_ = nullptr;  // set by forward_inputs for do_forward
  const Tensor* shortcut_ = nullptr;          // of the last forward (null: not fused)
  Tensor dx_fused_, dshortcut_;
  dist::Communicator* communicator_ = nullptr;
  bool synced_forward_ = false;  // the last forward exchanged statistics
  double sync_count_ = 0.0;      // values per channel over every rank in that forward
  std::vector<double> sync_local_, sync_all_, sync_merged_, sync_scratch_;
  Tensor masked_dy_;
};

}  // namespace bnorm
