// src/kernels/optimizer.hpp — one optimizer step over n weights (Keras 3 update rules).
//
// Elementwise and branch-free, so each loop vectorizes; sqrt and division are correctly rounded
// in every instruction set and the file is built without FMA contraction, so the vector bodies
// give the same bits as the scalar ones (and as before vectorization). No pointer may alias.
#pragma once

#include <cstdint>

namespace bnorm::kernels {

// Keras Adam with its bias corrections folded into alpha = lr * sqrt(1 - beta_2^t) / (1 -
// beta_1^t):
//   m += (g - m) * (1 - beta_1);  v += (g^2 - v) * (1 - beta_2);  w -= m * alpha / (sqrt(v) + eps).
void adam_update(std::int64_t n, const float* g, float alpha, float beta_1, float beta_2,
                 float epsilon, float* w, float* m, float* v) noexcept;

// Keras SGD: w -= g * lr without momentum (momentum == nullptr). With momentum mu:
//   m = m * mu - g * lr;  w += m  (nesterov: w += m * mu - g * lr).
void sgd_update(std::int64_t n, const float* g, float learning_rate, float mu, bool nesterov,
                float* w, float* momentum) noexcept;

// Keras RMSprop: v = rho * v + (1 - rho) * g^2; centered: a = rho * a + (1 - rho) * g and the
// denominator is v - a^2; inc = lr * g / sqrt(denominator + eps); momentum: mom = mu * mom + inc,
// w -= mom; otherwise w -= inc. average/mom are nullptr when unused.
void rmsprop_update(std::int64_t n, const float* g, float learning_rate, float rho, float mu,
                    float epsilon, float* w, float* velocity, float* average, float* mom) noexcept;

}  // namespace bnorm::kernels
