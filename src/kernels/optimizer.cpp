#include "kernels/optimizer.hpp"

#include <cmath>

// x86-64: one body per instruction set (AVX-512, AVX2, baseline SSE2), picked once at load time
// by the dynamic loader (GCC function multiversioning). The bodies differ only in vector width.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BNORM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BNORM_CLONES
#endif

namespace bnorm::kernels {

BNORM_CLONES
void adam_update(std::int64_t n, const float* __restrict g, float alpha, float beta_1, float beta_2,
                 float epsilon, float* __restrict w, float* __restrict m,
                 float* __restrict v) noexcept {
  const float one_minus_b1 = 1.0f - beta_1, one_minus_b2 = 1.0f - beta_2;
  for (std::int64_t i = 0; i < n; ++i) {
    m[i] += (g[i] - m[i]) * one_minus_b1;
    v[i] += (g[i] * g[i] - v[i]) * one_minus_b2;
    w[i] -= (m[i] * alpha) / (std::sqrt(v[i]) + epsilon);
  }
}

BNORM_CLONES
void sgd_update(std::int64_t n, const float* __restrict g, float learning_rate, float mu,
                bool nesterov, float* __restrict w, float* __restrict momentum) noexcept {
  const float lr = learning_rate;
  if (!momentum) {
    for (std::int64_t i = 0; i < n; ++i) w[i] -= g[i] * lr;
  } else if (nesterov) {
    for (std::int64_t i = 0; i < n; ++i) {
      momentum[i] = momentum[i] * mu - g[i] * lr;
      w[i] += momentum[i] * mu - g[i] * lr;
    }
  } else {
    for (std::int64_t i = 0; i < n; ++i) {
      momentum[i] = momentum[i] * mu - g[i] * lr;
      w[i] += momentum[i];
    }
  }
}

BNORM_CLONES
void rmsprop_update(std::int64_t n, const float* __restrict g, float learning_rate, float rho,
                    float mu, float epsilon, float* __restrict w, float* __restrict velocity,
                    float* __restrict average, float* __restrict mom) noexcept {
  const float lr = learning_rate, keep = rho, take = 1.0f - rho;
  for (std::int64_t i = 0; i < n; ++i) {
    velocity[i] = keep * velocity[i] + take * g[i] * g[i];
    float denominator = velocity[i];
    if (average) {
      average[i] = keep * average[i] + take * g[i];
      denominator -= average[i] * average[i];
    }
    const float increment = lr * g[i] / std::sqrt(denominator + epsilon);
    if (mom) {
      mom[i] = mu * mom[i] + increment;
      w[i] -= mom[i];
    } else {
      w[i] -= increment;
    }
  }
}

}  // namespace bnorm::kernels
