// bnorm/layers/separable_conv2d.hpp — Keras SeparableConv2D:
// y = activation(pointwise_conv(depthwise_conv2d(x, depthwise_kernel), pointwise_kernel) + bias).
//
// The depthwise half (strides, padding, dilation_rate, depth_multiplier) is DepthwiseConv2D's
// without its bias; the pointwise half is a 1x1 convolution (a GEMM) to `filters` channels, then
// the bias and the activation. Keras 3 arguments and defaults: filters and kernel_size
// (required), strides (1, 1), padding "valid", data_format "channels_last", dilation_rate (1, 1),
// depth_multiplier 1, no activation, use_bias true, depthwise_initializer and
// pointwise_initializer glorot_uniform (Keras's fans for each kernel's shape), bias_initializer
// zeros. Weights in Keras order, names and layout: "depthwise_kernel" (kernel_h, kernel_w,
// in_channels, depth_multiplier), "pointwise_kernel" (1, 1, in_channels * depth_multiplier,
// filters), "bias" (filters,). channels_first data is transposed to NHWC and back inside the
// layer.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/layer.hpp"

namespace bnorm {

class SeparableConv2D final : public Layer {
 public:
  struct Options {
    std::int64_t filters = 0;
    std::array<std::int64_t, 2> kernel_size{0, 0};  // (height, width)
    std::array<std::int64_t, 2> strides{1, 1};
    std::string padding = "valid";
    std::string data_format = "channels_last";
    std::array<std::int64_t, 2> dilation_rate{1, 1};
    std::int64_t depth_multiplier = 1;
    std::string activation = "linear";
    bool use_bias = true;
    Initializer depthwise_initializer = Initializer::glorot_uniform();
    Initializer pointwise_initializer = Initializer::glorot_uniform();
    Initializer bias_initializer = Initializer::zeros();
    float depthwise_l2 = 0.0f;
    float pointwise_l2 = 0.0f;
    float bias_l2 = 0.0f;
  };
  // ValueError for filters/kernel_size/strides/dilation_rate/depth_multiplier < 1, strides > 1
  // together with dilation_rate > 1, an unknown padding, data_format or activation.
  explicit SeparableConv2D(Options options);
  // Square kernel and strides, other arguments at their defaults.
  SeparableConv2D(std::int64_t filters, std::int64_t kernel_size, std::int64_t strides = 1,
                  std::string padding = "valid");

  std::string class_name() const override { return "SeparableConv2D"; }
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
    return std::make_unique<SeparableConv2D>(options_);
  }

 private:
  Options options_;
  ActivationKind activation_;
  bool channels_first_ = false;
  std::int64_t in_h_ = 0, in_w_ = 0, in_c_ = 0, out_h_ = 0, out_w_ = 0, pad_top_ = 0, pad_left_ = 0;
  Variable* depthwise_ = nullptr;
  Variable* pointwise_ = nullptr;
  Variable* bias_ = nullptr;
  Tensor mid_;     // depthwise output (NHWC, in_channels * depth_multiplier), kept for backward
  Tensor dmid_;    // backward: gradient of mid_
  Tensor z_;       // pre-activation output (when the activation is not linear)
  Tensor x_nhwc_;  // channels_first: the input transposed to NHWC
  Tensor y_nhwc_;
  Tensor dz_;
  Tensor dz_nhwc_;
  Tensor dx_nhwc_;
};

}  // namespace bnorm
