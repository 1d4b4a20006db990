#include "bnorm/layers/batch_normalization.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <utility>

#include "bnorm/core/error.hpp"
#include "bnorm/dist/communicator.hpp"
#include "kernels/batch_norm.hpp"
#include "kernels/batch_norm_sync.hpp"
#include "layers/batch_norm_dims.hpp"

namespace bnorm {

namespace {
std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}
// "(None, 0, 4)": a per-sample shape with Keras's unknown batch dimension.
std::string batch_shape(const Shape& per_sample) {
  std::string s = "(None";
  for (auto d : per_sample.dims()) s += ", " + std::to_string(d);
  return s + ")";
}
}  // namespace

BatchNormalization::BatchNormalization(Options options)
    : Layer("batch_normalization"), options_(std::move(options)) {
  const float eps = options_.epsilon;
  const double m = options_.momentum;
  if (!(eps > 0.0f) || !std::isfinite(eps)) {
    throw ValueError("BatchNormalization: epsilon must be a finite number > 0; received " +
                     num(eps));
  }
  if (!(m >= 0.0 && m <= 1.0)) {
    throw ValueError("BatchNormalization: momentum must be in [0, 1]; received " + num(m));
  }
  if (options_.gamma_l2 < 0.0f || options_.beta_l2 < 0.0f || !std::isfinite(options_.gamma_l2) ||
      !std::isfinite(options_.beta_l2)) {
    throw ValueError(
        "BatchNormalization: L2 regularization factors must be finite and >= 0; received "
        "gamma_l2=" +
        num(options_.gamma_l2) + ", beta_l2=" + num(options_.beta_l2));
  }
}

BatchNormalization::Options BatchNormalization::with_axis(const std::vector<int>& axis,
                                                          Options options) {
  if (axis.size() != 1) {
    std::string received = "[";
    for (std::size_t i = 0; i < axis.size(); ++i)
      received += (i ? ", " : "") + std::to_string(axis[i]);
    throw ValueError(
        "BatchNormalization: axis must be one integer or a list of one; received axis=" + received +
        "]");
  }
  options.axis = axis[0];
  return options;
}

BatchNormalization::Options BatchNormalization::pytorch_defaults() {
  Options o;
  o.momentum = 0.9;  // PyTorch momentum 0.1 weights the new value: Keras momentum = 1 - 0.1
  o.epsilon = 1e-5f;
  o.unbiased_moving_variance = true;
  o.error_on_single_value = true;
  return o;
}

bool BatchNormalization::uses_batch_statistics(Mode mode) const noexcept {
  // Keras: batch statistics iff training and trainable; without moving statistics, always.
  return (mode == Mode::training && trainable()) || !options_.track_moving_statistics;
}

void BatchNormalization::do_build(const Shape& input_shape, Random& rng) {
  // input_shape is per sample; the batch tensor has one more leading axis. Keras counts `axis`
  // on the batch tensor, so axis=-1 is the last feature axis and axis=0 (the batch) is invalid.
  const int rank = input_shape.rank() + 1;
  const int a = options_.axis < 0 ? options_.axis + rank : options_.axis;
  if (a < 1 || a >= rank) {
    throw ShapeError(
        label() + ": axis " + std::to_string(options_.axis) + " is invalid for inputs of rank " +
        std::to_string(rank) + " (expected 1 <= axis < " + std::to_string(rank) + " or -" +
        std::to_string(rank - 1) + " <= axis <= -1; the batch axis cannot be normalized)");
  }
  axis_ = a;
  channels_ = input_shape[a - 1];
  if (channels_ == 0) {
    throw ShapeError(label() + ": axis " + std::to_string(options_.axis) +
                     " has 0 channels (expected >= 1); received input shape " +
                     batch_shape(input_shape));
  }
  // Any other zero dimension leaves no values to normalize (count 0: 0/0 statistics).
  for (int i = 0; i < input_shape.rank(); ++i) {
    if (input_shape[i] == 0) {
      throw ShapeError(label() + ": input dimension " + std::to_string(i + 1) +
                       " is 0 (expected every dimension >= 1); received input shape " +
                       batch_shape(input_shape));
    }
  }
  const Shape c{channels_};
  if (options_.scale) {
    gamma_ = &add_weight("gamma", c, true, options_.gamma_l2);
    options_.gamma_initializer.apply(gamma_->value, rng, channels_, channels_);
  }
  if (options_.center) {
    beta_ = &add_weight("beta", c, true, options_.beta_l2);
    options_.beta_initializer.apply(beta_->value, rng, channels_, channels_);
  }
  if (options_.track_moving_statistics) {
    moving_mean_ = &add_weight("moving_mean", c, false);
    options_.moving_mean_initializer.apply(moving_mean_->value, rng, channels_, channels_);
    moving_variance_ = &add_weight("moving_variance", c, false);
    options_.moving_variance_initializer.apply(moving_variance_->value, rng, channels_, channels_);
  }
  used_mean_ = Tensor(c);
  used_variance_ = Tensor(c);
}

