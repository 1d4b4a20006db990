#include "bnorm/layers/zero_padding2d.hpp"

#include "bnorm/core/error.hpp"
#include "kernels/padding.hpp"
#include "layers/spatial.hpp"

namespace bnorm {

namespace {
ZeroPadding2D::Options symmetric(std::int64_t h, std::int64_t w) {
  ZeroPadding2D::Options o;
  o.padding = {{{h, h}, {w, w}}};
  return o;
}
std::string padding_str(const ZeroPadding2D::Padding& p) {
  return "((" + std::to_string(p[0][0]) + ", " + std::to_string(p[0][1]) + "), (" +
         std::to_string(p[1][0]) + ", " + std::to_string(p[1][1]) + "))";
}
}  // namespace

ZeroPadding2D::ZeroPadding2D() : ZeroPadding2D(Options()) {}
ZeroPadding2D::ZeroPadding2D(std::int64_t padding) : ZeroPadding2D(symmetric(padding, padding)) {}
ZeroPadding2D::ZeroPadding2D(std::int64_t sym_height, std::int64_t sym_width)
    : ZeroPadding2D(symmetric(sym_height, sym_width)) {}

ZeroPadding2D::ZeroPadding2D(Options options)
    : Layer("zero_padding2d"), options_(std::move(options)) {
  const std::string who = "ZeroPadding2D";
  for (const auto& axis : options_.padding)
    for (std::int64_t v : axis)
      if (v < 0) {
        throw ValueError(who + ": padding must be >= 0; received " + padding_str(options_.padding));
      }
  options_.data_format = detail::normalize_data_format(who, options_.data_format);
  channels_first_ = options_.data_format == "channels_first";
}

Shape ZeroPadding2D::output_shape(const Shape& input_shape) const {
  const auto img = detail::image_shape(label(), input_shape, channels_first_);
  const auto& p = options_.padding;
  return detail::make_image_shape(img.h + p[0][0] + p[0][1], img.w + p[1][0] + p[1][1], img.c,
                                  channels_first_);
}

void ZeroPadding2D::do_build(const Shape& input_shape, Random&) {
  const auto img = detail::image_shape(label(), input_shape, channels_first_);
  in_h_ = img.h;
  in_w_ = img.w;
  channels_ = img.c;
  output_per_sample_ = output_shape(input_shape);
}

namespace {
kernels::ZeroPad2dDims pad_dims(std::int64_t n, std::int64_t in_h, std::int64_t in_w,
                                std::int64_t channels, const ZeroPadding2D::Padding& p,
                                bool channels_first) {
  const auto images = detail::nhwc_images(n, channels, channels_first);
  kernels::ZeroPad2dDims d;
  d.batch = images.batch;
  d.channels = images.channels;
  d.in_h = in_h;
  d.in_w = in_w;
  d.top = p[0][0];
  d.bottom = p[0][1];
  d.left = p[1][0];
  d.right = p[1][1];
  return d;
}
}  // namespace

void ZeroPadding2D::do_forward(const Tensor& x, Mode, Tensor& y) {
  const std::int64_t n = x.shape()[0];
  y.resize(detail::with_batch(n, output_per_sample_));
  kernels::zero_pad2d_forward(
      pad_dims(n, in_h_, in_w_, channels_, options_.padding, channels_first_), x.data(), y.data());
}

void ZeroPadding2D::do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) {
  if (!compute_dx) return;
  const Tensor& x = *last_input_;
  dx.resize(x.shape());
  kernels::zero_pad2d_backward(
      pad_dims(x.shape()[0], in_h_, in_w_, channels_, options_.padding, channels_first_), dy.data(),
      dx.data());
}

}  // namespace bnorm
