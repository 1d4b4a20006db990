// DepthwiseConv2D and SeparableConv2D: the same depthwise half (arguments, geometry, NHWC
// kernel, channels_first transposes), SeparableConv2D adding the pointwise GEMM.
#include "bnorm/layers/depthwise_conv2d.hpp"

#include <algorithm>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/separable_conv2d.hpp"
#include "kernels/activation.hpp"
#include "kernels/conv2d.hpp"
#include "kernels/depthwise_conv2d.hpp"
#include "layers/spatial.hpp"

namespace bnorm {

namespace {

using Pair = std::array<std::int64_t, 2>;

// The arguments both layers share; returns the normalized padding and data_format.
void check_depthwise_arguments(const std::string& who, const Pair& kernel_size, const Pair& strides,
                               const Pair& dilation_rate, std::int64_t depth_multiplier,
                               std::string& padding, std::string& data_format) {
  detail::check_positive_pair(who, "kernel_size", kernel_size);
  detail::check_positive_pair(who, "strides", strides);
  detail::check_positive_pair(who, "dilation_rate", dilation_rate);
  if (depth_multiplier < 1) {
    throw ValueError(who + ": depth_multiplier must be >= 1; received " +
                     std::to_string(depth_multiplier));
  }
  if (std::max(strides[0], strides[1]) > 1 && std::max(dilation_rate[0], dilation_rate[1]) > 1) {
    throw ValueError(who + ": strides > 1 is not supported together with dilation_rate > 1 " +
                     "(as in Keras); received strides " + detail::pair_str(strides) +
                     " and dilation_rate " + detail::pair_str(dilation_rate));
  }
  padding = detail::normalize_padding(who, padding);
  data_format = detail::normalize_data_format(who, data_format);
}

void check_l2(const std::string& who, std::initializer_list<float> factors) {
  for (float f : factors)
    if (!(f >= 0.0f)) throw ValueError(who + ": L2 regularization factors must be >= 0");
}

using Geometry = detail::WindowGeometry;

// Geometry of one sample for either layer's options (kernel_size, strides, dilation_rate,
// padding).
template <class Options>
Geometry depthwise_geometry(const std::string& label, const Shape& input_shape, bool channels_first,
                            const Options& o) {
  return detail::window_geometry(label, input_shape, channels_first, "kernel_size", o.kernel_size,
                                 o.strides, o.dilation_rate, o.padding == "same");
}

template <class Options>
kernels::DepthwiseConv2dDims depthwise_dims(std::int64_t batch, const Geometry& g,
                                            const Options& o) {
  auto d = detail::window_dims<kernels::DepthwiseConv2dDims>(batch, g.channels, g, o);
  d.depth_multiplier = o.depth_multiplier;
  return d;
}

// Keras applies the activation elementwise; softmax is over the last axis (as Conv2D).
void activation_forward(ActivationKind kind, const Tensor& z, Tensor& y) {
  const std::int64_t cols = z.shape()[z.rank() - 1];
  kernels::activation_forward(kind, z.size() / cols, cols, z.data(), y.data());
}
// The gradient before the activation, or dy itself for a linear layer.
const Tensor& activation_backward(ActivationKind kind, const Tensor& y, const Tensor& dy,
                                  Tensor& dz) {
  if (kind == ActivationKind::linear) return dy;
  const std::int64_t cols = dy.shape()[dy.rank() - 1];
  dz.resize(dy.shape());
  kernels::activation_backward(kind, dy.size() / cols, cols, y.data(), dy.data(), dz.data());
  return dz;
}

// The buffers both layers keep for the run around their NHWC kernels.
struct Buffers {
  Tensor& z;        // pre-activation output (when the activation is not linear)
  Tensor& x_nhwc;   // channels_first: the input transposed to NHWC (kept for backward)
  Tensor& y_nhwc;   // channels_first: the NHWC output before transposing back
  Tensor& dz;       // gradient before the activation
  Tensor& dz_nhwc;  // channels_first: dz transposed to NHWC
  Tensor& dx_nhwc;  // channels_first: the NHWC dx before transposing back
};

// The forward both layers share: run(x_nhwc, y_nhwc) writes the NHWC output of out_c channels,
// between the channels_first transposes; then the activation.
template <class Run>
void forward_nhwc(ActivationKind activation, bool channels_first, const Geometry& g,
                  std::int64_t out_c, const Tensor& x, Tensor& y, const Buffers& b, Run&& run) {
  const std::int64_t n = x.shape()[0];
  const Shape out_shape =
      detail::with_batch(n, detail::make_image_shape(g.out_h, g.out_w, out_c, channels_first));
  const bool linear = activation == ActivationKind::linear;
  Tensor& z = linear ? y : b.z;  // the convolution's output in the layer's data format
  z.resize(out_shape);
  y.resize(out_shape);
  const float* xin = x.data();
  float* out = z.data();
  if (channels_first) {
    b.x_nhwc.resize(Shape{n, g.in_h, g.in_w, g.channels});
    kernels::transpose_channels_first_to_last(n, g.channels, g.in_h * g.in_w, x.data(),
                                              b.x_nhwc.data());
    xin = b.x_nhwc.data();
    b.y_nhwc.resize(Shape{n, g.out_h, g.out_w, out_c});
    out = b.y_nhwc.data();
  }
  run(xin, out);
  if (channels_first) {
    kernels::transpose_channels_last_to_first(n, out_c, g.out_h * g.out_w, out, z.data());
  }
  if (!linear) activation_forward(activation, z, y);
}

// The backward both layers share: dz through the activation, dz and the forward's input in NHWC,
// then run(x_nhwc, dz_nhwc, dx_nhwc) with dx_nhwc null when dx is not wanted, and dx transposed
// back for channels_first.
template <class Run>
void backward_nhwc(ActivationKind activation, bool channels_first, const Geometry& g,
                   std::int64_t out_c, const Tensor& x, const Tensor& y, const Tensor& dy,
                   bool compute_dx, Tensor& dx, const Buffers& b, Run&& run) {
  const std::int64_t n = dy.shape()[0];
  const Tensor& dz = activation_backward(activation, y, dy, b.dz);
  const float* dz_nhwc = dz.data();
  const float* x_nhwc = x.data();
  if (channels_first) {
    b.dz_nhwc.resize(Shape{n, g.out_h, g.out_w, out_c});
    kernels::transpose_channels_first_to_last(n, out_c, g.out_h * g.out_w, dz.data(),
                                              b.dz_nhwc.data());
    dz_nhwc = b.dz_nhwc.data();
    x_nhwc = b.x_nhwc.data();  // the forward's transpose of the same input
  }
  float* dx_out = nullptr;
  if (compute_dx) {
    dx.resize(x.shape());
    if (channels_first) {
      b.dx_nhwc.resize(Shape{n, g.in_h, g.in_w, g.channels});
      dx_out = b.dx_nhwc.data();
    } else {
      dx_out = dx.data();
    }
  }
  run(x_nhwc, dz_nhwc, dx_out);
  if (compute_dx && channels_first) {
    kernels::transpose_channels_last_to_first(n, g.channels, g.in_h * g.in_w, b.dx_nhwc.data(),
                                              dx.data());
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// DepthwiseConv2D

DepthwiseConv2D::DepthwiseConv2D(Options options)
    : Layer("depthwise_conv2d"),
      options_(std::move(options)),
      activation_(parse_activation(options_.activation)) {
  const std::string who = "DepthwiseConv2D";
  check_depthwise_arguments(who, options_.kernel_size, options_.strides, options_.dilation_rate,
                            options_.depth_multiplier, options_.padding, options_.data_format);
  check_l2(who, {options_.depthwise_l2, options_.bias_l2});
  channels_first_ = options_.data_format == "channels_first";
}

namespace {
DepthwiseConv2D::Options square_depthwise(std::int64_t kernel_size, std::int64_t strides,
                                          std::string padding, std::int64_t depth_multiplier) {
  DepthwiseConv2D::Options o;
  o.kernel_size = {kernel_size, kernel_size};
  o.strides = {strides, strides};
  o.padding = std::move(padding);
  o.depth_multiplier = depth_multiplier;
  return o;
}
}  // namespace

DepthwiseConv2D::DepthwiseConv2D(std::int64_t kernel_size, std::int64_t strides,
                                 std::string padding, std::int64_t depth_multiplier)
    : DepthwiseConv2D(
          square_depthwise(kernel_size, strides, std::move(padding), depth_multiplier)) {}

Shape DepthwiseConv2D::output_shape(const Shape& input_shape) const {
  const auto g = depthwise_geometry(label(), input_shape, channels_first_, options_);
  return detail::make_image_shape(g.out_h, g.out_w, g.channels * options_.depth_multiplier,
                                  channels_first_);
}

void DepthwiseConv2D::do_build(const Shape& input_shape, Random& rng) {
  const auto g = depthwise_geometry(label(), input_shape, channels_first_, options_);
  in_h_ = g.in_h;
  in_w_ = g.in_w;
  in_c_ = g.channels;
  out_h_ = g.out_h;
  out_w_ = g.out_w;
  pad_top_ = g.pad_top;
  pad_left_ = g.pad_left;
  const auto& k = options_.kernel_size;
  const std::int64_t M = options_.depth_multiplier, receptive = k[0] * k[1];
  kernel_ = &add_weight("kernel", Shape{k[0], k[1], in_c_, M}, true, options_.depthwise_l2);
  // Keras's fans of a (kh, kw, in, M) kernel: receptive field times the last two axes.
  options_.depthwise_initializer.apply(kernel_->value, rng, receptive * in_c_, receptive * M);
  if (options_.use_bias) {
    bias_ = &add_weight("bias", Shape{in_c_ * M}, true, options_.bias_l2);
    options_.bias_initializer.apply(bias_->value, rng, receptive * in_c_, receptive * M);
  }
}

void DepthwiseConv2D::do_forward(const Tensor& x, Mode, Tensor& y) {
  const Geometry g{in_h_, in_w_, in_c_, out_h_, out_w_, pad_top_, pad_left_};
  const auto d = depthwise_dims(x.shape()[0], g, options_);
  forward_nhwc(activation_, channels_first_, g, d.out_c(), x, y,
               {z_, x_nhwc_, y_nhwc_, dz_, dz_nhwc_, dx_nhwc_}, [&](const float* xin, float* out) {
                 kernels::depthwise_conv2d_forward(d, xin, kernel_->value.data(),
                                                   bias_ ? bias_->value.data() : nullptr, out);
               });
}

void DepthwiseConv2D::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  const Geometry g{in_h_, in_w_, in_c_, out_h_, out_w_, pad_top_, pad_left_};
  const auto d = depthwise_dims(dy.shape()[0], g, options_);
  float* dkernel = trainable() ? kernel_->gradient.data() : nullptr;
  float* dbias = trainable() && bias_ ? bias_->gradient.data() : nullptr;
  backward_nhwc(activation_, channels_first_, g, d.out_c(), *last_input_, output_, dy, compute_dx,
                dx, {z_, x_nhwc_, y_nhwc_, dz_, dz_nhwc_, dx_nhwc_},
                [&](const float* x_nhwc, const float* dz_nhwc, float* dx_out) {
                  kernels::depthwise_conv2d_backward(d, x_nhwc, dz_nhwc, kernel_->value.data(),
                                                     dx_out, dkernel, dbias);
                });
}

// ---------------------------------------------------------------------------------------------
// SeparableConv2D

SeparableConv2D::SeparableConv2D(Options options)
    : Layer("separable_conv2d"),
      options_(std::move(options)),
      activation_(parse_activation(options_.activation)) {
  const std::string who = "SeparableConv2D";
  if (options_.filters < 1) {
    throw ValueError(who + ": filters must be >= 1; received " + std::to_string(options_.filters));
  }
  check_depthwise_arguments(who, options_.kernel_size, options_.strides, options_.dilation_rate,
                            options_.depth_multiplier, options_.padding, options_.data_format);
  check_l2(who, {options_.depthwise_l2, options_.pointwise_l2, options_.bias_l2});
  channels_first_ = options_.data_format == "channels_first";
}

namespace {
SeparableConv2D::Options square_separable(std::int64_t filters, std::int64_t kernel_size,
                                          std::int64_t strides, std::string padding) {
  SeparableConv2D::Options o;
  o.filters = filters;
  o.kernel_size = {kernel_size, kernel_size};
  o.strides = {strides, strides};
  o.padding = std::move(padding);
  return o;
}
}  // namespace

SeparableConv2D::SeparableConv2D(std::int64_t filters, std::int64_t kernel_size,
                                 std::int64_t strides, std::string padding)
    : SeparableConv2D(square_separable(filters, kernel_size, strides, std::move(padding))) {}

Shape SeparableConv2D::output_shape(const Shape& input_shape) const {
  const auto g = depthwise_geometry(label(), input_shape, channels_first_, options_);
  return detail::make_image_shape(g.out_h, g.out_w, options_.filters, channels_first_);
}

void SeparableConv2D::do_build(const Shape& input_shape, Random& rng) {
  const auto g = depthwise_geometry(label(), input_shape, channels_first_, options_);
  in_h_ = g.in_h;
  in_w_ = g.in_w;
  in_c_ = g.channels;
  out_h_ = g.out_h;
  out_w_ = g.out_w;
  pad_top_ = g.pad_top;
  pad_left_ = g.pad_left;
  const auto& k = options_.kernel_size;
  const std::int64_t M = options_.depth_multiplier, receptive = k[0] * k[1], F = options_.filters;
  depthwise_ =
      &add_weight("depthwise_kernel", Shape{k[0], k[1], in_c_, M}, true, options_.depthwise_l2);
  pointwise_ =
      &add_weight("pointwise_kernel", Shape{1, 1, in_c_ * M, F}, true, options_.pointwise_l2);
  options_.depthwise_initializer.apply(depthwise_->value, rng, receptive * in_c_, receptive * M);
  options_.pointwise_initializer.apply(pointwise_->value, rng, in_c_ * M, F);
  if (options_.use_bias) {
    bias_ = &add_weight("bias", Shape{F}, true, options_.bias_l2);
    options_.bias_initializer.apply(bias_->value, rng, in_c_ * M, F);
  }
}

void SeparableConv2D::do_forward(const Tensor& x, Mode, Tensor& y) {
  const std::int64_t n = x.shape()[0], F = options_.filters;
  const Geometry g{in_h_, in_w_, in_c_, out_h_, out_w_, pad_top_, pad_left_};
  const auto d = depthwise_dims(n, g, options_);
  forward_nhwc(activation_, channels_first_, g, F, x, y,
               {z_, x_nhwc_, y_nhwc_, dz_, dz_nhwc_, dx_nhwc_}, [&](const float* xin, float* out) {
                 // Depthwise without bias (Keras has none between the halves), then the 1x1 GEMM
                 // with the bias.
                 mid_.resize(Shape{n, out_h_, out_w_, d.out_c()});
                 kernels::depthwise_conv2d_forward(d, xin, depthwise_->value.data(), nullptr,
                                                   mid_.data());
                 kernels::pointwise_conv_forward(n * out_h_ * out_w_, d.out_c(), F, mid_.data(),
                                                 pointwise_->value.data(),
                                                 bias_ ? bias_->value.data() : nullptr, out);
               });
}

void SeparableConv2D::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  const std::int64_t n = dy.shape()[0], F = options_.filters;
  const Geometry g{in_h_, in_w_, in_c_, out_h_, out_w_, pad_top_, pad_left_};
  const auto d = depthwise_dims(n, g, options_);
  const bool weights = trainable();
  backward_nhwc(
      activation_, channels_first_, g, F, *last_input_, output_, dy, compute_dx, dx,
      {z_, x_nhwc_, y_nhwc_, dz_, dz_nhwc_, dx_nhwc_},
      [&](const float* x_nhwc, const float* dz_nhwc, float* dx_out) {
        if (!weights && !compute_dx) return;
        // Pointwise half: its weight gradients and the gradient of the depthwise output.
        dmid_.resize(mid_.shape());
        kernels::pointwise_conv_backward(n * out_h_ * out_w_, d.out_c(), F, mid_.data(), dz_nhwc,
                                         pointwise_->value.data(), dmid_.data(),
                                         weights ? pointwise_->gradient.data() : nullptr,
                                         weights && bias_ ? bias_->gradient.data() : nullptr);
        kernels::depthwise_conv2d_backward(d, x_nhwc, dmid_.data(), depthwise_->value.data(),
                                           dx_out, weights ? depthwise_->gradient.data() : nullptr,
                                           nullptr);
      });
}

}  // namespace bnorm