namespace {
// Weights can come from set_weights or a file: O(C) checks so that no NaN/Inf weight and no
// negative variance turns into a silent NaN output (or poisons the moving averages).
// label() builds the message prefix only on failure (no allocation per step).
template <class Label>
void check_weights(const Label& label, std::initializer_list<const Variable*> weights,
                   const Variable* moving_variance, float epsilon) {
  for (const Variable* w : weights) {
    if (!w) continue;
    const Tensor& t = w->value;
    for (std::int64_t c = 0; c < t.size(); ++c) {
      if (!std::isfinite(t[c])) {
        throw NonFiniteError(label() + ": weight '" + w->name + "' must be finite; received " +
                             num(t[c]) + " at channel " + std::to_string(c));
      }
      if (w != moving_variance) continue;
      if (t[c] < 0.0f) {
        throw ValueError(label() + ": weight 'moving_variance' must be >= 0; received " +
                         num(t[c]) + " at channel " + std::to_string(c));
      }
      if (!std::isfinite(t[c] + epsilon)) {
        throw NonFiniteError(label() + ": moving_variance + epsilon overflows float32 at channel " +
                             std::to_string(c) + " (expected <= 3.4e+38); received " +
                             "moving_variance = " + num(t[c]) + ", epsilon = " + num(epsilon));
      }
    }
  }
}

}  // namespace

bool BatchNormalization::synchronizes(Mode mode) const noexcept {
  return options_.synchronized && communicator_ && communicator_->size() > 1 &&
         mode == Mode::training && uses_batch_statistics(mode);
}

void BatchNormalization::check_batch_statistics() {
  // A non-finite batch is rejected before it can reach the moving statistics. The float64
  // mean of float32 values is finite iff they all are; the variance can also overflow float32.
  if (!used_mean_.all_finite() || !used_variance_.all_finite()) {
    const auto m = used_mean_.first_non_finite();
    const auto c = m >= 0 ? m : used_variance_.first_non_finite();
    const std::string what =
        m < 0 ? "the batch variance overflows float32 (values too large; batch_variance = " +
                    num(used_variance_[c]) + ")"
              : "the batch contains NaN or Inf (batch_mean = " + num(used_mean_[c]) + ")";
    throw NonFiniteError(label() + ": input x, channel " + std::to_string(c) + ": " + what +
                         "; the batch is rejected and moving statistics left unchanged");
  }
  for (std::int64_t c = 0; c < channels_; ++c) {
    if (!std::isfinite(used_variance_[c] + options_.epsilon)) {
      throw NonFiniteError(label() + ": input x, channel " + std::to_string(c) +
                           ": batch_variance + epsilon overflows float32 (batch_variance = " +
                           num(used_variance_[c]) + ", epsilon = " + num(options_.epsilon) +
                           "); the batch is rejected and moving statistics left unchanged");
    }
  }
}

