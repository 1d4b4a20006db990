#include "bnorm/layers/conv2d.hpp"

#include <algorithm>

#include "bnorm/core/error.hpp"
#include "kernels/activation.hpp"
#include "kernels/conv2d.hpp"
#include "kernels/conv2d_fast.hpp"
#include "layers/spatial.hpp"

namespace bnorm {

Conv2D::Conv2D(Options options)
    : Layer("conv2d"),
      options_(std::move(options)),
      activation_(parse_activation(options_.activation)) {
  const std::string who = "Conv2D";
  if (options_.filters < 1) {
    throw ValueError(who + ": filters must be >= 1; received " + std::to_string(options_.filters));
  }
  detail::check_positive_pair(who, "kernel_size", options_.kernel_size);
  detail::check_positive_pair(who, "strides", options_.strides);
  detail::check_positive_pair(who, "dilation_rate", options_.dilation_rate);
  const auto& s = options_.strides;
  const auto& r = options_.dilation_rate;
  if (std::max(s[0], s[1]) > 1 && std::max(r[0], r[1]) > 1) {
    throw ValueError(who + ": strides > 1 is not supported together with dilation_rate > 1 " +
                     "(as in Keras); received strides " + detail::pair_str(s) +
                     " and dilation_rate " + detail::pair_str(r));
  }
  options_.padding = detail::normalize_padding(who, options_.padding);
  options_.data_format = detail::normalize_data_format(who, options_.data_format);
  channels_first_ = options_.data_format == "channels_first";
  if (!(options_.kernel_l2 >= 0.0f) || !(options_.bias_l2 >= 0.0f)) {
    throw ValueError(who + ": L2 regularization factors must be >= 0");
  }
}

namespace {
Conv2D::Options square(std::int64_t filters, std::int64_t kernel_size, std::string padding,
                       std::string activation) {
  Conv2D::Options o;
  o.filters = filters;
  o.kernel_size = {kernel_size, kernel_size};
  o.padding = std::move(padding);
  o.activation = std::move(activation);
  return o;
}
}  // namespace

Conv2D::Conv2D(std::int64_t filters, std::int64_t kernel_size, std::string padding,
               std::string activation)
    : Conv2D(square(filters, kernel_size, std::move(padding), std::move(activation))) {}

Conv2D::~Conv2D() = default;
Conv2D::Conv2D(Conv2D&&) noexcept = default;
Conv2D& Conv2D::operator=(Conv2D&&) noexcept = default;

Conv2D::Geometry Conv2D::geometry(const Shape& input_shape) const {
  const auto g = detail::window_geometry(label(), input_shape, channels_first_, "kernel_size",
                                         options_.kernel_size, options_.strides,
                                         options_.dilation_rate, options_.padding == "same");
  return {g.in_h, g.in_w, g.channels, g.out_h, g.out_w, g.pad_top, g.pad_left};
}

Shape Conv2D::output_shape(const Shape& input_shape) const {
  const Geometry g = geometry(input_shape);
  return detail::make_image_shape(g.out_h, g.out_w, options_.filters, channels_first_);
}

void Conv2D::do_build(const Shape& input_shape, Random& rng) {
  geometry_ = geometry(input_shape);
  const auto& k = options_.kernel_size;
  const std::int64_t receptive = k[0] * k[1];
  kernel_ = &add_weight("kernel", Shape{k[0], k[1], geometry_.in_c, options_.filters}, true,
                        options_.kernel_l2);
  options_.kernel_initializer.apply(kernel_->value, rng, receptive * geometry_.in_c,
                                    receptive * options_.filters);
  if (options_.use_bias) {
    bias_ = &add_weight("bias", Shape{options_.filters}, true, options_.bias_l2);
    options_.bias_initializer.apply(bias_->value, rng, receptive * geometry_.in_c,
                                    receptive * options_.filters);
  }
}

namespace {
template <class Geometry>  // Conv2D::Geometry (private)
kernels::Conv2dDims conv_dims(std::int64_t batch, const Conv2D::Options& o, const Geometry& g) {
  auto d = detail::window_dims<kernels::Conv2dDims>(batch, g.in_c, g, o);
  d.filters = o.filters;
  return d;
}
}  // namespace

void Conv2D::do_forward(const Tensor& x, Mode mode, Tensor& y) {
  const Geometry& g = geometry_;
  const std::int64_t n = x.shape()[0];
  const auto d = conv_dims(n, options_, g);
  const bool training = mode == Mode::training;
  if (!fast_) fast_ = std::make_unique<kernels::Conv2dFast>();
  fast_ran_ = fast_->prepare(d, bias_ != nullptr, training);
  // At inference the activation runs in the fast path's per-chunk epilogue (after folding,
  // Conv -> BN -> ReLU is one pass over memory); training keeps the pre-activation for backward.
  // (Not for softmax on channels_first data: Keras's softmax there is over the last axis, W.)
  const bool epilogue =
      fast_ran_ && !training && !(channels_first_ && activation_ == ActivationKind::softmax);
  epilogue_ran_ = epilogue && activation_ != ActivationKind::linear;
  const bool linear = activation_ == ActivationKind::linear || epilogue;
  Tensor& z = linear ? y : z_;  // the convolution's output in the layer's data format
  // Per-step buffers: resized in place (no allocation once they have the capacity).
  if (channels_first_) {
    z.resize_dims({n, options_.filters, g.out_h, g.out_w});
    y.resize_dims({n, options_.filters, g.out_h, g.out_w});
  } else {
    z.resize_dims({n, g.out_h, g.out_w, options_.filters});
    y.resize_dims({n, g.out_h, g.out_w, options_.filters});
  }
  const float* xin = x.data();
  if (channels_first_) {
    x_nhwc_.resize_dims({n, g.in_h, g.in_w, g.in_c});
    kernels::transpose_channels_first_to_last(n, g.in_c, g.in_h * g.in_w, x.data(), x_nhwc_.data());
    xin = x_nhwc_.data();
    y_nhwc_.resize_dims({n, g.out_h, g.out_w, options_.filters});
  }
  float* out = channels_first_ ? y_nhwc_.data() : z.data();
  const float* bias = bias_ ? bias_->value.data() : nullptr;
  if (fast_ran_) {
    fast_->forward(xin, kernel_->value.data(), bias, out,
                   epilogue ? activation_ : ActivationKind::linear);
  } else {
    cols_.resize_dims({std::max<std::int64_t>(1, kernels::conv2d_cols_size(d))});
    kernels::conv2d_forward(d, xin, kernel_->value.data(), bias, cols_.data(), out);
  }
  if (channels_first_) {
    kernels::transpose_channels_last_to_first(n, options_.filters, g.out_h * g.out_w, out,
                                              z.data());
  }
  if (!linear) {
    // Keras applies the activation elementwise; softmax is over the last axis.
    const std::int64_t cols = z.shape()[z.rank() - 1];
    kernels::activation_forward(activation_, z.size() / cols, cols, z.data(), y.data());
  }
}

void Conv2D::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  // After an inference forward whose activation ran in the epilogue there is no pre-activation:
  // redo the forward in training mode (it gives the same output bits) to get it.
  if (epilogue_ran_) do_forward(*last_input_, Mode::training, output_);
  const Geometry& g = geometry_;
  const std::int64_t n = dy.shape()[0];
  const auto d = conv_dims(n, options_, g);
  const Tensor* dz = &dy;
  if (activation_ != ActivationKind::linear) {
    const std::int64_t cols = dy.shape()[dy.rank() - 1];
    dz_.resize(dy.shape());
    kernels::activation_backward(activation_, dy.size() / cols, cols, z_.data(), output_.data(),
                                 dy.data(), dz_.data());
    dz = &dz_;
  }
  const float* dz_nhwc = dz->data();
  if (channels_first_) {
    dz_nhwc_.resize_dims({n, g.out_h, g.out_w, options_.filters});
    kernels::transpose_channels_first_to_last(n, options_.filters, g.out_h * g.out_w, dz->data(),
                                              dz_nhwc_.data());
    dz_nhwc = dz_nhwc_.data();
  }
  float* dkernel = trainable() ? kernel_->gradient.data() : nullptr;
  float* dbias = trainable() && bias_ ? bias_->gradient.data() : nullptr;
  float* dx_out = nullptr;
  if (compute_dx) {
    if (!fast_ran_) dcols_.resize(cols_.shape());
    dx.resize(last_input_->shape());
    if (channels_first_) {
      dx_nhwc_.resize_dims({n, g.in_h, g.in_w, g.in_c});
      dx_out = dx_nhwc_.data();
    } else {
      dx_out = dx.data();
    }
  }
  // The forward's input, NHWC (the layer keeps its transposed copy when channels_first).
  const float* x_nhwc = channels_first_ ? x_nhwc_.data() : last_input_->data();
  // The training setup (a lookup after a training forward; created when the last forward ran
  // at inference). If oneDNN declines it, the im2col path recomputes its patches.
  if (fast_ran_ && !fast_->prepare(d, bias_ != nullptr, true)) {
    fast_ran_ = false;
    cols_.resize_dims({std::max<std::int64_t>(1, kernels::conv2d_cols_size(d))});
    y_nhwc_.resize_dims({n, g.out_h, g.out_w, options_.filters});
    kernels::conv2d_forward(d, x_nhwc, kernel_->value.data(), nullptr, cols_.data(),
                            y_nhwc_.data());
    if (compute_dx) dcols_.resize(cols_.shape());
  }
  if (fast_ran_) {
    fast_->backward(x_nhwc, dz_nhwc, kernel_->value.data(), dx_out, dkernel, dbias);
  } else {
    kernels::conv2d_backward(d, dz_nhwc, kernel_->value.data(), cols_.data(), dcols_.data(), dx_out,
                             dkernel, dbias);
  }
  if (compute_dx && channels_first_) {
    kernels::transpose_channels_last_to_first(n, g.in_c, g.in_h * g.in_w, dx_nhwc_.data(),
                                              dx.data());
  }
}

}  // namespace bnorm
