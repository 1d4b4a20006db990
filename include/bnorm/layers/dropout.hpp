// bnorm/layers/dropout.hpp — Keras Dropout: in training, zero each value with probability
// `rate` and scale the rest by 1 / (1 - rate); in inference, identity.
//
// noise_shape (Keras): the shape of the mask, one entry per axis of the full input including the
// batch; None (nullopt) takes the input's size, 1 shares one draw along that axis. For example
// (None, 1, 1, C) on (N, H, W, C) drops whole channels per sample (SpatialDropout2D). Without
// noise_shape, or with every entry None, the mask is drawn per value in row-major order, so
// the results are the same bits as before noise_shape existed.
// seed (Keras): a fixed seed for this layer's stream; without it the stream is split from the
// model's generator at build.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "bnorm/layers/layer.hpp"

namespace bnorm {

class Dropout final : public Layer {
 public:
  struct Options {
    float rate = 0.0f;
    // Empty: no noise_shape (Keras None). Otherwise rank of the full input, batch first.
    std::vector<std::optional<std::int64_t>> noise_shape;
    std::optional<std::uint64_t> seed;
  };
  explicit Dropout(float rate);  // ValueError unless 0 <= rate < 1
  // ValueError also for a noise_shape entry < 1 or of rank outside 2..5.
  explicit Dropout(Options options);
  std::string class_name() const override { return "Dropout"; }
  Shape output_shape(const Shape& input_shape) const override { return input_shape; }
  float rate() const noexcept { return options_.rate; }
  const Options& options() const noexcept { return options_; }
  // One draw per training forward: the key of that step's mask.
  using Layer::random_stream;
  const Random* random_stream() const noexcept override { return &rng_; }
  void set_batch_offset(std::int64_t samples) noexcept override { batch_offset_ = samples; }
  void forward_skipped(Mode mode) override;

 protected:
  // ShapeError when noise_shape's rank is not the input's or an entry is neither None, 1 nor the
  // input's size on that axis.
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override { return std::make_unique<Dropout>(options_); }
  void copy_state_from(const Layer& other) override {
    rng_ = static_cast<const Dropout&>(other).rng_;
  }

 private:
  // Whether the mask is one draw per value (no noise_shape, or every entry None / full size).
  bool per_value_mask(std::int64_t batch) const noexcept;
  Options options_;
  Random rng_;
  std::int64_t batch_offset_ = 0;
  Tensor mask_;   // scale per value of the last training forward (0 or 1 / (1 - rate))
  Tensor noise_;  // the noise_shape draw, broadcast into mask_
  bool last_training_ = false;
};

}  // namespace bnorm