void BatchNormalization::update_moving_statistics(Mode mode, double n) {
  if (mode != Mode::training || !trainable() || !options_.track_moving_statistics) return;
  const float variance_scale =
      options_.unbiased_moving_variance && n > 1.0 ? static_cast<float>(n / (n - 1.0)) : 1.0f;
  const double momentum = options_.cumulative_moving_average
                              ? 1.0 - 1.0 / static_cast<double>(num_batches_tracked_ + 1)
                              : options_.momentum;
  // E.g. PyTorch's n / (n - 1) on a batch variance near float32's limit: reject, untouched.
  if (const auto c = detail::first_moving_overflow(
          channels_, used_mean_.data(), used_variance_.data(), momentum, variance_scale,
          moving_mean_->value.data(), moving_variance_->value.data());
      c >= 0) {
    throw NonFiniteError(label() + ": input x, channel " + std::to_string(c) +
                         ": the moving-statistics update overflows float32 (batch_mean = " +
                         num(used_mean_[c]) + ", batch_variance = " + num(used_variance_[c]) +
                         "); the batch is rejected and moving statistics left unchanged");
  }
  ++num_batches_tracked_;
  kernels::batch_norm_update_moving(channels_, used_mean_.data(), used_variance_.data(), momentum,
                                    variance_scale, moving_mean_->value.data(),
                                    moving_variance_->value.data());
}

void BatchNormalization::exchange_statistics(const Tensor* x) {
  const auto c_n = static_cast<std::size_t>(channels_);
  const std::size_t record = 1 + 2 * c_n;  // count, mean[C], M2[C]
  sync_local_.assign(record, 0.0);
  if (x && x->size() > 0) {
    const auto d = detail::dims_of(x->shape(), axis_);
    sync_local_[0] = static_cast<double>(d.count());
    kernels::batch_norm_partial_moments(d, x->data(), &sync_local_[1], &sync_local_[1 + c_n]);
  }
  const int ranks = communicator_->size();
  sync_all_.resize(record * static_cast<std::size_t>(ranks));
  communicator_->all_gather(sync_local_, sync_all_);
  // Left fold in rank order: the same operations, hence the same bits, on every rank.
  sync_merged_.assign(2 * c_n, 0.0);
  double n = 0.0;
  for (int r = 0; r < ranks; ++r) {
    const double* part = &sync_all_[record * static_cast<std::size_t>(r)];
    kernels::batch_norm_merge_moments(channels_, n, sync_merged_.data(), &sync_merged_[c_n],
                                      part[0], part + 1, part + 1 + c_n);
    n += part[0];
  }
  sync_count_ = n;
  if (n == 0.0) {
    throw ShapeError(label() + ": every rank's batch is empty (synchronized statistics of 0 "
                               "values)");
  }
  for (std::size_t c = 0; c < c_n; ++c) {
    used_mean_[static_cast<std::int64_t>(c)] = static_cast<float>(sync_merged_[c]);
    used_variance_[static_cast<std::int64_t>(c)] = static_cast<float>(sync_merged_[c_n + c] / n);
  }
}

void BatchNormalization::forward_empty(Mode mode) {
  synced_forward_ = synchronizes(mode);
  if (!synced_forward_) return;
  check_weights([this] { return label(); }, {gamma_, beta_, moving_mean_, moving_variance_},
                moving_variance_, options_.epsilon);
  exchange_statistics(nullptr);
  check_batch_statistics();
  update_moving_statistics(mode, sync_count_);
}

void BatchNormalization::backward_empty() {
  if (!synced_forward_) return;
  sync_local_.assign(2 * static_cast<std::size_t>(channels_), 0.0);
  communicator_->all_reduce_sum(sync_local_);
}

void BatchNormalization::mask_by_output(const Tensor& dy) {
  // The fused ReLU's gradient mask: y = max(pre, 0) > 0 exactly where pre > 0.
  masked_dy_.resize(dy.shape());
  // Distinct buffers (restrict): a branch-free select the compiler vectorizes; a branch per
  // element mispredicts on ReLU's random signs.
  const float* __restrict y = output_.data();
  const float* __restrict g = dy.data();
  float* __restrict out = masked_dy_.data();
  for (std::int64_t i = 0; i < dy.size(); ++i) {
    const float gi = g[i];  // loaded unconditionally, so the select needs no branch
    out[i] = y[i] > 0.0f ? gi : 0.0f;
  }
}

