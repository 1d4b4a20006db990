// bnorm/core/activation_kind.hpp — the activation functions bnorm knows (Keras names).
#pragma once

namespace bnorm {
enum class ActivationKind { linear, relu, sigmoid, tanh, softmax };
}
