// Batch-norm kernels, the fast path: blocking, threads and per-channel math around the
// per-instruction-set bodies in batch_norm_simd.cpp.
//
// Passes over memory (the byte model of `bnorm bench`): statistics in one pass (shifted
// float64 sums), normalize in a second; backward reduces sum(dy) and sum(dy * (x - mean)) in
// one pass and writes dx in a second. A ReLU after BN is fused into both: the forward writes
// max(y, 0), the backward re-derives the mask from x instead of reading a stored one. So is a
// residual Add before the ReLU: the forward writes max(y + shortcut, 0); the backward re-derives
// the mask from x and the shortcut in its first pass and writes the shortcut's gradient there,
// so its second pass reads that masked gradient instead of dy and the shortcut again.
//
// Channels are processed in tiles of kTile. A tile's reduction is split into at most kMaxBlocks
// fixed blocks of rows (or of outer indices, for channels-first data) that depend only on the
// shape; each block's float64 partial sums are combined in block order. Threads only decide
// who computes which block, so results are bitwise identical at any thread count.
#include "kernels/batch_norm.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "bnorm/core/parallel.hpp"
#include "hwy/cache_control.h"
#include "kernels/batch_norm_simd.hpp"

namespace bnorm::kernels {

namespace {

constexpr std::int64_t kTile = 1024;            // channels per tile: whole rows of most layers
constexpr std::int64_t kMaxBlocks = 16;         // reduction blocks per tile
constexpr std::int64_t kPartDoubles = 8192;     // partial sums of all blocks of a tile (64 KiB)
constexpr std::int64_t kBlockElems = 1 << 15;   // smallest reduction block worth its own partials
constexpr std::int64_t kParallelMin = 1 << 16;  // elements; below, threads cost more than they save
constexpr std::int64_t kChunkElems = 1 << 14;   // elements per chunk of an elementwise pass

std::atomic<StreamingStores> g_streaming{[] {
  const char* env = std::getenv("BNORM_NT_STORES");
  if (env && std::strcmp(env, "always") == 0) return StreamingStores::always;
  if (env && std::strcmp(env, "never") == 0) return StreamingStores::never;
  return StreamingStores::automatic;
}()};

bool use_streaming_stores(const BatchNormDims& d) {
  switch (g_streaming.load(std::memory_order_relaxed)) {
    case StreamingStores::always:
      return true;
    case StreamingStores::never:
      return false;
    default:
      return d.size() * static_cast<std::int64_t>(sizeof(float)) >= kStreamingMinBytes;
  }
}

// p + off, or nullptr for an absent optional array.
template <class T>
T* at(T* p, std::int64_t off) {
  return p ? p + off : nullptr;
}

// Calls body(begin, end) over chunks of [0, count): threaded or not, the same chunks.
template <class Body>
void run(bool threaded, std::int64_t count, std::int64_t grain, Body&& body) {
  if (threaded) return parallel_for(count, grain, body);
  for (std::int64_t b = 0; b < count; b += grain) body(b, std::min(count, b + grain));
}

// Blocks for reducing a tile of nc channels, `elems` values in all, split along the outer axis
// of length `extent`; each block keeps 2 * nc partial sums.
std::int64_t reduction_blocks(std::int64_t elems, std::int64_t extent, std::int64_t nc) {
  const std::int64_t cap = std::min({kMaxBlocks, extent, kPartDoubles / (2 * nc)});
  return std::clamp<std::int64_t>(elems / kBlockElems, 1, std::max<std::int64_t>(cap, 1));
}

struct Tile {
  std::int64_t c0, nc;
};

// Runs tile_fn(tile, threaded_inside) over the channel tiles. When every tile is too small to
// split into several reduction blocks, tiles themselves run in parallel; otherwise tiles run in
// order and parallelize inside. Either way each channel's arithmetic is the same.
template <class TileFn>
void for_tiles(const BatchNormDims& d, TileFn&& tile_fn) {
  const std::int64_t tiles = (d.channels + kTile - 1) / kTile;
  const bool threaded = d.size() >= kParallelMin;
  const std::int64_t nc = std::min(kTile, d.channels);
  if (tiles > 1 && reduction_blocks(d.count() * nc, d.outer, nc) == 1) {
    run(threaded, tiles, 1, [&](std::int64_t t0, std::int64_t t1) {
      for (std::int64_t t = t0; t < t1; ++t) {
        const std::int64_t c0 = t * kTile;
        tile_fn(Tile{c0, std::min(kTile, d.channels - c0)}, false);
      }
    });
    return;
  }
  for (std::int64_t c0 = 0; c0 < d.channels; c0 += kTile)
    tile_fn(Tile{c0, std::min(kTile, d.channels - c0)}, threaded);
}

// Float64 per-channel sums s1, s2 (nc each) of a tile, from fixed blocks combined in order.
// rows_fn(r0, r1, s1, s2) accumulates rows [r0, r1) into zeroed arrays (channels-last data);
// plane_fn(o, j, &s1, &s2) returns one (outer, channel) plane's sums (channels-first data).
template <class RowsFn, class PlaneFn>
void reduce_tile(const BatchNormDims& d, Tile t, bool threaded, RowsFn&& rows_fn,
                 PlaneFn&& plane_fn, double* s1, double* s2) {
  const std::int64_t nc = t.nc;
  const std::int64_t blocks = reduction_blocks(d.count() * nc, d.outer, nc);
  double part_storage[kPartDoubles];
  // part(b, 0) and part(b, 1): block b's s1 and s2 arrays.
  auto part = [&](std::int64_t b, int which) { return part_storage + (2 * b + which) * nc; };
  auto block_range = [&](std::int64_t b) {
    return std::pair{b * d.outer / blocks, (b + 1) * d.outer / blocks};
  };
  if (d.inner == 1 && blocks == 1) {  // small batches: straight into the result
    std::fill_n(s1, nc, 0.0);
    std::fill_n(s2, nc, 0.0);
    rows_fn(0, d.outer, s1, s2);
    return;
  }
  if (d.inner == 1) {
    run(threaded, blocks, 1, [&](std::int64_t b0, std::int64_t b1) {
      for (std::int64_t b = b0; b < b1; ++b) {
        std::fill_n(part(b, 0), nc, 0.0);
        std::fill_n(part(b, 1), nc, 0.0);
        const auto [r0, r1] = block_range(b);
        rows_fn(r0, r1, part(b, 0), part(b, 1));
      }
    });
  } else if (blocks >= 4) {
    // Enough blocks to share out: each walks its outer range in memory order (every channel of
    // one image, then the next), a single sequential stream per thread.
    run(threaded, blocks, 1, [&](std::int64_t b0, std::int64_t b1) {
      for (std::int64_t b = b0; b < b1; ++b) {
        double* a1 = part(b, 0);
        double* a2 = part(b, 1);
        std::fill_n(a1, nc, 0.0);
        std::fill_n(a2, nc, 0.0);
        const auto [o0, o1] = block_range(b);
        for (std::int64_t o = o0; o < o1; ++o) {
          for (std::int64_t j = 0; j < nc; ++j) {
            double p1, p2;
            plane_fn(o, j, &p1, &p2);
            a1[j] += p1;
            a2[j] += p2;
          }
        }
        hwy::FlushStream();  // plane_fn may write non-temporally (the fused Add's gradient)
      }
    });
  } else {
    // Few blocks (small outer): share out (block, channel) pairs instead. Each pair's sum runs
    // over o in order, as above, so both ways give the same bits.
    run(threaded, blocks * nc, 1, [&](std::int64_t i0, std::int64_t i1) {
      for (std::int64_t i = i0; i < i1; ++i) {
        const std::int64_t b = i / nc, j = i % nc;
        const auto [o0, o1] = block_range(b);
        double a1 = 0.0, a2 = 0.0;
        for (std::int64_t o = o0; o < o1; ++o) {
          double p1, p2;
          plane_fn(o, j, &p1, &p2);
          a1 += p1;
          a2 += p2;
        }
        part(b, 0)[j] = a1;
        part(b, 1)[j] = a2;
      }
      hwy::FlushStream();  // as above
    });
  }
  for (std::int64_t j = 0; j < nc; ++j) {
    double a1 = 0.0, a2 = 0.0;
    for (std::int64_t b = 0; b < blocks; ++b) {
      a1 += part(b, 0)[j];
      a2 += part(b, 1)[j];
    }
    s1[j] = a1;
    s2[j] = a2;
  }
}

// Channels [c0, c0 + nc) of an elementwise pass: rows_fn(r0, r1) for channels-last data,
// plane_fn(o, j) for each (outer, channel) plane of channels-first data.
template <class RowsFn, class PlaneFn>
void elementwise_tile(const BatchNormDims& d, Tile t, bool threaded, RowsFn&& rows_fn,
                      PlaneFn&& plane_fn) {
  if (d.inner == 1) {
    const std::int64_t grain = std::max<std::int64_t>(1, kChunkElems / d.channels);
    run(threaded, d.outer, grain, rows_fn);
  } else {
    const std::int64_t grain = std::max<std::int64_t>(1, kChunkElems / d.inner);
    run(threaded, d.outer * t.nc, grain, [&](std::int64_t p0, std::int64_t p1) {
      for (std::int64_t p = p0; p < p1; ++p) plane_fn(p / t.nc, p % t.nc);
      hwy::FlushStream();  // orders this chunk's non-temporal stores (cheap when there are none)
    });
  }
}

// Statistics of a tile: shifted sums, then mean = shift + s1/n, var = s2/n - (s1/n)^2.
void tile_moments(const BatchNormDims& d, Tile t, bool threaded, const float* x, float* mean,
                  float* variance) {
  const auto& ops = simd::ops();
  const std::int64_t plane = d.channels * d.inner;
  float shift[kTile];
  for (std::int64_t j = 0; j < t.nc; ++j) shift[j] = x[(t.c0 + j) * d.inner];
  double s1[kTile], s2[kTile];
  reduce_tile(
      d, t, threaded,
      [&](std::int64_t r0, std::int64_t r1, double* a1, double* a2) {
        ops.rows_sums(x + r0 * d.channels + t.c0, d.channels, r1 - r0, t.nc, shift, a1, a2);
      },
      [&](std::int64_t o, std::int64_t j, double* a1, double* a2) {
        ops.plane_sums(x + o * plane + (t.c0 + j) * d.inner, d.inner, shift[j], a1, a2);
      },
      s1, s2);
  ops.finalize_moments(t.nc, shift, s1, s2, static_cast<double>(d.count()), mean + t.c0,
                       variance + t.c0);
}

// y = (x - mean) * inv + beta (then max(., 0) when relu, max(. + shortcut, 0) with a shortcut)
// for a tile.
void tile_normalize(const BatchNormDims& d, Tile t, bool threaded, const float* x,
                    const float* shortcut, const float* mean, const float* variance,
                    const float* gamma, const float* beta, float epsilon, bool relu, bool stream,
                    float* y) {
  const auto& ops = simd::ops();
  float inv[kTile], zeros[kTile];
  const float* m = mean + t.c0;
  ops.channel_inv(t.nc, variance + t.c0, gamma ? gamma + t.c0 : nullptr, epsilon, inv);
  const float* b = beta ? beta + t.c0 : zeros;
  if (!beta) std::fill_n(zeros, t.nc, 0.0f);
  const std::int64_t plane = d.channels * d.inner;
  elementwise_tile(
      d, t, threaded,
      [&](std::int64_t r0, std::int64_t r1) {
        const std::int64_t off = r0 * d.channels + t.c0;
        ops.rows_normalize(x + off, at(shortcut, off), y + off, d.channels, r1 - r0, t.nc, m, inv,
                           b, relu, stream);
      },
      [&](std::int64_t o, std::int64_t j) {
        const std::int64_t off = o * plane + (t.c0 + j) * d.inner;
        ops.plane_normalize(x + off, at(shortcut, off), y + off, d.inner, m[j], inv[j], b[j], relu,
                            stream);
      });
}

void forward_impl(const BatchNormDims& d, const float* x, const float* shortcut, const float* mean,
                  const float* variance, const float* gamma, const float* beta, float epsilon,
                  bool relu, float* y) {
  const bool stream = use_streaming_stores(d);
  for_tiles(d, [&](Tile t, bool threaded) {
    tile_normalize(d, t, threaded, x, shortcut, mean, variance, gamma, beta, epsilon, relu, stream,
                   y);
  });
}

void training_forward_impl(const BatchNormDims& d, const float* x, const float* shortcut,
                           const float* gamma, const float* beta, float epsilon, bool relu,
                           float* batch_mean, float* batch_variance, float* y) {
  const bool stream = use_streaming_stores(d);
  for_tiles(d, [&](Tile t, bool threaded) {
    tile_moments(d, t, threaded, x, batch_mean, batch_variance);
    tile_normalize(d, t, threaded, x, shortcut, batch_mean, batch_variance, gamma, beta, epsilon,
                   relu, stream, y);
  });
}

// relu: the mask of a fused ReLU, over (x - mean) * inv + beta, plus the shortcut when there is
// one. dshortcut (with a shortcut only) receives the masked gradient in the first pass.
void backward_impl(const BatchNormDims& d, const float* x, const float* shortcut, const float* dy,
                   const float* mean, const float* variance, const float* gamma, const float* beta,
                   float epsilon, bool relu, bool batch_statistics, float* dx, float* dshortcut,
                   float* dgamma, float* dbeta) {
  const auto& ops = simd::ops();
  const bool stream = use_streaming_stores(d);
  const double n = static_cast<double>(d.count());
  const std::int64_t plane = d.channels * d.inner;
  for_tiles(d, [&](Tile t, bool threaded) {
    // The fused ReLU's mask needs the forward's inv and beta, computed as the forward does.
    float inv[kTile], zeros[kTile];
    const float* m = mean + t.c0;
    if (relu) ops.channel_inv(t.nc, variance + t.c0, gamma ? gamma + t.c0 : nullptr, epsilon, inv);
    const float* bt = relu && beta ? beta + t.c0 : zeros;
    if (bt == zeros) std::fill_n(zeros, t.nc, 0.0f);
    const float* relu_inv = relu ? inv : nullptr;
    double s1[kTile], s2[kTile];
    reduce_tile(
        d, t, threaded,
        [&](std::int64_t r0, std::int64_t r1, double* a1, double* a2) {
          const std::int64_t off = r0 * d.channels + t.c0;
          ops.rows_grad_sums(x + off, dy + off, d.channels, r1 - r0, t.nc, m, relu_inv, bt,
                             at(shortcut, off), a1, a2, at(dshortcut, off), stream);
        },
        [&](std::int64_t o, std::int64_t j, double* a1, double* a2) {
          const std::int64_t off = o * plane + (t.c0 + j) * d.inner;
          ops.plane_grad_sums(x + off, dy + off, d.inner, m[j], relu, inv[j], bt[j],
                              at(shortcut, off), a1, a2, at(dshortcut, off), stream);
        },
        s1, s2);
    float a[kTile], b[kTile], k[kTile];
    ops.backward_coefficients(t.nc, s1, s2, variance + t.c0, gamma ? gamma + t.c0 : nullptr,
                              epsilon, n, batch_statistics, dgamma ? dgamma + t.c0 : nullptr,
                              dbeta ? dbeta + t.c0 : nullptr, a, b, k);
    if (!dx) return;
    // The shortcut's gradient is the masked dy: read it instead of masking dy again.
    const bool premasked = dshortcut != nullptr;
    const float* g = premasked ? dshortcut : dy;
    const float* mask_inv = premasked ? nullptr : relu_inv;
    const float* mask_shortcut = premasked ? nullptr : shortcut;
    const bool mask = relu && !premasked;
    elementwise_tile(
        d, t, threaded,
        [&](std::int64_t r0, std::int64_t r1) {
          const std::int64_t off = r0 * d.channels + t.c0;
          ops.rows_dx(x + off, g + off, dx + off, d.channels, r1 - r0, t.nc, m, a, b, k, mask_inv,
                      bt, at(mask_shortcut, off), stream);
        },
        [&](std::int64_t o, std::int64_t j) {
          const std::int64_t off = o * plane + (t.c0 + j) * d.inner;
          ops.plane_dx(x + off, g + off, dx + off, d.inner, m[j], a[j], b[j], k[j], mask, inv[j],
                       bt[j], at(mask_shortcut, off), stream);
        });
  });
}

}  // namespace

void set_streaming_stores(StreamingStores mode) noexcept {
  g_streaming.store(mode, std::memory_order_relaxed);
}

void batch_norm_moments(BatchNormDims d, const float* x, float* batch_mean,
                        float* batch_variance) noexcept {
  for_tiles(d, [&](Tile t, bool threaded) {
    tile_moments(d, t, threaded, x, batch_mean, batch_variance);
  });
}

void batch_norm_forward(BatchNormDims d, const float* x, const float* mean, const float* variance,
                        const float* gamma, const float* beta, float epsilon, float* y) noexcept {
  forward_impl(d, x, nullptr, mean, variance, gamma, beta, epsilon, false, y);
}

void batch_norm_forward_relu(BatchNormDims d, const float* x, const float* mean,
                             const float* variance, const float* gamma, const float* beta,
                             float epsilon, float* y) noexcept {
  forward_impl(d, x, nullptr, mean, variance, gamma, beta, epsilon, true, y);
}

void batch_norm_forward_add_relu(BatchNormDims d, const float* x, const float* shortcut,
                                 const float* mean, const float* variance, const float* gamma,
                                 const float* beta, float epsilon, float* y) noexcept {
  forward_impl(d, x, shortcut, mean, variance, gamma, beta, epsilon, true, y);
}

void batch_norm_forward_training(BatchNormDims d, const float* x, const float* gamma,
                                 const float* beta, float epsilon, bool relu, float* batch_mean,
                                 float* batch_variance, float* y) noexcept {
  training_forward_impl(d, x, nullptr, gamma, beta, epsilon, relu, batch_mean, batch_variance, y);
}

void batch_norm_forward_training_add_relu(BatchNormDims d, const float* x, const float* shortcut,
                                          const float* gamma, const float* beta, float epsilon,
                                          float* batch_mean, float* batch_variance,
                                          float* y) noexcept {
  training_forward_impl(d, x, shortcut, gamma, beta, epsilon, true, batch_mean, batch_variance, y);
}

void batch_norm_backward(BatchNormDims d, const float* x, const float* dy, const float* mean,
                         const float* variance, const float* gamma, float epsilon,
                         bool batch_statistics, float* dx, float* dgamma, float* dbeta) noexcept {
  backward_impl(d, x, nullptr, dy, mean, variance, gamma, nullptr, epsilon, false, batch_statistics,
                dx, nullptr, dgamma, dbeta);
}

void batch_norm_relu_backward(BatchNormDims d, const float* x, const float* dy, const float* mean,
                              const float* variance, const float* gamma, const float* beta,
                              float epsilon, bool batch_statistics, float* dx, float* dgamma,
                              float* dbeta) noexcept {
  backward_impl(d, x, nullptr, dy, mean, variance, gamma, beta, epsilon, true, batch_statistics, dx,
                nullptr, dgamma, dbeta);
}

void batch_norm_add_relu_backward(BatchNormDims d, const float* x, const float* shortcut,
                                  const float* dy, const float* mean, const float* variance,
                                  const float* gamma, const float* beta, float epsilon,
                                  bool batch_statistics, float* dx, float* dshortcut, float* dgamma,
                                  float* dbeta) noexcept {
  backward_impl(d, x, shortcut, dy, mean, variance, gamma, beta, epsilon, true, batch_statistics,
                dx, dshortcut, dgamma, dbeta);
}

void batch_norm_update_moving(std::int64_t channels, const float* batch_mean,
                              const float* batch_variance, double momentum, float variance_scale,
                              float* moving_mean, float* moving_variance) noexcept {
  const float keep = static_cast<float>(momentum), take = static_cast<float>(1.0 - momentum);
  for (std::int64_t c = 0; c < channels; ++c) {
    moving_mean[c] = moving_mean[c] * keep + batch_mean[c] * take;
    moving_variance[c] = moving_variance[c] * keep + batch_variance[c] * variance_scale * take;
  }
}

}  // namespace bnorm::kernels
