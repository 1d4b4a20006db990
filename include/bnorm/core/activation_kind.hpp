// bnorm/core/activation_kind.hpp — the activation functions bnorm knows (Keras 3 names).
#pragma once

namespace bnorm {
// silu is Keras's "silu" (alias "swish"), hard_silu is "hard_silu" (alias "hard_swish");
// leaky_relu uses Keras 3's activation default negative_slope = 0.2, elu alpha = 1, gelu the
// exact erf form (Keras 3's approximate=False). Formulas: src/kernels/activation.hpp.
enum class ActivationKind {
  linear,
  relu,
  sigmoid,
  tanh,
  softmax,
  silu,
  gelu,
  hard_sigmoid,
  hard_silu,
  elu,
  leaky_relu,
  relu6
};
}  // namespace bnorm
