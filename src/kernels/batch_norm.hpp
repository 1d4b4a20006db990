// src/kernels/batch_norm.hpp — stateless batch-normalization math over raw float32 memory.
//
// Layout: x is viewed as [outer, channels, inner] (row-major). The normalized axis is the
// middle one; statistics reduce over outer and inner, count = outer * inner. Keras axis=-1 on
// (N, ..., C) is outer = N*..., inner = 1; axis=1 on (N, C, H, W) is outer = N, inner = H*W.
//
// Every kernel is noexcept, allocates nothing and assumes valid arguments: the layer validates.
// Each has a scalar float64 reference in namespace `reference` (the executable specification)
// that tests compare the fast version with.
#pragma once

#include <cstdint>

namespace bnorm::kernels {

struct BatchNormDims {
  std::int64_t outer = 1;
  std::int64_t channels = 0;
  std::int64_t inner = 1;
  std::int64_t count() const noexcept { return outer * inner; }  // values per channel
  std::int64_t size() const noexcept { return outer * channels * inner; }
};

// Outputs of at least this many bytes are written with non-temporal stores: a quarter of this
// machine's 32 MiB L3 and up, normal stores would evict most of the input (and the rest of the
// working set) for an output nobody reads before it is evicted itself; streaming also skips the
// read-for-ownership of each line. Measured: (4096, 1024) inference 1071 -> 625 us,
// (25088, 256) 1539 -> 1250 us on one thread.
inline constexpr std::int64_t kStreamingMinBytes = std::int64_t{8} << 20;
enum class StreamingStores { automatic, always, never };
// For measurements and tests (initially from BNORM_NT_STORES=always|never, else automatic).
void set_streaming_stores(StreamingStores mode) noexcept;

// Biased moments per channel (divide by count), as Keras and PyTorch normalize with.
// One pass of float64 sums of v = x - K, K = the channel's first value: mean = K + sum(v)/n,
// variance = sum(v^2)/n - (sum(v)/n)^2. Never E[x^2] - E[x]^2 on raw float32 data, which
// cancels catastrophically for |mean| >> std; shifted by a value of the data, the float64
// difference loses at most ~1e-16 * n relative. (The reference is the two-pass formula.)
void batch_norm_moments(BatchNormDims dims, const float* x, float* batch_mean,
                        float* batch_variance) noexcept;

// y = (x - mean) * inv + beta, inv = gamma / sqrt(variance + epsilon).
// gamma == nullptr means scale=False (gamma = 1); beta == nullptr means center=False (beta = 0).
// (TF's Keras backend writes this as x * inv + (beta - mean * inv): equal in exact arithmetic;
// subtracting the mean first keeps precision when |mean| >> std.)
void batch_norm_forward(BatchNormDims dims, const float* x, const float* mean,
                        const float* variance, const float* gamma, const float* beta, float epsilon,
                        float* y) noexcept;

// y = max(batch_norm_forward(...), 0): BN followed by ReLU in one pass (oneDNN's
// fuse_norm_relu), as Conv/Dense -> BatchNormalization -> ReLU networks use it.
void batch_norm_forward_relu(BatchNormDims dims, const float* x, const float* mean,
                             const float* variance, const float* gamma, const float* beta,
                             float epsilon, float* y) noexcept;

// y = max(batch_norm_forward(...) + shortcut, 0): the tail of a ResNet residual block
// (BatchNormalization -> Add -> ReLU) in one pass; shortcut has x's shape and layout. The BN
// value is rounded to float32 before the add, exactly as the unfused layers compute it, so y is
// bit-identical to max(float(bn) + shortcut, 0) (the add is never contracted into BN's FMA).
void batch_norm_forward_add_relu(BatchNormDims dims, const float* x, const float* shortcut,
                                 const float* mean, const float* variance, const float* gamma,
                                 const float* beta, float epsilon, float* y) noexcept;

// Training forward: batch_mean/batch_variance = batch_norm_moments(x), then
// y = batch_norm_forward(x, batch_mean, batch_variance, ...), with the ReLU fused when relu.
// Three passes over memory: one for the statistics, a read and a write for y.
void batch_norm_forward_training(BatchNormDims dims, const float* x, const float* gamma,
                                 const float* beta, float epsilon, bool relu, float* batch_mean,
                                 float* batch_variance, float* y) noexcept;

// Training forward of BN -> Add -> ReLU: batch_mean/batch_variance = batch_norm_moments(x), then
// y = batch_norm_forward_add_relu(x, shortcut, batch_mean, batch_variance, ...). Four passes:
// statistics, then a read of x and of shortcut and a write of y.
void batch_norm_forward_training_add_relu(BatchNormDims dims, const float* x, const float* shortcut,
                                          const float* gamma, const float* beta, float epsilon,
                                          float* batch_mean, float* batch_variance,
                                          float* y) noexcept;

// Gradients of y = batch_norm_forward(x, mean, variance, ...) given dy.
// batch_statistics = true: mean/variance are the batch's own moments of x (training mode), so
//   they depend on x:  xhat = (x - mean) * rstd,  dbeta = sum(dy),  dgamma = sum(dy * xhat),
//   dx = gamma * rstd / count * (count * dy - dbeta - xhat * dgamma).
// batch_statistics = false: mean/variance are constants (moving statistics, inference mode or
//   trainable=False): dx = gamma * rstd * dy, with dgamma/dbeta as above.
// dx, dgamma, dbeta may each be nullptr to skip that output.
void batch_norm_backward(BatchNormDims dims, const float* x, const float* dy, const float* mean,
                         const float* variance, const float* gamma, float epsilon,
                         bool batch_statistics, float* dx, float* dgamma, float* dbeta) noexcept;

// Gradients of y = max(batch_norm_forward(x, ...), 0) given dy: batch_norm_backward applied to
// dy * [pre > 0], where pre is recomputed from x exactly as batch_norm_forward_relu computes it,
// so the mask equals (y > 0) of that forward without storing it. beta as in the forward.
void batch_norm_relu_backward(BatchNormDims dims, const float* x, const float* dy,
                              const float* mean, const float* variance, const float* gamma,
                              const float* beta, float epsilon, bool batch_statistics, float* dx,
                              float* dgamma, float* dbeta) noexcept;

// Gradients of y = max(batch_norm_forward(x, ...) + shortcut, 0) given dy. g = dy * [pre > 0]
// with pre = bn + shortcut recomputed from x and shortcut exactly as batch_norm_forward_add_relu
// computes it (the mask equals that forward's y > 0); dshortcut = g (the Add passes it through),
// and dx, dgamma, dbeta = batch_norm_backward(g). Two passes like batch_norm_relu_backward: the
// first reads x, dy and shortcut, reduces, and writes g to dshortcut; the second writes dx from x
// and g (from dy, shortcut and x again when dshortcut is nullptr). dx, dshortcut, dgamma, dbeta
// may each be nullptr to skip; dshortcut may be dy itself (each value is read before written).
void batch_norm_add_relu_backward(BatchNormDims dims, const float* x, const float* shortcut,
                                  const float* dy, const float* mean, const float* variance,
                                  const float* gamma, const float* beta, float epsilon,
                                  bool batch_statistics, float* dx, float* dshortcut, float* dgamma,
                                  float* dbeta) noexcept;

// moving = moving * momentum + batch * (1 - momentum), per channel (Keras 3's formula; PyTorch's
// running = (1 - m) * running + m * batch is the same with momentum = 1 - m).
// variance_scale multiplies batch_variance first: 1 for Keras (biased), count / (count - 1)
// for PyTorch's Bessel-corrected running variance. momentum is double, as Keras's Python float:
// Keras rounds momentum and 1 - momentum to float32 separately (0.99f and 0.01f), and so does
// this kernel, which makes the update bit-identical to Keras's.
void batch_norm_update_moving(std::int64_t channels, const float* batch_mean,
                              const float* batch_variance, double momentum, float variance_scale,
                              float* moving_mean, float* moving_variance) noexcept;

namespace reference {
// (The ReLU and Add + ReLU variants are tested as compositions: reference forward then
// max(. + shortcut, 0); reference backward of dy masked by the fast forward's y > 0.)
void batch_norm_moments(BatchNormDims dims, const float* x, float* batch_mean,
                        float* batch_variance) noexcept;
void batch_norm_forward(BatchNormDims dims, const float* x, const float* mean,
                        const float* variance, const float* gamma, const float* beta, float epsilon,
                        float* y) noexcept;
void batch_norm_backward(BatchNormDims dims, const float* x, const float* dy, const float* mean,
                         const float* variance, const float* gamma, float epsilon,
                         bool batch_statistics, float* dx, float* dgamma, float* dbeta) noexcept;
}  // namespace reference

}  // namespace bnorm::kernels
