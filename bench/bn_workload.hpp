// bench/bn_workload.hpp — one BN benchmark case (shape, layout, mode) and the bnorm kernel calls
// it times. Shared by `bnorm bench bn` and the Google Benchmark programs, so both measure the same
// calls on the same data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bnorm/core/activation_kind.hpp"
#include "bnorm/core/random.hpp"
#include "bnorm/core/tensor.hpp"
#include "kernels/activation.hpp"
#include "kernels/batch_norm.hpp"

namespace bnorm::bench {

// Memory order of the benchmarked tensor; a shape is written in this order.
//   nhwc: N x H x W x C (channels last, Keras's default; axis = -1)
//   nchw: N x C x H x W (channels first; axis = 1)
//   nc:   N x C         (a Dense layer's output; axis = -1)
enum class Layout { nhwc, nchw, nc };
enum class BnMode { train, infer, backward };

inline const char* layout_name(Layout layout) {
  switch (layout) {
    case Layout::nhwc:
      return "nhwc";
    case Layout::nchw:
      return "nchw";
    case Layout::nc:
      return "nc";
  }
  return "?";
}

inline const char* mode_name(BnMode mode) {
  switch (mode) {
    case BnMode::train:
      return "train";
    case BnMode::infer:
      return "infer";
    case BnMode::backward:
      return "backward";
  }
  return "?";
}

inline int layout_rank(Layout layout) { return layout == Layout::nc ? 2 : 4; }

// Passes over the tensor in the byte model behind "effective GB/s": training forward reads x
// twice (moments, normalize) and writes y; inference reads x and writes y; backward reads x and
// dy twice (reductions, then dx) and writes dx.
inline int byte_passes(BnMode mode) {
  switch (mode) {
    case BnMode::train:
      return 3;
    case BnMode::infer:
      return 2;
    case BnMode::backward:
      return 5;
  }
  return 0;
}

// The kernels' [outer, channels, inner] view of a shape given in the layout's order.
inline kernels::BatchNormDims bn_dims(Layout layout, const std::vector<std::int64_t>& shape) {
  kernels::BatchNormDims dims;
  switch (layout) {
    case Layout::nhwc:
      dims.outer = shape[0] * shape[1] * shape[2];
      dims.channels = shape[3];
      dims.inner = 1;
      break;
    case Layout::nchw:
      dims.outer = shape[0];
      dims.channels = shape[1];
      dims.inner = shape[2] * shape[3];
      break;
    case Layout::nc:
      dims.outer = shape[0];
      dims.channels = shape[1];
      dims.inner = 1;
      break;
  }
  return dims;
}

inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += 'x';
    s += std::to_string(shape[i]);
  }
  return s;
}

inline constexpr float kBenchEpsilon = 1e-3f;  // Keras's default epsilon

// Training-mode forward: batch moments, then normalize with them (what the BatchNormalization
// layer calls in training; no ReLU).
inline void bn_forward_training(kernels::BatchNormDims dims, const float* x, const float* gamma,
                                const float* beta, float epsilon, float* y, float* batch_mean,
                                float* batch_variance) noexcept {
  kernels::batch_norm_forward_training(dims, x, gamma, beta, epsilon, /*relu=*/false, batch_mean,
                                       batch_variance, y);
}

