#include "bnorm/layers/pooling.hpp"

#include "bnorm/core/error.hpp"
#include "kernels/conv2d.hpp"
#include "kernels/pooling.hpp"
#include "layers/spatial.hpp"

namespace bnorm {

namespace {
const char* kind_name(bool max) { return max ? "MaxPooling2D" : "AveragePooling2D"; }
}  // namespace

Pooling2D::Pooling2D(std::string name, Kind kind, Options options)
    : Layer(std::move(name)), kind_(kind), options_(std::move(options)) {
  const std::string who = kind_name(kind_ == Kind::max);
  detail::check_positive_pair(who, "pool_size", options_.pool_size);
  if (options_.strides) detail::check_positive_pair(who, "strides", *options_.strides);
  options_.padding = detail::normalize_padding(who, options_.padding);
  options_.data_format = detail::normalize_data_format(who, options_.data_format);
  channels_first_ = options_.data_format == "channels_first";
}

namespace {
Pooling2D::Options square(std::int64_t pool_size) {
  Pooling2D::Options o;
  o.pool_size = {pool_size, pool_size};
  return o;
}
}  // namespace

MaxPooling2D::MaxPooling2D() : MaxPooling2D(Options()) {}
MaxPooling2D::MaxPooling2D(std::int64_t pool_size) : MaxPooling2D(square(pool_size)) {}
AveragePooling2D::AveragePooling2D() : AveragePooling2D(Options()) {}
AveragePooling2D::AveragePooling2D(std::int64_t pool_size) : AveragePooling2D(square(pool_size)) {}
MaxPooling2D::MaxPooling2D(Options options)
    : Pooling2D("max_pooling2d", Kind::max, std::move(options)) {}
AveragePooling2D::AveragePooling2D(Options options)
    : Pooling2D("average_pooling2d", Kind::average, std::move(options)) {}

Pooling2D::Geometry Pooling2D::geometry(const Shape& input_shape) const {
  const auto g =
      detail::window_geometry(label(), input_shape, channels_first_, "pool_size",
                              options_.pool_size, strides(), {1, 1}, options_.padding == "same");
  return {g.in_h, g.in_w, g.channels, g.out_h, g.out_w, g.pad_top, g.pad_left};
}

Shape Pooling2D::output_shape(const Shape& input_shape) const {
  const Geometry g = geometry(input_shape);
  return detail::make_image_shape(g.out_h, g.out_w, g.channels, channels_first_);
}

void Pooling2D::do_build(const Shape& input_shape, Random&) {
  geometry_ = geometry(input_shape);
  output_per_sample_ = output_shape(input_shape);
}

namespace {
// Kernel dims for a batch of n samples (channels_first: n*C single-channel images).
kernels::Pool2dDims batch_dims(std::int64_t n, std::int64_t in_h, std::int64_t in_w,
                               std::int64_t channels, std::int64_t out_h, std::int64_t out_w,
                               std::int64_t pad_top, std::int64_t pad_left,
                               const Pooling2D::Options& o, const std::array<std::int64_t, 2>& st,
                               bool channels_first) {
  const auto images = detail::nhwc_images(n, channels, channels_first);
  kernels::Pool2dDims d;
  d.batch = images.batch;
  d.channels = images.channels;
  d.in_h = in_h;
  d.in_w = in_w;
  d.pool_h = o.pool_size[0];
  d.pool_w = o.pool_size[1];
  d.stride_h = st[0];
  d.stride_w = st[1];
  d.pad_top = pad_top;
  d.pad_left = pad_left;
  d.out_h = out_h;
  d.out_w = out_w;
  return d;
}
}  // namespace

void Pooling2D::do_forward(const Tensor& x, Mode, Tensor& y) {
  const std::int64_t n = x.shape()[0];
  const Geometry& g = geometry_;
  const auto d = batch_dims(n, g.in_h, g.in_w, g.channels, g.out_h, g.out_w, g.pad_top, g.pad_left,
                            options_, strides(), channels_first_);
  y.resize_batch(n, output_per_sample_);
  if (kind_ == Kind::max) {
    kernels::max_pool2d_forward(d, x.data(), y.data());
  } else {
    kernels::avg_pool2d_forward(d, x.data(), y.data());
  }
}

void Pooling2D::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  if (!compute_dx) return;
  const Tensor& x = *last_input_;
  const Geometry& g = geometry_;
  const auto d = batch_dims(x.shape()[0], g.in_h, g.in_w, g.channels, g.out_h, g.out_w, g.pad_top,
                            g.pad_left, options_, strides(), channels_first_);
  dx.resize(x.shape());
  if (kind_ == Kind::max) {
    kernels::max_pool2d_backward(d, x.data(), dy.data(), dx.data());
  } else {
    kernels::avg_pool2d_backward(d, dy.data(), dx.data());
  }
}

GlobalAveragePooling2D::GlobalAveragePooling2D() : GlobalAveragePooling2D(Options()) {}
GlobalAveragePooling2D::GlobalAveragePooling2D(Options options)
    : Layer("global_average_pooling2d"), options_(std::move(options)) {
  options_.data_format =
      detail::normalize_data_format("GlobalAveragePooling2D", options_.data_format);
  channels_first_ = options_.data_format == "channels_first";
}

