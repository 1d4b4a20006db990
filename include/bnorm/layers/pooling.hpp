// bnorm/layers/pooling.hpp — Keras MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D and
// GlobalMaxPooling2D.
//
// Keras 3 arguments and defaults: pool_size (2, 2), strides None (= pool_size), padding "valid",
// data_format "channels_last". With padding "same" the output is ceil(in / stride) and windows
// are clipped to the input as in TensorFlow: max ignores the padding, the average divides by the
// number of input positions in the window. MaxPooling2D's gradient goes to the first maximum of
// each window (TensorFlow's tie rule). GlobalAveragePooling2D averages over height and width:
// (N, H, W, C) -> (N, C), or (N, 1, 1, C) with keepdims ((N, C, 1, 1) for channels_first).
// GlobalMaxPooling2D takes the maximum over height and width with the same shapes; its gradient
// is TensorFlow's reduce_max one (Keras computes it with ops.max): tied maxima of a channel
// share dy evenly, (indicator / ties) * dy.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "bnorm/layers/layer.hpp"

namespace bnorm {

// The shared body of MaxPooling2D and AveragePooling2D.
class Pooling2D : public Layer {
 public:
  struct Options {
    std::array<std::int64_t, 2> pool_size{2, 2};
    std::optional<std::array<std::int64_t, 2>> strides;  // nullopt: pool_size (Keras None)
    std::string padding = "valid";
    std::string data_format = "channels_last";
  };
  const Options& options() const noexcept { return options_; }
  // The strides in effect: options().strides, or pool_size when none were given.
  std::array<std::int64_t, 2> strides() const noexcept {
    return options_.strides.value_or(options_.pool_size);
  }
  // ShapeError for a per-sample shape that is not rank 3, or a window larger than the input
  // with padding 'valid'.
  Shape output_shape(const Shape& input_shape) const override;

 protected:
  enum class Kind { max, average };
  Pooling2D(std::string name, Kind kind, Options options);
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;

 private:
  struct Geometry {  // of one sample, from build
    std::int64_t in_h, in_w, channels, out_h, out_w, pad_top, pad_left;
  };
  Geometry geometry(const Shape& input_shape) const;
  Kind kind_;
  Options options_;
  bool channels_first_ = false;
  Geometry geometry_{};
  Shape output_per_sample_;
};

class MaxPooling2D final : public Pooling2D {
 public:
  MaxPooling2D();
  explicit MaxPooling2D(Options options);
  explicit MaxPooling2D(std::int64_t pool_size);  // square window, strides = pool_size
  std::string class_name() const override { return "MaxPooling2D"; }

 protected:
  std::unique_ptr<Layer> do_clone() const override {
    return std::make_unique<MaxPooling2D>(options());
  }
};

class AveragePooling2D final : public Pooling2D {
 public:
  AveragePooling2D();
  explicit AveragePooling2D(Options options);
  explicit AveragePooling2D(std::int64_t pool_size);
  std::string class_name() const override { return "AveragePooling2D"; }

 protected:
  std::unique_ptr<Layer> do_clone() const override {
    return std::make_unique<AveragePooling2D>(options());
  }
};

class GlobalAveragePooling2D final : public Layer {
 public:
  struct Options {
    std::string data_format = "channels_last";
    bool keepdims = false;
  };
  GlobalAveragePooling2D();
  explicit GlobalAveragePooling2D(Options options);
  std::string class_name() const override { return "GlobalAveragePooling2D"; }
  Shape output_shape(const Shape& input_shape) const override;
  const Options& options() const noexcept { return options_; }

 protected:
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override {
    return std::make_unique<GlobalAveragePooling2D>(options_);
  }

 private:
  Options options_;
  bool channels_first_ = false;
  std::int64_t spatial_ = 0, channels_ = 0;
  Shape output_per_sample_;
};

class GlobalMaxPooling2D final : public Layer {
 public:
  struct Options {
    std::string data_format = "channels_last";
    bool keepdims = false;
  };
  GlobalMaxPooling2D();
  explicit GlobalMaxPooling2D(Options options);
  std::string class_name() const override { return "GlobalMaxPooling2D"; }
  Shape output_shape(const Shape& input_shape) const override;
  const Options& options() const noexcept { return options_; }

 protected:
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override {
    return std::make_unique<GlobalMaxPooling2D>(options_);
  }

 private:
  Options options_;
  bool channels_first_ = false;
  std::int64_t in_h_ = 0, in_w_ = 0, channels_ = 0;
  Shape output_per_sample_;
};

}  // namespace bnorm
