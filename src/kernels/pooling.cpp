#include "kernels/pooling.hpp"

#include <algorithm>
#include <bit>
#include <cstdint>

#include "bnorm/core/parallel.hpp"

namespace bnorm::kernels {

namespace {

// Samples per chunk: about kTargetValues input values per chunk; depends on the shape only.
constexpr std::int64_t kTargetValues = 1 << 16;
std::int64_t grain_for(std::int64_t values_per_sample) noexcept {
  return std::max<std::int64_t>(1, kTargetValues / std::max<std::int64_t>(1, values_per_sample));
}

// Channels handled per pass with stack-held state (max pooling's argmax, GAP's float64 sums).
constexpr std::int64_t kChannelBlock = 256;

struct Window {
  std::int64_t h0, h1, w0, w1;  // [h0, h1) x [w0, w1), clipped to the input
  std::int64_t count() const noexcept { return (h1 - h0) * (w1 - w0); }
};
Window window(const Pool2dDims& d, std::int64_t oh, std::int64_t ow) noexcept {
  const std::int64_t h = oh * d.stride_h - d.pad_top, w = ow * d.stride_w - d.pad_left;
  return {std::max<std::int64_t>(h, 0), std::min(h + d.pool_h, d.in_h),
          std::max<std::int64_t>(w, 0), std::min(w + d.pool_w, d.in_w)};
}

std::int64_t sample_values(const Pool2dDims& d) noexcept { return d.in_h * d.in_w * d.channels; }

// Calls body(n, oh, ow, win, x_offset_of_sample, y_offset_of_output) for samples [n0, n1).
template <class Body>
void for_each_window(const Pool2dDims& d, std::int64_t n0, std::int64_t n1, Body&& body) {
  for (std::int64_t n = n0; n < n1; ++n)
    for (std::int64_t oh = 0; oh < d.out_h; ++oh)
      for (std::int64_t ow = 0; ow < d.out_w; ++ow)
        body(window(d, oh, ow), n * sample_values(d),
             ((n * d.out_h + oh) * d.out_w + ow) * d.channels);
}

}  // namespace

void max_pool2d_forward(const Pool2dDims& d, const float* x, float* y) noexcept {
  const std::int64_t C = d.channels;
  parallel_for(d.batch, grain_for(sample_values(d)), [&](std::int64_t n0, std::int64_t n1) {
    for_each_window(d, n0, n1, [&](const Window& win, std::int64_t xs, std::int64_t yo) {
      float* out = y + yo;
      const float* first = x + xs + (win.h0 * d.in_w + win.w0) * C;
      std::copy(first, first + C, out);
      for (std::int64_t h = win.h0; h < win.h1; ++h)
        for (std::int64_t w = win.w0; w < win.w1; ++w) {
          const float* v = x + xs + (h * d.in_w + w) * C;
          for (std::int64_t c = 0; c < C; ++c) out[c] = v[c] > out[c] ? v[c] : out[c];
        }
    });
  });
}

void max_pool2d_backward(const Pool2dDims& d, const float* x, const float* dy, float* dx) noexcept {
  const std::int64_t C = d.channels;
  parallel_for(d.batch, grain_for(sample_values(d)), [&](std::int64_t n0, std::int64_t n1) {
    std::fill(dx + n0 * sample_values(d), dx + n1 * sample_values(d), 0.0f);
    for_each_window(d, n0, n1, [&](const Window& win, std::int64_t xs, std::int64_t yo) {
      for (std::int64_t c0 = 0; c0 < C; c0 += kChannelBlock) {
        const std::int64_t nc = std::min(kChannelBlock, C - c0);
        const float* sample = x + xs + c0;
        float* dsample = dx + xs + c0;
        // The window's maximum, as the forward pass finds it (strictly greater replaces).
        float best[kChannelBlock], grad[kChannelBlock];
        const float* first = sample + (win.h0 * d.in_w + win.w0) * C;
        std::copy(first, first + nc, best);
        std::copy(dy + yo + c0, dy + yo + c0 + nc, grad);
        for (std::int64_t h = win.h0; h < win.h1; ++h)
          for (std::int64_t w = win.w0; w < win.w1; ++w) {
            const float* v = sample + (h * d.in_w + w) * C;
            for (std::int64_t c = 0; c < nc; ++c) best[c] = v[c] > best[c] ? v[c] : best[c];
          }
        // The first position equal to the maximum is the forward's argmax (an earlier equal
        // value would have been kept); a NaN maximum comes only from a NaN first position. Each
        // channel's gradient is zeroed once taken, so later ties get nothing. Branch-free, so
        // the channel loop vectorizes.
        for (std::int64_t h = win.h0; h < win.h1; ++h)
          for (std::int64_t w = win.w0; w < win.w1; ++w) {
            const std::int64_t at = (h * d.in_w + w) * C;
            const float* v = sample + at;
            float* g = dsample + at;
            for (std::int64_t c = 0; c < nc; ++c) {
              const bool hit = (v[c] == best[c]) | ((v[c] != v[c]) & (best[c] != best[c]));
              const std::uint32_t mask = 0u - static_cast<std::uint32_t>(hit);
              const std::uint32_t bits = std::bit_cast<std::uint32_t>(grad[c]);
              g[c] += std::bit_cast<float>(bits & mask);
              grad[c] = std::bit_cast<float>(bits & ~mask);
            }
          }
      }
    });
  });
}

void avg_pool2d_forward(const Pool2dDims& d, const float* x, float* y) noexcept {
  const std::int64_t C = d.channels;
  parallel_for(d.batch, grain_for(sample_values(d)), [&](std::int64_t n0, std::int64_t n1) {
    for_each_window(d, n0, n1, [&](const Window& win, std::int64_t xs, std::int64_t yo) {
      float* out = y + yo;
      std::fill(out, out + C, 0.0f);
      for (std::int64_t h = win.h0; h < win.h1; ++h)
        for (std::int64_t w = win.w0; w < win.w1; ++w) {
          const float* v = x + xs + (h * d.in_w + w) * C;
          for (std::int64_t c = 0; c < C; ++c) out[c] += v[c];
        }
      const float count = static_cast<float>(win.count());
      for (std::int64_t c = 0; c < C; ++c) out[c] /= count;
    });
  });
}

void avg_pool2d_backward(const Pool2dDims& d, const float* dy, float* dx) noexcept {
  const std::int64_t C = d.channels;
  parallel_for(d.batch, grain_for(sample_values(d)), [&](std::int64_t n0, std::int64_t n1) {
    std::fill(dx + n0 * sample_values(d), dx + n1 * sample_values(d), 0.0f);
    for_each_window(d, n0, n1, [&](const Window& win, std::int64_t xs, std::int64_t yo) {
      const float count = static_cast<float>(win.count());
      for (std::int64_t h = win.h0; h < win.h1; ++h)
        for (std::int64_t w = win.w0; w < win.w1; ++w) {
          float* out = dx + xs + (h * d.in_w + w) * C;
          for (std::int64_t c = 0; c < C; ++c) out[c] += dy[yo + c] / count;
        }
    });
  });
}

void global_avg_pool_forward(std::int64_t outer, std::int64_t spatial, std::int64_t channels,
                             const float* x, float* y) noexcept {
  parallel_for(outer, grain_for(spatial * channels), [&](std::int64_t o0, std::int64_t o1) {
    for (std::int64_t o = o0; o < o1; ++o) {
      const float* xo = x + o * spatial * channels;
      for (std::int64_t c0 = 0; c0 < channels; c0 += kChannelBlock) {
        const std::int64_t nc = std::min(kChannelBlock, channels - c0);
        double acc[kChannelBlock] = {};
        for (std::int64_t s = 0; s < spatial; ++s) {
          const float* v = xo + s * channels + c0;
          for (std::int64_t c = 0; c < nc; ++c) acc[c] += v[c];
        }
        for (std::int64_t c = 0; c < nc; ++c)
          y[o * channels + c0 + c] = static_cast<float>(acc[c] / static_cast<double>(spatial));
      }
    }
  });
}

void global_avg_pool_backward(std::int64_t outer, std::int64_t spatial, std::int64_t channels,
                              const float* dy, float* dx) noexcept {
  const float inv = 1.0f / static_cast<float>(spatial);
  parallel_for(outer, grain_for(spatial * channels), [&](std::int64_t o0, std::int64_t o1) {
    for (std::int64_t o = o0; o < o1; ++o) {
      float* dxo = dx + o * spatial * channels;
      const float* g = dy + o * channels;
      for (std::int64_t s = 0; s < spatial; ++s)
        for (std::int64_t c = 0; c < channels; ++c) dxo[s * channels + c] = g[c] * inv;
    }
  });
}

namespace reference {

namespace {
std::int64_t x_index(const Pool2dDims& d, std::int64_t n, std::int64_t h, std::int64_t w,
                     std::int64_t c) {
  return ((n * d.in_h + h) * d.in_w + w) * d.channels + c;
}
std::int64_t y_index(const Pool2dDims& d, std::int64_t n, std::int64_t oh, std::int64_t ow,
                     std::int64_t c) {
  return ((n * d.out_h + oh) * d.out_w + ow) * d.channels + c;
}
// Index of the first maximum of window (oh, ow) for channel c, scanning rows then columns.
std::int64_t first_max(const Pool2dDims& d, const float* x, std::int64_t n, std::int64_t oh,
                       std::int64_t ow, std::int64_t c) {
  std::int64_t at = -1;
  for (std::int64_t i = 0; i < d.pool_h; ++i)
    for (std::int64_t j = 0; j < d.pool_w; ++j) {
      const std::int64_t h = oh * d.stride_h - d.pad_top + i;
      const std::int64_t w = ow * d.stride_w - d.pad_left + j;
      if (h < 0 || h >= d.in_h || w < 0 || w >= d.in_w) continue;
      const std::int64_t k = x_index(d, n, h, w, c);
      if (at < 0 || x[k] > x[at]) at = k;
    }
  return at;
}
}  // namespace

void max_pool2d_forward(const Pool2dDims& d, const float* x, float* y) noexcept {
  for (std::int64_t n = 0; n < d.batch; ++n)
    for (std::int64_t oh = 0; oh < d.out_h; ++oh)
      for (std::int64_t ow = 0; ow < d.out_w; ++ow)
        for (std::int64_t c = 0; c < d.channels; ++c)
          y[y_index(d, n, oh, ow, c)] = x[first_max(d, x, n, oh, ow, c)];
}

void max_pool2d_backward(const Pool2dDims& d, const float* x, const float* dy, float* dx) noexcept {
  std::fill(dx, dx + d.x_size(), 0.0f);
  for (std::int64_t n = 0; n < d.batch; ++n)
    for (std::int64_t oh = 0; oh < d.out_h; ++oh)
      for (std::int64_t ow = 0; ow < d.out_w; ++ow)
        for (std::int64_t c = 0; c < d.channels; ++c)
          dx[first_max(d, x, n, oh, ow, c)] += dy[y_index(d, n, oh, ow, c)];
}

void avg_pool2d_forward(const Pool2dDims& d, const float* x, float* y) noexcept {
  for (std::int64_t n = 0; n < d.batch; ++n)
    for (std::int64_t oh = 0; oh < d.out_h; ++oh)
      for (std::int64_t ow = 0; ow < d.out_w; ++ow)
        for (std::int64_t c = 0; c < d.channels; ++c) {
          double sum = 0.0;
          int count = 0;
          for (std::int64_t i = 0; i < d.pool_h; ++i)
            for (std::int64_t j = 0; j < d.pool_w; ++j) {
              const std::int64_t h = oh * d.stride_h - d.pad_top + i;
              const std::int64_t w = ow * d.stride_w - d.pad_left + j;
              if (h < 0 || h >= d.in_h || w < 0 || w >= d.in_w) continue;
              sum += x[x_index(d, n, h, w, c)];
              ++count;
            }
          y[y_index(d, n, oh, ow, c)] = static_cast<float>(sum / count);
        }
}

void avg_pool2d_backward(const Pool2dDims& d, const float* dy, float* dx) noexcept {
  // Count of each window, then dx gathers dy / count in float64.
  std::fill(dx, dx + d.x_size(), 0.0f);
  for (std::int64_t n = 0; n < d.batch; ++n)
    for (std::int64_t h = 0; h < d.in_h; ++h)
      for (std::int64_t w = 0; w < d.in_w; ++w)
        for (std::int64_t c = 0; c < d.channels; ++c) {
          double acc = 0.0;
          for (std::int64_t oh = 0; oh < d.out_h; ++oh)
            for (std::int64_t ow = 0; ow < d.out_w; ++ow) {
              const std::int64_t h0 = oh * d.stride_h - d.pad_top;
              const std::int64_t w0 = ow * d.stride_w - d.pad_left;
              if (h < h0 || h >= h0 + d.pool_h || w < w0 || w >= w0 + d.pool_w) continue;
              const std::int64_t ch =
                  std::min(h0 + d.pool_h, d.in_h) - std::max<std::int64_t>(h0, 0);
              const std::int64_t cw =
                  std::min(w0 + d.pool_w, d.in_w) - std::max<std::int64_t>(w0, 0);
              acc +=
                  static_cast<double>(dy[y_index(d, n, oh, ow, c)]) / static_cast<double>(ch * cw);
            }
          dx[x_index(d, n, h, w, c)] = static_cast<float>(acc);
        }
}

void global_avg_pool_forward(std::int64_t outer, std::int64_t spatial, std::int64_t channels,
                             const float* x, float* y) noexcept {
  for (std::int64_t o = 0; o < outer; ++o)
    for (std::int64_t c = 0; c < channels; ++c) {
      double sum = 0.0;
      for (std::int64_t s = 0; s < spatial; ++s) sum += x[(o * spatial + s) * channels + c];
      y[o * channels + c] = static_cast<float>(sum / static_cast<double>(spatial));
    }
}

void global_avg_pool_backward(std::int64_t outer, std::int64_t spatial, std::int64_t channels,
                              const float* dy, float* dx) noexcept {
  for (std::int64_t o = 0; o < outer; ++o)
    for (std::int64_t s = 0; s < spatial; ++s)
      for (std::int64_t c = 0; c < channels; ++c)
        dx[(o * spatial + s) * channels + c] =
            static_cast<float>(static_cast<double>(dy[o * channels + c]) / spatial);
}

}  // namespace reference

}  // namespace bnorm::kernels
