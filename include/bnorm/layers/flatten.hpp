// bnorm/layers/flatten.hpp — Keras Flatten: (N, d1, d2, ...) -> (N, d1 * d2 * ...).
//
// Keras 3 argument data_format (default "channels_last", Keras's image_data_format() default):
// with "channels_first" an input (N, C, d1, ..., dk) is first transposed to (N, d1, ..., dk, C),
// so that the flattened order, and with it the kernel of a following Dense, is the same as for
// the channels_last model. Inputs (N, C) flatten unchanged either way.
#pragma once

#include <string>

#include "bnorm/layers/layer.hpp"

namespace bnorm {

class Flatten final : public Layer {
 public:
  struct Options {
    std::string data_format = "channels_last";
  };
  Flatten();
  // ValueError for an unknown data_format.
  explicit Flatten(Options options);
  std::string class_name() const override { return "Flatten"; }
  Shape output_shape(const Shape& input_shape) const override;
  const Options& options() const noexcept { return options_; }

 protected:
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override { return std::make_unique<Flatten>(options_); }

 private:
  Options options_;
  // channels_first with a per-sample rank >= 2: (channels, inner) per sample is transposed.
  bool transpose_ = false;
  std::int64_t channels_ = 0, inner_ = 0;
};

}  // namespace bnorm