Shape GlobalAveragePooling2D::output_shape(const Shape& input_shape) const {
  const auto img = detail::image_shape(label(), input_shape, channels_first_);
  if (!options_.keepdims) return Shape{img.c};
  return detail::make_image_shape(1, 1, img.c, channels_first_);
}

void GlobalAveragePooling2D::do_build(const Shape& input_shape, Random&) {
  const auto img = detail::image_shape(label(), input_shape, channels_first_);
  spatial_ = img.h * img.w;
  channels_ = img.c;
  output_per_sample_ = output_shape(input_shape);
}

void GlobalAveragePooling2D::do_forward(const Tensor& x, Mode, Tensor& y) {
  const std::int64_t n = x.shape()[0];
  y.resize_batch(n, output_per_sample_);
  // channels_last: (N, H*W, C); channels_first: (N*C, H*W, 1).
  if (channels_first_) {
    kernels::global_avg_pool_forward(n * channels_, spatial_, 1, x.data(), y.data());
  } else {
    kernels::global_avg_pool_forward(n, spatial_, channels_, x.data(), y.data());
  }
}

void GlobalAveragePooling2D::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  if (!compute_dx) return;
  const Tensor& x = *last_input_;
  const std::int64_t n = x.shape()[0];
  dx.resize(x.shape());
  if (channels_first_) {
    kernels::global_avg_pool_backward(n * channels_, spatial_, 1, dy.data(), dx.data());
  } else {
    kernels::global_avg_pool_backward(n, spatial_, channels_, dy.data(), dx.data());
  }
}

GlobalMaxPooling2D::GlobalMaxPooling2D() : GlobalMaxPooling2D(Options()) {}
GlobalMaxPooling2D::GlobalMaxPooling2D(Options options)
    : Layer("global_max_pooling2d"), options_(std::move(options)) {
  options_.data_format = detail::normalize_data_format("GlobalMaxPooling2D", options_.data_format);
  channels_first_ = options_.data_format == "channels_first";
}

Shape GlobalMaxPooling2D::output_shape(const Shape& input_shape) const {
  const auto img = detail::image_shape(label(), input_shape, channels_first_);
  if (!options_.keepdims) return Shape{img.c};
  return detail::make_image_shape(1, 1, img.c, channels_first_);
}

void GlobalMaxPooling2D::do_build(const Shape& input_shape, Random&) {
  const auto img = detail::image_shape(label(), input_shape, channels_first_);
  in_h_ = img.h;
  in_w_ = img.w;
  channels_ = img.c;
  output_per_sample_ = output_shape(input_shape);
}

namespace {
// Global max pooling is max pooling with one window covering the whole image: the output
// (N, 1, 1, C) is (N, C) in memory.
kernels::Pool2dDims global_dims(std::int64_t n, std::int64_t in_h, std::int64_t in_w,
                                std::int64_t channels, bool channels_first) {
  const auto images = detail::nhwc_images(n, channels, channels_first);
  kernels::Pool2dDims d;
  d.batch = images.batch;
  d.channels = images.channels;
  d.in_h = d.pool_h = d.stride_h = in_h;
  d.in_w = d.pool_w = d.stride_w = in_w;
  d.out_h = d.out_w = 1;
  return d;
}
}  // namespace

void GlobalMaxPooling2D::do_forward(const Tensor& x, Mode, Tensor& y) {
  const std::int64_t n = x.shape()[0];
  y.resize_batch(n, output_per_sample_);
  kernels::max_pool2d_forward(global_dims(n, in_h_, in_w_, channels_, channels_first_), x.data(),
                              y.data());
}

// Keras 3 computes the global max with ops.max, so the gradient is TensorFlow's reduce_max one:
// dx = (indicator / ties) * dy, where indicator = [x == max] and ties counts the positions that
// hold the maximum: tied maxima share the gradient evenly (unlike MaxPooling2D's windows).
void GlobalMaxPooling2D::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  if (!compute_dx) return;
  const Tensor& x = *last_input_;
  dx.resize(x.shape());
  const auto images = detail::nhwc_images(x.shape()[0], channels_, channels_first_);
  const std::int64_t hw = in_h_ * in_w_, c_count = images.channels;
  const float* px = x.data();
  const float* py = output_.data();  // (images.batch, channels) in memory, as the forward wrote
  const float* pdy = dy.data();
  float* pdx = dx.data();
  for (std::int64_t b = 0; b < images.batch; ++b) {
    for (std::int64_t c = 0; c < c_count; ++c) {
      const float y = py[b * c_count + c];
      float ties = 0.0f;
      for (std::int64_t p = 0; p < hw; ++p)
        ties += px[(b * hw + p) * c_count + c] == y ? 1.0f : 0.0f;
      const float g = pdy[b * c_count + c];
      for (std::int64_t p = 0; p < hw; ++p) {
        const std::int64_t i = (b * hw + p) * c_count + c;
        pdx[i] = ((px[i] == y ? 1.0f : 0.0f) / ties) * g;
      }
    }
  }
}

}  // namespace bnorm