// Every buffer one case needs, allocated once (bnorm::Tensor: 64-byte aligned, zeroed, so every
// page is touched before timing) and filled from a fixed seed.
class BnWorkload {
 public:
  BnWorkload(Layout layout, const std::vector<std::int64_t>& shape, std::uint64_t seed = 42)
      : dims_(bn_dims(layout, shape)),
        x_(Shape{dims_.size()}),
        y_(Shape{dims_.size()}),
        dy_(Shape{dims_.size()}),
        dx_(Shape{dims_.size()}),
        gamma_(Shape{dims_.channels}),
        beta_(Shape{dims_.channels}),
        mean_(Shape{dims_.channels}),
        variance_(Shape{dims_.channels}),
        dgamma_(Shape{dims_.channels}),
        dbeta_(Shape{dims_.channels}) {
    Random rng(seed);
    // Per-channel offsets and scales, so the statistics are not all alike.
    for (std::int64_t c = 0; c < dims_.channels; ++c) {
      gamma_[c] = rng.uniform(0.5f, 1.5f);
      beta_[c] = rng.uniform(-0.5f, 0.5f);
    }
    for (std::int64_t i = 0; i < dims_.size(); ++i) {
      x_[i] = 2.0f * rng.normal() + 0.5f;
      dy_[i] = rng.normal();
    }
    // Backward (batch_statistics = true) and inference take the batch's own moments.
    kernels::batch_norm_moments(dims_, x_.data(), mean_.data(), variance_.data());
  }

  const kernels::BatchNormDims& dims() const noexcept { return dims_; }
  std::int64_t tensor_bytes() const noexcept {
    return dims_.size() * static_cast<std::int64_t>(sizeof(float));
  }

  // One call of the kernels a mode times.
  void run(BnMode mode) noexcept {
    switch (mode) {
      case BnMode::train:
        bn_forward_training(dims_, x_.data(), gamma_.data(), beta_.data(), kBenchEpsilon, y_.data(),
                            mean_.data(), variance_.data());
        break;
      case BnMode::infer:
        kernels::batch_norm_forward(dims_, x_.data(), mean_.data(), variance_.data(), gamma_.data(),
                                    beta_.data(), kBenchEpsilon, y_.data());
        break;
      case BnMode::backward:
        kernels::batch_norm_backward(dims_, x_.data(), dy_.data(), mean_.data(), variance_.data(),
                                     gamma_.data(), kBenchEpsilon, /*batch_statistics=*/true,
                                     dx_.data(), dgamma_.data(), dbeta_.data());
        break;
    }
  }

  const Tensor& x() const noexcept { return x_; }
  const Tensor& y() const noexcept { return y_; }
  const Tensor& dx() const noexcept { return dx_; }

 private:
  kernels::BatchNormDims dims_;
  Tensor x_, y_, dy_, dx_;
  Tensor gamma_, beta_, mean_, variance_, dgamma_, dbeta_;
};

// The cases of issue 4: two ResNet-like activations in both 4-D layouts, a large Dense batch,
// and two cache-resident Dense batches.
struct BnCase {
  std::vector<std::int64_t> shape;
  Layout layout;
};

inline std::vector<BnCase> default_bn_cases() {
  return {
      {{64, 56, 56, 64}, Layout::nhwc},  {{64, 64, 56, 56}, Layout::nchw},
      {{32, 28, 28, 256}, Layout::nhwc}, {{32, 256, 28, 28}, Layout::nchw},
      {{4096, 1024}, Layout::nc},        {{32, 64}, Layout::nc},
      {{256, 64}, Layout::nc},
  };
}

// --- BN -> Add -> ReLU, a residual block's tail: the fused kernels against the unfused layers.

enum class AddReluImpl { fused, unfused };

inline const char* add_relu_impl_name(AddReluImpl impl) {
  return impl == AddReluImpl::fused ? "fused" : "unfused";
}

// Passes over the tensor the fused kernels make: training forward reads x twice and the shortcut
// once and writes y (4); backward reads x, dy, shortcut and writes dshortcut, then reads x and
// dshortcut and writes dx (7). The unfused layers make 3 + 3 + 2 = 8 (BN, Add, ReLU) and
// 3 + 5 = 8 (ReLU backward, BN backward; the Add passes its gradient on without a copy). Both
// are reported on the fused model, so their GB/s compare as their times do.
inline int add_relu_byte_passes(BnMode mode) { return mode == BnMode::backward ? 7 : 4; }

