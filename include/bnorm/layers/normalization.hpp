// bnorm/layers/normalization.hpp — Keras 3 keras.layers.Normalization (a preprocessing layer):
//   y = (x - mean) / max(sqrt(variance), 1e-7)      (1e-7 = keras.backend.epsilon())
//   invert=true: y = mean + x * max(sqrt(variance), 1e-7)
// mean and variance are per index of the kept axes `axis` (full-tensor axes, the batch is axis 0;
// default -1, the channels; empty = Keras's axis=None, one value for everything).
//
// Two modes, as Keras 3:
// - mean and variance given: fixed statistics, no weights at all;
// - not given: non-trainable weights mean (zeros), variance (ones) and count, set by adapt().
//   Keras's count is an int scalar kept "for backwards compatibility" and never updated by adapt;
//   bnorm keeps it as a float of shape (1,) (bnorm tensors have rank >= 1), likewise 0.
// Kept axes must be adjacent (e.g. -1, or (1, 2) of (N, H, W, C)); others are a ValueError.
#pragma once

#include <vector>

#include "bnorm/layers/layer.hpp"

namespace bnorm {

class Normalization final : public Layer {
 public:
  struct Options {
    std::vector<int> axis{-1};
    std::vector<float> mean;      // empty: adapt mode (weights)
    std::vector<float> variance;  // given together with mean: 1 value or one per kept index
    bool invert = false;
  };
  Normalization() : Normalization(Options{}) {}
  // ValueError when only one of mean/variance is given, a variance is negative or a value is not
  // finite.
  explicit Normalization(Options options);
  std::string class_name() const override { return "Normalization"; }
  Shape output_shape(const Shape& input_shape) const override { return input_shape; }
  const Options& options() const noexcept { return options_; }
  // Whether mean/variance came from the constructor (no weights).
  bool fixed_statistics() const noexcept { return !options_.mean.empty(); }

  // Keras adapt(): mean and biased variance of `data` (a batch, dim 0 first) over every axis but
  // the kept ones, computed in float64 and rounded once into the mean/variance weights. Builds the
  // layer for data's per-sample shape when it is not built; otherwise the kept dims must match.
  // ValueError in fixed-statistics mode or for empty data; ShapeError for mismatched data.
  void adapt(const Tensor& data);

 protected:
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override {
    return std::make_unique<Normalization>(options_);
  }

 private:
  struct View {
    std::int64_t outer, channels, inner;
  };
  // [outer, kept, inner] of a full batch shape (the batch is part of outer).
  View view_of(const Shape& full_shape) const;

  Options options_;
  int first_kept_ = 0,
      last_kept_ = -1;  // kept full-tensor axes [first, last]; empty when last < first
  Variable* mean_ = nullptr;
  Variable* variance_ = nullptr;
  std::vector<float> fixed_mean_;  // per kept index, fixed-statistics mode
  std::vector<float> denom_;       // max(sqrt(variance), eps) of the last forward
};

}  // namespace bnorm
