// bnorm/layers/depthwise_conv2d.hpp — Keras DepthwiseConv2D:
// y = activation(depthwise_conv2d(x, kernel) + bias), each input channel convolved with its own
// depth_multiplier filters.
//
// Keras 3 arguments and defaults: kernel_size (required), strides (1, 1), padding "valid"
// ("same": out = ceil(in / stride), total padding max((out-1)*stride + dilation*(k-1) + 1 - in,
// 0) with the odd row/column after, as TensorFlow), depth_multiplier 1, data_format
// "channels_last" ((N, H, W, C); "channels_first" is (N, C, H, W)), dilation_rate (1, 1), no
// activation, use_bias true, depthwise_initializer glorot_uniform (Keras's fans for the kernel
// shape: fan_in = kh*kw*in_channels, fan_out = kh*kw*depth_multiplier), bias_initializer zeros.
// Weights in Keras 3 order, names and layout: "kernel" (kernel_h, kernel_w, in_channels,
// depth_multiplier) — Keras 3 calls the depthwise weight "kernel", Keras 2 called it
// "depthwise_kernel" — then "bias" (in_channels * depth_multiplier,). Output channel
// c * depth_multiplier + m comes from input channel c and filter m.
// The math runs on NHWC (src/kernels/depthwise_conv2d.hpp); channels_first data is transposed to
// NHWC and back inside the layer.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/layer.hpp"

namespace bnorm {

class DepthwiseConv2D final : public Layer {
 public:
  struct Options {
    std::array<std::int64_t, 2> kernel_size{0, 0};  // (height, width)
    std::array<std::int64_t, 2> strides{1, 1};
    std::string padding = "valid";
    std::int64_t depth_multiplier = 1;
    std::string data_format = "channels_last";
    std::array<std::int64_t, 2> dilation_rate{1, 1};
    std::string activation = "linear";
    bool use_bias = true;
    Initializer depthwise_initializer = Initializer::glorot_uniform();
    Initializer bias_initializer = Initializer::zeros();
    float depthwise_l2 = 0.0f;  // L2 factor of the "kernel" weight (Keras depthwise_regularizer)
    float bias_l2 = 0.0f;
  };
  // ValueError for kernel_size/strides/dilation_rate/depth_multiplier < 1, strides > 1 together
  // with dilation_rate > 1 (Keras refuses it too), an unknown padding, data_format or activation.
  explicit DepthwiseConv2D(Options options);
  // Square kernel and strides, other arguments at their defaults (Keras's positional order).
  explicit DepthwiseConv2D(std::int64_t kernel_size, std::int64_t strides = 1,
                           std::string padding = "valid", std::int64_t depth_multiplier = 1);

  std::string class_name() const override { return "DepthwiseConv2D"; }
  // ShapeError for a per-sample shape that is not (H, W, C) / (C, H, W), or a window larger than
  // the input with padding 'valid'.
  Shape output_shape(const Shape& input_shape) const override;
  const Options& options() const noexcept { return options_; }
  ActivationKind activation() const noexcept { return activation_; }

 protected:
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override {
    return std::make_unique<DepthwiseConv2D>(options_);
  }

 private:
  Options options_;
  ActivationKind activation_;
  bool channels_first_ = false;
  std::int64_t in_h_ = 0, in_w_ = 0, in_c_ = 0, out_h_ = 0, out_w_ = 0, pad_top_ = 0, pad_left_ = 0;
  Variable* kernel_ = nullptr;
  Variable* bias_ = nullptr;
  Tensor z_;       // pre-activation output (when the activation is not linear)
  Tensor x_nhwc_;  // channels_first: the input transposed to NHWC
  Tensor y_nhwc_;  // channels_first: the NHWC output before transposing back
  Tensor dz_;      // gradient before the activation
  Tensor dz_nhwc_;
  Tensor dx_nhwc_;
};

}  // namespace bnorm
