// src/kernels/softmax_cross_entropy.hpp — losses and their gradients, per batch.
//
// The fused forms take logits z and compute log_softmax(z) = z - max - log(sum(exp(z - max))):
// no log(0), no overflow. Keras does the same when a softmax output meets a cross-entropy loss
// (its TensorFlow backend reads the logits kept on the softmax output).
#pragma once

#include <cstdint>

namespace bnorm::kernels {

// labels[r] in [0, classes) (caller validates). Writes probabilities (softmax(z)) into probs,
// dlogits = (probs - onehot) * grad_scale; returns sum over rows of -log_softmax(z)[label]
// (float64). probs/dlogits may be nullptr.
double sparse_softmax_cross_entropy(std::int64_t rows, std::int64_t classes, const float* logits,
                                    const std::int32_t* labels, float grad_scale, float* probs,
                                    float* dlogits) noexcept;

// Same with dense target distributions (rows x classes): loss = -sum(t * log_softmax(z)),
// dlogits = (probs * sum(t) - t) * grad_scale.
double softmax_cross_entropy(std::int64_t rows, std::int64_t classes, const float* logits,
                             const float* targets, float grad_scale, float* probs,
                             float* dlogits) noexcept;

// Cross-entropy on probabilities p (not logits), Keras's non-fused path: p is renormalized to
// sum to 1 per row, clipped to [eps, 1 - eps], loss = -sum(t * log(p)). dprobs gets the exact
// gradient of that expression (zero where the clip is active) times grad_scale.
double probability_cross_entropy(std::int64_t rows, std::int64_t classes, const float* p,
                                 const float* targets, float epsilon, float grad_scale,
                                 float* dprobs) noexcept;

// Mean squared error: per row mean over cols of (p - t)^2; returns the sum over rows.
// dp = 2 (p - t) / cols * grad_scale.
double mean_squared_error(std::int64_t rows, std::int64_t cols, const float* p, const float* t,
                          float grad_scale, float* dp) noexcept;

}  // namespace bnorm::kernels