// Buffers for both implementations (each unfused layer owns its output, as bnorm's layers do).
class BnAddReluWorkload {
 public:
  BnAddReluWorkload(Layout layout, const std::vector<std::int64_t>& shape, std::uint64_t seed = 42)
      : dims_(bn_dims(layout, shape)),
        x_(Shape{dims_.size()}),
        shortcut_(Shape{dims_.size()}),
        bn_(Shape{dims_.size()}),
        sum_(Shape{dims_.size()}),
        y_(Shape{dims_.size()}),
        dy_(Shape{dims_.size()}),
        dsum_(Shape{dims_.size()}),
        dx_(Shape{dims_.size()}),
        dshortcut_(Shape{dims_.size()}),
        gamma_(Shape{dims_.channels}),
        beta_(Shape{dims_.channels}),
        mean_(Shape{dims_.channels}),
        variance_(Shape{dims_.channels}),
        dgamma_(Shape{dims_.channels}),
        dbeta_(Shape{dims_.channels}) {
    Random rng(seed);
    for (std::int64_t c = 0; c < dims_.channels; ++c) {
      gamma_[c] = rng.uniform(0.5f, 1.5f);
      beta_[c] = rng.uniform(-0.5f, 0.5f);
    }
    for (std::int64_t i = 0; i < dims_.size(); ++i) {
      x_[i] = 2.0f * rng.normal() + 0.5f;
      shortcut_[i] = rng.normal();
      dy_[i] = rng.normal();
    }
    kernels::batch_norm_moments(dims_, x_.data(), mean_.data(), variance_.data());
    // The unfused backward reads the ReLU's output.
    run(BnMode::train, AddReluImpl::unfused);
  }

  const kernels::BatchNormDims& dims() const noexcept { return dims_; }
  std::int64_t tensor_bytes() const noexcept {
    return dims_.size() * static_cast<std::int64_t>(sizeof(float));
  }

  // One training forward (BnMode::train) or backward (BnMode::backward, batch statistics).
  void run(BnMode mode, AddReluImpl impl) noexcept {
    const std::int64_t n = dims_.size();
    if (mode == BnMode::backward) {
      if (impl == AddReluImpl::fused) {
        kernels::batch_norm_add_relu_backward(dims_, x_.data(), shortcut_.data(), dy_.data(),
                                              mean_.data(), variance_.data(), gamma_.data(),
                                              beta_.data(), kBenchEpsilon, true, dx_.data(),
                                              dshortcut_.data(), dgamma_.data(), dbeta_.data());
      } else {
        kernels::activation_backward(ActivationKind::relu, 1, n, y_.data(), dy_.data(),
                                     dsum_.data());
        kernels::batch_norm_backward(dims_, x_.data(), dsum_.data(), mean_.data(), variance_.data(),
                                     gamma_.data(), kBenchEpsilon, true, dx_.data(), dgamma_.data(),
                                     dbeta_.data());
      }
      return;
    }
    if (impl == AddReluImpl::fused) {
      kernels::batch_norm_forward_training_add_relu(dims_, x_.data(), shortcut_.data(),
                                                    gamma_.data(), beta_.data(), kBenchEpsilon,
                                                    mean_.data(), variance_.data(), y_.data());
    } else {
      kernels::batch_norm_forward_training(dims_, x_.data(), gamma_.data(), beta_.data(),
                                           kBenchEpsilon, false, mean_.data(), variance_.data(),
                                           bn_.data());
      const float* a = bn_.data();
      const float* b = shortcut_.data();
      float* sum = sum_.data();
      for (std::int64_t i = 0; i < n; ++i) sum[i] = a[i] + b[i];
      kernels::activation_forward(ActivationKind::relu, 1, n, sum, y_.data());
    }
  }

 private:
  kernels::BatchNormDims dims_;
  Tensor x_, shortcut_, bn_, sum_, y_, dy_, dsum_, dx_, dshortcut_;
  Tensor gamma_, beta_, mean_, variance_, dgamma_, dbeta_;
};

// ResNet-50's first stage activation in both 4-D layouts.
inline std::vector<BnCase> add_relu_cases() {
  return {{{64, 56, 56, 64}, Layout::nhwc}, {{64, 64, 56, 56}, Layout::nchw}};
}

}  // namespace bnorm::bench
