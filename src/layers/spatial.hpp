// src/layers/spatial.hpp — argument checks and messages shared by the 2-D (image) layers.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "bnorm/core/tensor.hpp"

namespace bnorm::detail {

// "3x3"
std::string pair_str(const std::array<std::int64_t, 2>& v);
// A per-sample shape with the batch shown as Keras does: "(None, 28, 28, 1)".
std::string batch_shape_str(const Shape& per_sample);
// Lower-cases and checks Keras's padding ("valid", "same"); ValueError naming `who` otherwise.
std::string normalize_padding(const std::string& who, const std::string& padding);
// Lower-cases and checks Keras's data_format ("channels_last", "channels_first").
std::string normalize_data_format(const std::string& who, const std::string& data_format);
// Each entry >= 1; ValueError "<who>: <what> must be >= 1; received 0x3" otherwise.
void check_positive_pair(const std::string& who, const char* what,
                         const std::array<std::int64_t, 2>& v);

// (H, W, C) of a per-sample image shape (rank 3; (C, H, W) when channels_first), or a
// ShapeError naming the layer and the received shape.
struct ImageShape {
  std::int64_t h, w, c;
};
ImageShape image_shape(const std::string& label, const Shape& per_sample, bool channels_first);
// Per-sample shape from (H, W, C) in the layer's data format.
Shape make_image_shape(std::int64_t h, std::int64_t w, std::int64_t c, bool channels_first);

// The window of a convolution or pooling over one sample (Keras's output size and leading pads,
// kernels::conv_axis_geometry on each axis), or a ShapeError naming the layer when the (dilated)
// window is larger than the input with padding 'valid': "<label>: <what> 3x3 [with dilation_rate
// 2x2 (a 5x5 window)] is larger than the input 2x2 with padding 'valid'". `what` names the window
// argument ("kernel_size", "pool_size").
struct WindowGeometry {
  std::int64_t in_h, in_w, channels, out_h, out_w, pad_top, pad_left;
};
WindowGeometry window_geometry(const std::string& label, const Shape& per_sample,
                               bool channels_first, const char* what,
                               const std::array<std::int64_t, 2>& window,
                               const std::array<std::int64_t, 2>& strides,
                               const std::array<std::int64_t, 2>& dilation_rate, bool same_padding);

// The NHWC kernel dims (kernels::Conv2dDims, DepthwiseConv2dDims) of a batch through a layer's
// window: sizes from its geometry (any struct with in_h, in_w, out_h, out_w, pad_top, pad_left),
// `channels` input channels, kernel_size/strides/dilation_rate from its Keras options. The caller
// sets the output-channel field (filters, depth_multiplier).
template <class Dims, class Geometry, class Options>
Dims window_dims(std::int64_t batch, std::int64_t channels, const Geometry& g, const Options& o) {
  Dims d;
  d.batch = batch;
  d.in_h = g.in_h;
  d.in_w = g.in_w;
  d.in_c = channels;
  d.kernel_h = o.kernel_size[0];
  d.kernel_w = o.kernel_size[1];
  d.stride_h = o.strides[0];
  d.stride_w = o.strides[1];
  d.dilation_h = o.dilation_rate[0];
  d.dilation_w = o.dilation_rate[1];
  d.pad_top = g.pad_top;
  d.pad_left = g.pad_left;
  d.out_h = g.out_h;
  d.out_w = g.out_w;
  return d;
}

// How the NHWC image kernels see a batch of n images of `channels` channels: channels_last as
// is; channels_first as n*channels single-channel images (each channel plane is an image).
struct NhwcImages {
  std::int64_t batch, channels;
};
inline NhwcImages nhwc_images(std::int64_t n, std::int64_t channels, bool channels_first) {
  return channels_first ? NhwcImages{n * channels, 1} : NhwcImages{n, channels};
}

// (batch, per_sample...)
Shape with_batch(std::int64_t batch, const Shape& per_sample);

}  // namespace bnorm::detail
