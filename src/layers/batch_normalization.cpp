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
  const double rm = options_.renorm_momentum;
  if (!(rm >= 0.0 && rm <= 1.0)) {
    throw ValueError("BatchNormalization: renorm_momentum must be in [0, 1]; received " + num(rm));
  }
  const auto& rmax = options_.renorm_rmax;
  const auto& rmin = options_.renorm_rmin;
  const auto& dmax = options_.renorm_dmax;
  if ((rmax && !std::isfinite(*rmax)) || (rmin && !std::isfinite(*rmin)) ||
      (dmax && !std::isfinite(*dmax))) {
    throw ValueError("BatchNormalization: renorm_clipping values must be finite numbers");
  }
  if (rmax && rmin && *rmax < *rmin) {
    throw ValueError(
        "BatchNormalization: renorm_clipping rmax should be greater than rmin; "
        "received rmax=" +
        num(*rmax) + ", rmin=" + num(*rmin));
  }
  if (dmax && *dmax < 0.0) {
    throw ValueError(
        "BatchNormalization: renorm_clipping dmax should be non-negative; received "
        "dmax=" +
        num(*dmax));
  }
  if (options_.virtual_batch_size < 0) {
    throw ValueError(
        "BatchNormalization: virtual_batch_size must be a positive integer (or "
        "none); received " +
        std::to_string(options_.virtual_batch_size));
  }
  if (options_.renorm && !options_.track_moving_statistics) {
    throw ValueError(
        "BatchNormalization: renorm needs moving statistics (track_moving_statistics)");
  }
  const int family = (options_.renorm ? 1 : 0) + (options_.virtual_batch_size > 0 ? 1 : 0) +
                     (options_.synchronized ? 1 : 0);
  if (family > 1) {
    throw ValueError(
        "BatchNormalization: renorm, virtual_batch_size and synchronized cannot be combined; "
        "received renorm=" +
        std::string(options_.renorm ? "True" : "False") +
        ", virtual_batch_size=" + std::to_string(options_.virtual_batch_size) +
        ", synchronized=" + (options_.synchronized ? "True" : "False"));
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
  if (options_.renorm) {
    // Keras: the stddevs start at sqrt of the moving-variance initializer, renorm_mean at the
    // moving-mean one (each initializer drawn again, as Keras clones it).
    const auto sqrt_of = [&](Variable& v) {
      options_.moving_variance_initializer.apply(v.value, rng, channels_, channels_);
      for (float& f : v.value.values()) f = std::sqrt(f);
    };
    moving_stddev_ = &add_weight("moving_stddev", c, false);
    sqrt_of(*moving_stddev_);
    renorm_mean_ = &add_weight("renorm_mean", c, false);
    options_.moving_mean_initializer.apply(renorm_mean_->value, rng, channels_, channels_);
    renorm_stddev_ = &add_weight("renorm_stddev", c, false);
    sqrt_of(*renorm_stddev_);
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

void BatchNormalization::check_state() const {
  check_weights(
      [this] { return label(); },
      {gamma_, beta_, moving_mean_, moving_variance_, moving_stddev_, renorm_mean_, renorm_stddev_},
      moving_variance_, options_.epsilon);
}

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
    throw ShapeError(label() +
                     ": every rank's batch is empty (synchronized statistics of 0 "
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
  check_state();
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
  kernels::batch_norm_backward_sums(d, x.data(), g.data(), used_mean_.data(), used_variance_.data(),
                                    options_.epsilon, sum_dy, sum_dy_xhat, sync_scratch_.data());
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
  check_state();
  const auto d = detail::dims_of(x.shape(), axis_);
  y.resize(x.shape());
  used_batch_statistics_ = uses_batch_statistics(mode);
  synced_forward_ = synchronizes(mode);
  renormalized_ = options_.renorm && used_batch_statistics_ && mode == Mode::training;
  ghost_forward_ =
      options_.virtual_batch_size > 0 && used_batch_statistics_ && mode == Mode::training;
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
  if (ghost_forward_) {
    ghost_forward(x, y);
    check_batch_statistics();
    update_moving_statistics(mode, static_cast<double>(d.count() / x.shape()[0]) *
                                       static_cast<double>(options_.virtual_batch_size));
    return;
  }
  if (renormalized_) {
    kernels::batch_norm_moments(d, x.data(), used_mean_.data(), used_variance_.data());
    check_batch_statistics();
    renorm_corrections();
    gamma = effective_gamma_.data();
    beta = effective_beta_.data();
    normalize(used_mean_.data(), used_variance_.data());
    update_renorm_statistics(mode);
    return;
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
      kernels::batch_norm_forward_training(d, x.data(), gamma, beta, options_.epsilon, fused_relu_,
                                           used_mean_.data(), used_variance_.data(), y.data());
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
  float* dgamma = grads && gamma_ ? gamma_->gradient.data() : nullptr;
  float* dbeta = grads && beta_ ? beta_->gradient.data() : nullptr;
  if (renormalized_ && dgamma) {
    renorm_sum_dy_.resize(Shape{channels_});
    dbeta = renorm_sum_dy_.data();
  }
  kernels::batch_norm_add_relu_backward(
      d, x.data(), shortcut_->data(), dy.data(), mean, variance, applied_gamma(), applied_beta(),
      options_.epsilon, used_batch_statistics_, need_dx[0] ? dx_fused_.data() : nullptr,
      need_dx[1] ? dshortcut_.data() : nullptr, dgamma, dbeta);
  if (renormalized_ && dgamma) renorm_gradients(dgamma, dbeta);
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
  float* dx_out = compute_dx ? dx.data() : nullptr;
  float* dgamma = grads && gamma_ ? gamma_->gradient.data() : nullptr;
  float* dbeta = grads && beta_ ? beta_->gradient.data() : nullptr;
  if (synced_forward_) {
    if (fused_relu_) mask_by_output(dy);
    synchronized_backward(fused_relu_ ? masked_dy_ : dy, dx_out, dgamma, dbeta);
    return;
  }
  if (ghost_forward_) {
    ghost_backward(dy, dx_out, dgamma, dbeta);
    return;
  }
  if (renormalized_ && dgamma) {
    renorm_sum_dy_.resize(Shape{channels_});
    dbeta = renorm_sum_dy_.data();  // sum(dy): beta's gradient, and d's share of gamma's
  }
  if (fused_relu_) {
    kernels::batch_norm_relu_backward(d, x.data(), dy.data(), mean, variance, applied_gamma(),
                                      applied_beta(), options_.epsilon, used_batch_statistics_,
                                      dx_out, dgamma, dbeta);
  } else {
    kernels::batch_norm_backward(d, x.data(), dy.data(), mean, variance, applied_gamma(),
                                 options_.epsilon, used_batch_statistics_, dx_out, dgamma, dbeta);
  }
  if (renormalized_ && dgamma) renorm_gradients(dgamma, dbeta);
}

// --- Batch Renormalization ---------------------------------------------------------------------

const float* BatchNormalization::applied_gamma() const noexcept {
  if (renormalized_) return effective_gamma_.data();
  return gamma_ ? gamma_->value.data() : nullptr;
}

const float* BatchNormalization::applied_beta() const noexcept {
  if (renormalized_) return effective_beta_.data();
  return beta_ ? beta_->value.data() : nullptr;
}

void BatchNormalization::renorm_corrections() {
  // Keras 3's arithmetic, in float32: r and d from the renorm statistics before this batch's
  // update, clipped, composed with gamma and beta.
  const Shape c{channels_};
  renorm_r_.resize(c);
  renorm_d_.resize(c);
  effective_gamma_.resize(c);
  effective_beta_.resize(c);
  const float eps = options_.epsilon;
  const float floor = std::sqrt(eps);
  for (std::int64_t i = 0; i < channels_; ++i) {
    const float stddev = std::sqrt(used_variance_[i] + eps);
    const float renorm_stddev = std::max(renorm_stddev_->value[i], floor);
    float r = stddev / renorm_stddev;
    float dd = (used_mean_[i] - renorm_mean_->value[i]) / renorm_stddev;
    if (options_.renorm_rmin) r = std::max(r, static_cast<float>(*options_.renorm_rmin));
    if (options_.renorm_rmax) r = std::min(r, static_cast<float>(*options_.renorm_rmax));
    if (options_.renorm_dmax) {
      const auto dmax = static_cast<float>(*options_.renorm_dmax);
      dd = std::min(std::max(dd, -dmax), dmax);
    }
    renorm_r_[i] = r;
    renorm_d_[i] = dd;
    const float g = gamma_ ? gamma_->value[i] : 1.0f;
    effective_gamma_[i] = r * g;
    effective_beta_[i] = dd * g + (beta_ ? beta_->value[i] : 0.0f);
  }
}

void BatchNormalization::update_renorm_statistics(Mode mode) {
  if (mode != Mode::training || !trainable()) return;
  // Keras: momentum and 1 - momentum are Python floats, each rounded to float32.
  const auto rm = static_cast<float>(options_.renorm_momentum);
  const auto rm1 = static_cast<float>(1.0 - options_.renorm_momentum);
  const auto m = static_cast<float>(options_.momentum);
  const auto m1 = static_cast<float>(1.0 - options_.momentum);
  const float eps = options_.epsilon;
  for (std::int64_t i = 0; i < channels_; ++i) {
    const float stddev = std::sqrt(used_variance_[i] + eps);
    renorm_mean_->value[i] = renorm_mean_->value[i] * rm + used_mean_[i] * rm1;
    renorm_stddev_->value[i] = renorm_stddev_->value[i] * rm + stddev * rm1;
    moving_mean_->value[i] = moving_mean_->value[i] * m + used_mean_[i] * m1;
    const float s = moving_stddev_->value[i] * m + stddev * m1;
    moving_stddev_->value[i] = s;
    moving_variance_->value[i] = std::max(s * s - eps, 0.0f);
  }
  ++num_batches_tracked_;
}

void BatchNormalization::renorm_gradients(float* dgamma, const float* sum_dy) {
  // y = xhat * (r gamma) + (d gamma + beta) with r, d constants: dL/dgamma = r sum(dy xhat) +
  // d sum(dy); the kernel left sum(dy xhat) in dgamma.
  for (std::int64_t i = 0; i < channels_; ++i)
    dgamma[i] = renorm_r_[i] * dgamma[i] + renorm_d_[i] * sum_dy[i];
  if (beta_ && trainable() && sum_dy != beta_->gradient.data())
    std::copy(sum_dy, sum_dy + channels_, beta_->gradient.data());
}

// --- Ghost BN -----------------------------------------------------------------------------------

namespace {
// Copies sample rows g, g + stride, g + 2 stride, ... (count of them) of `from` into `to`
// (gather) or back (scatter).
void gather_strided(const float* from, std::int64_t row, std::int64_t g, std::int64_t stride,
                    std::int64_t count, float* to) {
  for (std::int64_t a = 0; a < count; ++a)
    std::copy(from + (a * stride + g) * row, from + (a * stride + g + 1) * row, to + a * row);
}
void scatter_strided(const float* from, std::int64_t row, std::int64_t g, std::int64_t stride,
                     std::int64_t count, float* to) {
  for (std::int64_t a = 0; a < count; ++a)
    std::copy(from + a * row, from + (a + 1) * row, to + (a * stride + g) * row);
}
}  // namespace

void BatchNormalization::ghost_forward(const Tensor& x, Tensor& y) {
  const std::int64_t n = x.shape()[0], v = options_.virtual_batch_size;
  if (n % v != 0) {
    throw ShapeError(label() + ": virtual_batch_size " + std::to_string(v) +
                     " must divide the batch size; received a batch of " + std::to_string(n));
  }
  const std::int64_t ghosts = n / v, row = x.size() / n;
  std::vector<std::int64_t> dims = x.shape().dims();
  dims[0] = v;
  const Shape ghost_shape{dims};
  const auto d = detail::dims_of(ghost_shape, axis_);
  ghost_x_.resize(ghost_shape);
  ghost_y_.resize(ghost_shape);
  ghost_mean_.resize(Shape{ghosts, channels_});
  ghost_variance_.resize(Shape{ghosts, channels_});
  const float* gamma = gamma_ ? gamma_->value.data() : nullptr;
  const float* beta = beta_ ? beta_->value.data() : nullptr;
  for (std::int64_t g = 0; g < ghosts; ++g) {
    gather_strided(x.data(), row, g, ghosts, v, ghost_x_.data());
    kernels::batch_norm_forward_training(d, ghost_x_.data(), gamma, beta, options_.epsilon, false,
                                         ghost_mean_.data() + g * channels_,
                                         ghost_variance_.data() + g * channels_, ghost_y_.data());
    scatter_strided(ghost_y_.data(), row, g, ghosts, v, y.data());
  }
  // The moving statistics move towards the mean of the ghost batches' means and variances.
  for (std::int64_t c = 0; c < channels_; ++c) {
    double mean = 0.0, variance = 0.0;
    for (std::int64_t g = 0; g < ghosts; ++g) {
      mean += ghost_mean_[g * channels_ + c];
      variance += ghost_variance_[g * channels_ + c];
    }
    used_mean_[c] = static_cast<float>(mean / static_cast<double>(ghosts));
    used_variance_[c] = static_cast<float>(variance / static_cast<double>(ghosts));
  }
}

void BatchNormalization::ghost_backward(const Tensor& dy, float* dx, float* dgamma, float* dbeta) {
  const Tensor& x = *last_input_;
  const std::int64_t n = x.shape()[0], v = options_.virtual_batch_size, ghosts = n / v;
  const std::int64_t row = x.size() / n;
  const auto d = detail::dims_of(ghost_x_.shape(), axis_);
  ghost_dy_.resize(ghost_x_.shape());
  ghost_dx_.resize(ghost_x_.shape());
  ghost_dgamma_.resize(Shape{channels_});
  ghost_dbeta_.resize(Shape{channels_});
  // float64 sums over the ghost batches (sync_scratch_: 2C doubles, reused every step).
  sync_scratch_.assign(2 * static_cast<std::size_t>(channels_), 0.0);
  double* sum_dgamma = sync_scratch_.data();
  double* sum_dbeta = sync_scratch_.data() + channels_;
  const float* gamma = gamma_ ? gamma_->value.data() : nullptr;
  for (std::int64_t g = 0; g < ghosts; ++g) {
    gather_strided(x.data(), row, g, ghosts, v, ghost_x_.data());
    gather_strided(dy.data(), row, g, ghosts, v, ghost_dy_.data());
    kernels::batch_norm_backward(
        d, ghost_x_.data(), ghost_dy_.data(), ghost_mean_.data() + g * channels_,
        ghost_variance_.data() + g * channels_, gamma, options_.epsilon, true,
        dx ? ghost_dx_.data() : nullptr, ghost_dgamma_.data(), ghost_dbeta_.data());
    if (dx) scatter_strided(ghost_dx_.data(), row, g, ghosts, v, dx);
    for (std::int64_t c = 0; c < channels_; ++c) {
      sum_dgamma[c] += ghost_dgamma_[c];
      sum_dbeta[c] += ghost_dbeta_[c];
    }
  }
  for (std::int64_t c = 0; c < channels_; ++c) {
    if (dgamma) dgamma[c] = static_cast<float>(sum_dgamma[c]);
    if (dbeta) dbeta[c] = static_cast<float>(sum_dbeta[c]);
  }
}

}  // namespace bnorm
