// src/kernels/activation.hpp — elementwise activations and row-wise softmax.
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
// z + bias (softmax logits for the fused cross-entropy).
void bias_activation_forward(ActivationKind kind, std::int64_t rows, std::int64_t cols,
                             const float* bias, float* z, float* y) noexcept;

// dx = f'(x) * dy written in terms of the forward output y (relu: y > 0; sigmoid: y(1-y);
// tanh: 1-y^2; softmax: y * (dy - sum(dy * y)) per row). dy and dx may alias.
void activation_backward(ActivationKind kind, std::int64_t rows, std::int64_t cols, const float* y,
                         const float* dy, float* dx) noexcept;

}  // namespace bnorm::kernels
