// bnorm/layers/zero_padding2d.hpp — Keras ZeroPadding2D: rows and columns of zeros around an
// image.
//
// Keras 3 arguments and defaults: padding (1, 1); an int p means ((p, p), (p, p)), a pair
// (sym_h, sym_w) means ((sym_h, sym_h), (sym_w, sym_w)), and ((top, bottom), (left, right)) is
// taken as given; every entry must be >= 0. data_format "channels_last" ((N, H, W, C);
// "channels_first" is (N, C, H, W)). Output (H + top + bottom, W + left + right) per channel.
// No weights.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "bnorm/layers/layer.hpp"

namespace bnorm {

class ZeroPadding2D final : public Layer {
 public:
  using Padding = std::array<std::array<std::int64_t, 2>, 2>;  // ((top, bottom), (left, right))
  struct Options {
    Padding padding{{{1, 1}, {1, 1}}};
    std::string data_format = "channels_last";
  };
  // ValueError for a negative padding or an unknown data_format.
  ZeroPadding2D();
  explicit ZeroPadding2D(Options options);
  explicit ZeroPadding2D(std::int64_t padding);                    // ((p, p), (p, p))
  ZeroPadding2D(std::int64_t sym_height, std::int64_t sym_width);  // ((h, h), (w, w))

  std::string class_name() const override { return "ZeroPadding2D"; }
  // ShapeError for a per-sample shape that is not (H, W, C) / (C, H, W).
  Shape output_shape(const Shape& input_shape) const override;
  const Options& options() const noexcept { return options_; }

 protected:
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override {
    return std::make_unique<ZeroPadding2D>(options_);
  }

 private:
  Options options_;
  bool channels_first_ = false;
  std::int64_t in_h_ = 0, in_w_ = 0, channels_ = 0;
  Shape output_per_sample_;
};

}  // namespace bnorm