void BatchNormalization::synchronized_backward(const Tensor& g, float* dx, float* dgamma,
                                               float* dbeta) {
  const Tensor& x = *last_input_;
  const auto d = detail::dims_of(x.shape(), axis_);
  const auto c_n = static_cast<std::size_t>(channels_);
  sync_local_.resize(2 * c_n);  // sum_dy[C], sum_dy_xhat[C]
  sync_scratch_.resize(3 * c_n);
  double* sum_dy = sync_local_.data();
  double* sum_dy_xhat = sync_local_.data() + c_n;
  kernels::batch_norm_backward_sums(d, x.data(), g.data(), used_mean_.data(),
                                    used_variance_.data(), options_.epsilon, sum_dy, sum_dy_xhat,
                                    sync_scratch_.data());
  // This rank's share of the weight gradients (the gradient all-reduce adds the shares).
  for (std::size_t c = 0; c < c_n; ++c) {
    if (dbeta) dbeta[c] = static_cast<float>(sum_dy[c]);
    if (dgamma) dgamma[c] = static_cast<float>(sum_dy_xhat[c]);
  }
  communicator_->all_reduce_sum(sync_local_);
  if (!dx) return;
  kernels::batch_norm_backward_dx_from_sums(
      d, x.data(), g.data(), used_mean_.data(), used_variance_.data(),
      gamma_ ? gamma_->value.data() : nullptr, options_.epsilon, sync_count_, sum_dy, sum_dy_xhat,
      sync_scratch_.data(), dx);
}

void BatchNormalization::do_forward(const Tensor& x, Mode mode, Tensor& y) {
  check_weights([this] { return label(); }, {gamma_, beta_, moving_mean_, moving_variance_},
                moving_variance_, options_.epsilon);
  const auto d = detail::dims_of(x.shape(), axis_);
  y.resize(x.shape());
  used_batch_statistics_ = uses_batch_statistics(mode);
  synced_forward_ = synchronizes(mode);
  const float* gamma = gamma_ ? gamma_->value.data() : nullptr;
  const float* beta = beta_ ? beta_->value.data() : nullptr;
  shortcut_ = std::exchange(pending_shortcut_, nullptr);
  // Normalization with given statistics (moving, or synchronized over every rank).
  const auto normalize = [&](const float* mean, const float* variance) {
    if (shortcut_) {
      kernels::batch_norm_forward_add_relu(d, x.data(), shortcut_->data(), mean, variance, gamma,
                                           beta, options_.epsilon, y.data());
      return;
    }
    (fused_relu_ ? kernels::batch_norm_forward_relu : kernels::batch_norm_forward)(
        d, x.data(), mean, variance, gamma, beta, options_.epsilon, y.data());
  };
  if (!used_batch_statistics_) {
    normalize(moving_mean_->value.data(), moving_variance_->value.data());
    return;
  }
  const bool single_value =
      (synced_forward_ ? (exchange_statistics(&x), sync_count_) : d.count()) == 1;
  if (single_value && options_.error_on_single_value && mode == Mode::training) {
    throw ValueError(
        label() + ": expected more than 1 value per channel when training; received input shape " +
        x.shape().str());
  }
  if (synced_forward_) {
    check_batch_statistics();
    normalize(used_mean_.data(), used_variance_.data());
  } else {
    // Statistics and normalization in one call (three passes over memory); y is only returned
    // if the checks below pass.
    if (shortcut_) {
      kernels::batch_norm_forward_training_add_relu(d, x.data(), shortcut_->data(), gamma, beta,
                                                    options_.epsilon, used_mean_.data(),
                                                    used_variance_.data(), y.data());
    } else {
      kernels::batch_norm_forward_training(d, x.data(), gamma, beta, options_.epsilon,
                                           fused_relu_, used_mean_.data(), used_variance_.data(),
                                           y.data());
    }
    check_batch_statistics();
  }
  update_moving_statistics(mode, synced_forward_ ? sync_count_ : static_cast<double>(d.count()));
}

