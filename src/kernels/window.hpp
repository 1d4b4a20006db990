// src/kernels/window.hpp — the sliding-window walks of the convolution kernels (conv2d,
// depthwise_conv2d: fast paths and references), written once.
//
// `Dims` is any NHWC dims struct with batch, in_h, in_w, kernel_h, kernel_w, stride_h, stride_w,
// dilation_h, dilation_w, pad_top, pad_left, out_h, out_w (Conv2dDims, DepthwiseConv2dDims).
// Output position (oh, ow) reads, at kernel tap (i, j), input position
//   ih = oh*stride_h - pad_top + i*dilation_h,  iw = ow*stride_w - pad_left + j*dilation_w,
// and a position outside the input is zero padding (skipped). Every walk visits in a fixed,
// documented order, so sums built from it are the same at any thread count.
#pragma once

#include <cstdint>

namespace bnorm::kernels::window {

template <class Dims>
inline std::int64_t input_row(const Dims& d, std::int64_t oh, std::int64_t i) noexcept {
  return oh * d.stride_h - d.pad_top + i * d.dilation_h;
}
template <class Dims>
inline std::int64_t input_col(const Dims& d, std::int64_t ow, std::int64_t j) noexcept {
  return ow * d.stride_w - d.pad_left + j * d.dilation_w;
}

// Pixel indices (multiply by the channel count for an element offset) of NHWC x and y.
template <class Dims>
inline std::int64_t input_pixel(const Dims& d, std::int64_t n, std::int64_t ih,
                                std::int64_t iw) noexcept {
  return (n * d.in_h + ih) * d.in_w + iw;
}
template <class Dims>
inline std::int64_t output_pixel(const Dims& d, std::int64_t n, std::int64_t oh,
                                 std::int64_t ow) noexcept {
  return (n * d.out_h + oh) * d.out_w + ow;
}

// f(n, oh, ow) for samples [n0, n1) and every output position, in (n, oh, ow) order.
template <class Dims, class F>
inline void for_each_output(const Dims& d, std::int64_t n0, std::int64_t n1, F&& f) {
  for (std::int64_t n = n0; n < n1; ++n)
    for (std::int64_t oh = 0; oh < d.out_h; ++oh)
      for (std::int64_t ow = 0; ow < d.out_w; ++ow) f(n, oh, ow);
}

// f(n, ih, iw, c) for every element of x, in memory order.
template <class Dims, class F>
inline void for_each_input(const Dims& d, F&& f) {
  for (std::int64_t n = 0; n < d.batch; ++n)
    for (std::int64_t ih = 0; ih < d.in_h; ++ih)
      for (std::int64_t iw = 0; iw < d.in_w; ++iw)
        for (std::int64_t c = 0; c < d.in_c; ++c) f(n, ih, iw, c);
}

// f(i, j, c) for every kernel tap and input channel, in the kernel's memory order.
template <class Dims, class F>
inline void for_each_tap_channel(const Dims& d, F&& f) {
  for (std::int64_t i = 0; i < d.kernel_h; ++i)
    for (std::int64_t j = 0; j < d.kernel_w; ++j)
      for (std::int64_t c = 0; c < d.in_c; ++c) f(i, j, c);
}

// f(i, j, ih, iw) for each tap of output position (oh, ow) that reads inside the input, taps in
// row-major order.
template <class Dims, class F>
inline void for_each_tap(const Dims& d, std::int64_t oh, std::int64_t ow, F&& f) {
  for (std::int64_t i = 0; i < d.kernel_h; ++i) {
    const std::int64_t ih = input_row(d, oh, i);
    if (ih < 0 || ih >= d.in_h) continue;
    for (std::int64_t j = 0; j < d.kernel_w; ++j) {
      const std::int64_t iw = input_col(d, ow, j);
      if (iw < 0 || iw >= d.in_w) continue;
      f(i, j, ih, iw);
    }
  }
}

// f(n, oh, ow, ih, iw) for every sample and output position at which tap (i, j) reads inside the
// input, in (n, oh, ow) order: the terms of a kernel-gradient sum.
template <class Dims, class F>
inline void for_each_position_of_tap(const Dims& d, std::int64_t i, std::int64_t j, F&& f) {
  for (std::int64_t n = 0; n < d.batch; ++n)
    for (std::int64_t oh = 0; oh < d.out_h; ++oh) {
      const std::int64_t ih = input_row(d, oh, i);
      if (ih < 0 || ih >= d.in_h) continue;
      for (std::int64_t ow = 0; ow < d.out_w; ++ow) {
        const std::int64_t iw = input_col(d, ow, j);
        if (iw < 0 || iw >= d.in_w) continue;
        f(n, oh, ow, ih, iw);
      }
    }
}

// f(i, j, oh, ow) for every (tap, output position) that reads input position (ih, iw), taps in
// row-major order: ih = oh*sh - pad_top + i*dh  <=>  oh = (ih + pad_top - i*dh) / sh when
// divisible. The gather form of an input gradient (the references use it).
template <class Dims, class F>
inline void for_each_reader(const Dims& d, std::int64_t ih, std::int64_t iw, F&& f) {
  for (std::int64_t i = 0; i < d.kernel_h; ++i) {
    const std::int64_t th = ih + d.pad_top - i * d.dilation_h;
    if (th < 0 || th % d.stride_h != 0 || th / d.stride_h >= d.out_h) continue;
    for (std::int64_t j = 0; j < d.kernel_w; ++j) {
      const std::int64_t tw = iw + d.pad_left - j * d.dilation_w;
      if (tw < 0 || tw % d.stride_w != 0 || tw / d.stride_w >= d.out_w) continue;
      f(i, j, th / d.stride_h, tw / d.stride_w);
    }
  }
}

}  // namespace bnorm::kernels::window
