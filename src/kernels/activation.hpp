// src/kernels/activation.hpp — elementwise activations and row-wise softmax.
//
// Formulas (Keras 3 on the TensorFlow backend, float32):
//   relu          max(x, 0)                          sigmoid  1 / (1 + exp(-x))
//   tanh          tanh(x)                            softmax  exp(x - max) / sum, per row
//   silu          x * sigmoid(x)                     (tf.nn.silu; Keras "swish" is an alias)
//   gelu          0.5 * x * (1 + erf(x / sqrt(2)))   (tf.nn.gelu approximate=False)
//   hard_sigmoid  relu6(x + 3) / 6                   (Keras 3; Keras 2 used 0.2 * x + 0.5)
//   hard_silu     x * relu6(x + 3) / 6               (alias hard_swish, MobileNetV3)
//   elu           x > 0 ? x : exp(x) - 1             (tf.nn.elu, alpha = 1)
//   leaky_relu    x > 0 ? x : 0.2 * x                (Keras 3 activation default slope 0.2)
//   relu6         min(max(x, 0), 6)
// Gradients follow TensorFlow's at the kinks: relu 0 at x = 0; relu6 passes on (0, 6) open;
// hard_sigmoid 1/6 on (-3, 3) open; leaky_relu 0.2 at x = 0; elu 1 at x = 0.
#pragma once

#include <cstdint>

#include "bnorm/core/activation_kind.hpp"

namespace bnorm::kernels {

// y = f(x) over rows x cols (softmax is over each row of `cols`; others are elementwise).
// x and y may alias. softmax subtracts the row max first (stable).
void activation_forward(ActivationKind kind, std::int64_t rows, std::int64_t cols, const float* x,
                        float* y) noexcept;

// The Dense epilogue, one pass after a beta=0 GEMM: z += bias (broadcast over rows; bias may be
// null), then y = f(z). y may alias z, which then ends as f(z + bias). When they differ, z keeps
// z + bias (softmax logits for the fused cross-entropy, the pre-activation of gelu/silu/...).
void bias_activation_forward(ActivationKind kind, std::int64_t rows, std::int64_t cols,
                             const float* bias, float* z, float* y) noexcept;

// Whether f'(x) cannot be written in terms of y = f(x) alone: silu, gelu and hard_silu are not
// monotonic, so y does not determine x. Their callers keep the pre-activation x (the Activation
// layer has it as its input; Dense and Conv2D keep z = x·W + b, one tensor the size of the
// output, far cheaper than redoing the GEMM). Every other kind differentiates through y.
constexpr bool activation_backward_needs_input(ActivationKind kind) noexcept {
  return kind == ActivationKind::silu || kind == ActivationKind::gelu ||
         kind == ActivationKind::hard_silu;
}

// dx = f'(x) * dy. x is the pre-activation, y = f(x) the forward's output; x may be null when
// !activation_backward_needs_input(kind). Through y: relu: y > 0; sigmoid: y(1-y); tanh: 1-y^2;
// softmax: y * (dy - sum(dy * y)) per row; elu: y < 0 ? y + 1 : 1; leaky_relu: y > 0 ? 1 : 0.2;
// relu6: 0 < y < 6; hard_sigmoid: 0 < y < 1 gives 1/6. Through x: silu: s(1 + x(1 - s));
// gelu: Phi(x) + x phi(x); hard_silu: hard_sigmoid(x) + x/6 on (-3, 3). dy and dx may alias.
void activation_backward(ActivationKind kind, std::int64_t rows, std::int64_t cols, const float* x,
                         const float* y, const float* dy, float* dx) noexcept;

// The same for the kinds that differentiate through y (x = null). For silu, gelu and hard_silu,
// which need x, it writes NaN into dx so that a caller that forgot x fails loudly.
void activation_backward(ActivationKind kind, std::int64_t rows, std::int64_t cols, const float* y,
                         const float* dy, float* dx) noexcept;

}  // namespace bnorm::kernels
