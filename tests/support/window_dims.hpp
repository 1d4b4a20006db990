// tests/support/window_dims.hpp — a test case's square strides and dilation with Keras's
// 'valid'/'same' geometry, written into kernel dims (kernels::Conv2dDims, DepthwiseConv2dDims)
// whose input and kernel sizes are already set.
#pragma once

#include <cstdint>

#include "kernels/conv2d.hpp"

namespace bnorm::test {

template <class Dims>
void set_window(Dims& d, std::int64_t stride, std::int64_t dilation, bool same) {
  d.stride_h = d.stride_w = stride;
  d.dilation_h = d.dilation_w = dilation;
  const auto gh = kernels::conv_axis_geometry(d.in_h, d.kernel_h, stride, dilation, same);
  const auto gw = kernels::conv_axis_geometry(d.in_w, d.kernel_w, stride, dilation, same);
  d.out_h = gh.out;
  d.out_w = gw.out;
  d.pad_top = gh.pad_before;
  d.pad_left = gw.pad_before;
}

}  // namespace bnorm::test