const Tensor& BatchNormalization::forward_inputs(std::span<const Tensor* const> xs, Mode mode) {
  if (xs.size() == 2 && fused_add_relu_) {
    if (!(xs[1]->shape() == xs[0]->shape()))
      check_same_shape(xs[0]->shape(), xs[1]->shape(), label() + " shortcut");
    pending_shortcut_ = xs[1];  // taken by do_forward; the model keeps it alive for backward
    try {
      return forward(*xs[0], mode);
    } catch (...) {
      pending_shortcut_ = nullptr;
      throw;
    }
  }
  return Layer::forward_inputs(xs, mode);
}

void BatchNormalization::backward_inputs(const Tensor& dy, std::span<const bool> need_dx,
                                         std::span<const Tensor*> dxs) {
  if (dxs.size() != 2 || !shortcut_) {
    Layer::backward_inputs(dy, need_dx, dxs);
    return;
  }
  if (!last_input_) throw ValueError(label() + ": backward called before forward");
  const Tensor& x = *last_input_;
  if (!(x.shape() == dy.shape())) check_same_shape(x.shape(), dy.shape(), label() + " backward");
  const auto d = detail::dims_of(x.shape(), axis_);
  const float* mean = used_batch_statistics_ ? used_mean_.data() : moving_mean_->value.data();
  const float* variance =
      used_batch_statistics_ ? used_variance_.data() : moving_variance_->value.data();
  const bool grads = trainable();
  if (need_dx[0]) dx_fused_.resize(x.shape());
  if (need_dx[1]) dshortcut_.resize(x.shape());
  if (synced_forward_) {
    // g = dy where relu(bn + shortcut) > 0: the Add passes g to the shortcut unchanged.
    mask_by_output(dy);
    if (need_dx[1]) dshortcut_ = masked_dy_;
    synchronized_backward(masked_dy_, need_dx[0] ? dx_fused_.data() : nullptr,
                          grads && gamma_ ? gamma_->gradient.data() : nullptr,
                          grads && beta_ ? beta_->gradient.data() : nullptr);
    dxs[0] = need_dx[0] ? &dx_fused_ : nullptr;
    dxs[1] = need_dx[1] ? &dshortcut_ : nullptr;
    return;
  }
  kernels::batch_norm_add_relu_backward(
      d, x.data(), shortcut_->data(), dy.data(), mean, variance,
      gamma_ ? gamma_->value.data() : nullptr, beta_ ? beta_->value.data() : nullptr,
      options_.epsilon, used_batch_statistics_, need_dx[0] ? dx_fused_.data() : nullptr,
      need_dx[1] ? dshortcut_.data() : nullptr, grads && gamma_ ? gamma_->gradient.data() : nullptr,
      grads && beta_ ? beta_->gradient.data() : nullptr);
  dxs[0] = need_dx[0] ? &dx_fused_ : nullptr;
  dxs[1] = need_dx[1] ? &dshortcut_ : nullptr;
}

void BatchNormalization::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  const Tensor& x = *last_input_;
  const auto d = detail::dims_of(x.shape(), axis_);
  const float* mean = used_batch_statistics_ ? used_mean_.data() : moving_mean_->value.data();
  const float* variance =
      used_batch_statistics_ ? used_variance_.data() : moving_variance_->value.data();
  if (compute_dx) dx.resize(x.shape());
  const bool grads = trainable();
  const float* gamma = gamma_ ? gamma_->value.data() : nullptr;
  float* dx_out = compute_dx ? dx.data() : nullptr;
  float* dgamma = grads && gamma_ ? gamma_->gradient.data() : nullptr;
  float* dbeta = grads && beta_ ? beta_->gradient.data() : nullptr;
  if (synced_forward_) {
    if (fused_relu_) mask_by_output(dy);
    synchronized_backward(fused_relu_ ? masked_dy_ : dy, dx_out, dgamma, dbeta);
    return;
  }
  if (fused_relu_) {
    kernels::batch_norm_relu_backward(d, x.data(), dy.data(), mean, variance, gamma,
                                      beta_ ? beta_->value.data() : nullptr, options_.epsilon,
                                      used_batch_statistics_, dx_out, dgamma, dbeta);
  } else {
    kernels::batch_norm_backward(d, x.data(), dy.data(), mean, variance, gamma, options_.epsilon,
                                 used_batch_statistics_, dx_out, dgamma, dbeta);
  }
}

}  // namespace bnorm
