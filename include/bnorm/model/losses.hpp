// bnorm/model/losses.hpp — Keras losses, reduced as "sum_over_batch_size" (mean over samples).
#pragma once

#include <memory>
#include <string>

#include "bnorm/core/tensor.hpp"

namespace bnorm {

enum class LossKind {
  sparse_categorical_crossentropy,
  categorical_crossentropy,
  mean_squared_error
};

// "sparse_categorical_crossentropy" (or "scce"), "categorical_crossentropy" (or "cce"),
// "mean_squared_error" (or "mse"); ValueError naming the valid names otherwise.
LossKind parse_loss(const std::string& name);
std::string loss_name(LossKind kind);

struct LossResult {
  double loss = 0.0;  // mean over the batch
};

// Loss value and dL/dpredictions for a batch. `y_true`: class indices (stored as floats,
// shape (N,) or (N, 1)) for sparse CE; same shape as predictions otherwise. ShapeError/
// ValueError on mismatched shapes or labels outside [0, classes).
// With `logits` non-null (the model's last layer is a softmax, see Layer::softmax_logits),
// cross-entropies are computed from logits and the gradient written is dL/dlogits.
// `normalizer` (0: the batch's rows) is the count the sum over samples is divided by, in the
// value and the gradient: a distributed step divides its shard's sum by the global batch size, so
// that the ranks' gradients add up to the gradient of the whole batch's mean.
double compute_loss(LossKind kind, const Tensor& predictions, const Tensor* logits,
                    const Tensor& y_true, Tensor* gradient, std::int64_t normalizer = 0);

// Number of samples whose prediction is right (Keras "accuracy" as it
// resolves for each loss: sparse labels, one-hot labels, or thresholded at 0.5 for one output).
double accuracy_count(LossKind kind, const Tensor& predictions, const Tensor& y_true);

}  // namespace bnorm
