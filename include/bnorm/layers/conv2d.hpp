// bnorm/layers/conv2d.hpp — Keras Conv2D: y = activation(conv2d(x, kernel) + bias).
//
// Keras 3 arguments and defaults: strides (1, 1), padding "valid" ("same" pads with zeros so that
// out = ceil(in / stride), the odd row/column after, as TensorFlow), data_format "channels_last"
// ((N, H, W, C); "channels_first" is (N, C, H, W)), dilation_rate (1, 1), no activation,
// use_bias true, kernel glorot_uniform with fan_in = kh*kw*in_channels and
// fan_out = kh*kw*filters, bias zeros. Weights in Keras order and layout: kernel
// (kernel_h, kernel_w, in_channels, filters), then bias (filters,). groups is not supported.
// The math runs on NHWC: oneDNN's convolution primitives (src/kernels/conv2d_fast.hpp), or
// im2col + BLAS GEMM
// (src/kernels/conv2d.hpp) where oneDNN is not built in or has no implementation for the shape;
// channels_first data is transposed to NHWC and back inside the layer.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/layer.hpp"

namespace bnorm {

namespace kernels {
class Conv2dFast;
}

class Conv2D final : public Layer {
 public:
  struct Options {
    std::int64_t filters = 0;
    std::array<std::int64_t, 2> kernel_size{0, 0};  // (height, width)
    std::array<std::int64_t, 2> strides{1, 1};
    std::string padding = "valid";
    std::string data_format = "channels_last";
    std::array<std::int64_t, 2> dilation_rate{1, 1};
    std::string activation = "linear";
    bool use_bias = true;
    Initializer kernel_initializer = Initializer::glorot_uniform();
    Initializer bias_initializer = Initializer::zeros();
    float kernel_l2 = 0.0f;
    float bias_l2 = 0.0f;
  };
  // ValueError for filters/kernel_size/strides/dilation_rate < 1, strides > 1 together with
  // dilation_rate > 1 (Keras refuses it too), an unknown padding, data_format or activation.
  explicit Conv2D(Options options);
  // Square kernel, other arguments at their defaults.
  Conv2D(std::int64_t filters, std::int64_t kernel_size, std::string padding = "valid",
         std::string activation = "linear");
  ~Conv2D() override;
  Conv2D(Conv2D&&) noexcept;
  Conv2D& operator=(Conv2D&&) noexcept;

  std::string class_name() const override { return "Conv2D"; }
  // ShapeError for a per-sample shape that is not (H, W, C) / (C, H, W), or a window larger than
  // the input with padding 'valid'.
  Shape output_shape(const Shape& input_shape) const override;
  const Options& options() const noexcept { return options_; }
  ActivationKind activation() const noexcept { return activation_; }

 protected:
  void do_build(const Shape& input_shape, Random& rng) override;
  void do_forward(const Tensor& x, Mode mode, Tensor& y) override;
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override;
  std::unique_ptr<Layer> do_clone() const override { return std::make_unique<Conv2D>(options_); }

 private:
  struct Geometry {
    std::int64_t in_h, in_w, in_c, out_h, out_w, pad_top, pad_left;
  };
  Geometry geometry(const Shape& input_shape) const;
  bool channels_first() const noexcept { return channels_first_; }

  Options options_;
  ActivationKind activation_;
  bool channels_first_ = false;
  Geometry geometry_{};
  Variable* kernel_ = nullptr;
  Variable* bias_ = nullptr;
  std::unique_ptr<kernels::Conv2dFast> fast_;  // oneDNN primitives (null until first forward)
  bool fast_ran_ = false;      // whether the last forward ran on fast_ (else on im2col)
  bool epilogue_ran_ = false;  // whether its activation ran in fast_'s epilogue (inference)
  Tensor cols_;                // im2col of the last forward's input, for backward
  Tensor dcols_;               // backward's workspace for dy @ kernel^T
  Tensor z_;                   // pre-activation output (when the activation is not linear)
  Tensor x_nhwc_;              // channels_first: the input transposed to NHWC
  Tensor y_nhwc_;              // channels_first: the NHWC output before transposing back
  Tensor dz_;                  // gradient before the activation
  Tensor dz_nhwc_;
  Tensor dx_nhwc_;
};

}  // namespace bnorm
