#include "bnorm/layers/dropout.hpp"

#include <cmath>

#include "bnorm/core/error.hpp"
#include "kernels/elementwise.hpp"

namespace bnorm {

namespace {
const Shape kRank1{1};

std::string noise_text(const std::vector<std::optional<std::int64_t>>& n) {
  std::string s = "(";
  for (std::size_t i = 0; i < n.size(); ++i)
    s += (i ? ", " : "") + (n[i] ? std::to_string(*n[i]) : std::string("None"));
  return s + ")";
}
}  // namespace

namespace {
Dropout::Options rate_only(float rate) {
  Dropout::Options o;
  o.rate = rate;
  return o;
}
}  // namespace

Dropout::Dropout(float rate) : Dropout(rate_only(rate)) {}

Dropout::Dropout(Options options) : Layer("dropout"), options_(std::move(options)) {
  const float rate = options_.rate;
  if (!(rate >= 0.0f && rate < 1.0f)) {
    throw ValueError("Dropout: rate must be in [0, 1); received " + std::to_string(rate));
  }
  const auto& n = options_.noise_shape;
  if (!n.empty()) {
    if (n.size() < 2 || n.size() > static_cast<std::size_t>(Shape::kMaxRank)) {
      throw ValueError(
          "Dropout: noise_shape must have one entry per input axis, batch first (2 to " +
          std::to_string(Shape::kMaxRank) + "); received " + noise_text(n));
    }
    for (const auto& d : n)
      if (d && *d < 1)
        throw ValueError("Dropout: noise_shape entries must be None or >= 1; received " +
                         noise_text(n));
  }
}

void Dropout::do_build(const Shape& input_shape, Random& rng) {
  rng_ = rng.split();  // split even with a seed: the model's other layers draw the same either way
  if (options_.seed) rng_ = Random(*options_.seed);
  const auto& n = options_.noise_shape;
  if (n.empty()) return;
  if (static_cast<int>(n.size()) != input_shape.rank() + 1) {
    throw ShapeError(label() + ": noise_shape " + noise_text(n) + " has " +
                     std::to_string(n.size()) + " entries; the input (None, " +
                     input_shape.str().substr(1) + " has " +
                     std::to_string(input_shape.rank() + 1));
  }
  for (int a = 1; a <= input_shape.rank(); ++a) {
    const auto& d = n[static_cast<std::size_t>(a)];
    if (d && *d != 1 && *d != input_shape[a - 1]) {
      throw ShapeError(label() + ": noise_shape " + noise_text(n) + " entry " + std::to_string(a) +
                       " must be None, 1 or " + std::to_string(input_shape[a - 1]));
    }
  }
}

bool Dropout::per_value_mask(std::int64_t batch) const noexcept {
  const auto& n = options_.noise_shape;
  if (n.empty()) return true;
  const Shape& in = input_shape();
  if (n[0] && *n[0] != batch) return false;
  for (int a = 1; a <= in.rank(); ++a) {
    const auto& d = n[static_cast<std::size_t>(a)];
    if (d && *d != in[a - 1]) return false;
  }
  return true;
}

void Dropout::do_forward(const Tensor& x, Mode mode, Tensor& y) {
  y.resize(x.shape());
  const float rate = options_.rate;
  last_training_ = mode == Mode::training && rate > 0.0f;
  if (!last_training_) {
    std::copy(x.data(), x.data() + x.size(), y.data());
    return;
  }
  mask_.resize(x.shape());
  const float keep_scale = 1.0f / (1.0f - rate);
  const std::int64_t batch = x.shape()[0];
  // One key per training step; the mask is drawn in fixed blocks, each its own stream from the
  // key (kernels::dropout_forward), in parallel with the same result at any thread count.
  const std::uint64_t key = rng_.next_u64();
  if (per_value_mask(batch)) {
    kernels::dropout_forward(x.size(), rate, keep_scale, key, x.data(), mask_.data(), y.data(),
                             batch_offset_ * (x.size() / batch));
    return;
  }
  // One draw per element of the concrete noise shape (row-major), broadcast over the axes where
  // noise_shape is 1.
  const auto& n = options_.noise_shape;
  if (n[0] && *n[0] != 1 && *n[0] != batch) {
    throw ShapeError(label() + ": noise_shape " + noise_text(n) + " fixes the batch at " +
                     std::to_string(*n[0]) + "; received a batch of " + std::to_string(batch));
  }
  const int rank = x.rank();
  std::int64_t noise_dims[Shape::kMaxRank], noise_strides[Shape::kMaxRank];
  std::int64_t noise_size = 1;
  for (int a = rank - 1; a >= 0; --a) {
    const auto& d = n[static_cast<std::size_t>(a)];
    noise_dims[a] = d ? *d : x.shape()[a];
    noise_strides[a] = noise_dims[a] == 1 ? 0 : noise_size;
    noise_size *= noise_dims[a];
  }
  noise_.resize_like(kRank1, 0, noise_size);  // no allocation once the capacity suffices
  // Noise per sample (a batch axis that is not 1) starts at this batch's place in the global one.
  const std::int64_t first = noise_dims[0] == 1 ? 0 : batch_offset_ * (noise_size / noise_dims[0]);
  kernels::dropout_forward(noise_size, rate, keep_scale, key, nullptr, noise_.data(), nullptr,
                           first);
  // Walk x in row-major order with a multi-index; the noise offset follows the broadcast strides.
  std::int64_t index[Shape::kMaxRank] = {};
  std::int64_t offset = 0;
  for (std::int64_t i = 0; i < x.size(); ++i) {
    mask_[i] = noise_[offset];
    y[i] = x[i] * mask_[i];
    for (int a = rank - 1; a >= 0; --a) {
      offset += noise_strides[a];
      if (++index[a] < x.shape()[a]) break;
      offset -= noise_strides[a] * index[a];
      index[a] = 0;
    }
  }
}

void Dropout::forward_skipped(Mode mode) {
  if (mode == Mode::training && options_.rate > 0.0f) rng_.next_u64();  // do_forward's key
}

void Dropout::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  if (!compute_dx) return;
  dx.resize(dy.shape());
  if (last_training_) {
    kernels::dropout_backward(dy.size(), mask_.data(), dy.data(), dx.data());
  } else {
    std::copy(dy.data(), dy.data() + dy.size(), dx.data());
  }
}

}  // namespace bnorm
