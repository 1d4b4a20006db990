// bnorm/layers/batch_norm_ops.hpp — validated functional batch normalization, the analogue of
// tf.nn.fused_batch_norm / torch.nn.functional.batch_norm: the caller owns and passes the
// statistics and the scale/offset, so every argument is checked before any kernel runs.
//
// Layout: `axis` is the normalized (channel) axis of x, Keras style (-1 = last); statistics
// reduce over every other axis. x has rank >= 2 and axis 0 is the batch, never normalized.
// Per-channel tensors (mean, variance, scale, offset, batch_*, moving_*) have shape (C,), C the
// size of x along `axis`. scale == nullptr means no scale (gamma = 1, Keras scale=False);
// offset == nullptr means no offset (beta = 0, Keras center=False).
//
// Errors (bnorm::Error hierarchy; each message is one line naming the function, the argument,
// what was expected and what was received):
//   ShapeError     x empty or of rank < 2; axis out of range or the batch axis; zero channels;
//                  a per-channel tensor whose shape is not (C,) (TF CVE-2021-29583, -29555);
//                  dy whose shape differs from x (TF CVE-2021-41223).
//   ValueError     epsilon not a finite number > 0; momentum outside [0, 1] or NaN; a variance
//                  (passed in or moving) with a negative value.
//   NonFiniteError (a ValueError) NaN or Inf in any input tensor, or a result that would
//                  leave float32's finite range (e.g. a batch of +-3e38, whose variance
//                  overflows).
//
// NaN/Inf policy: nothing non-finite goes in or comes out. Training rejects a batch whose
// statistics are not finite before anything is written; batch_norm_update_moving checks all of
// its inputs (and that the result stays finite) before it touches the moving statistics, so
// they are never poisoned. Inference rejects NaN/Inf in x too (Keras would propagate it
// element-wise; here a result is either finite or an exception). The cost is one extra read
// pass over the output (and, only on the error path, over the inputs to name the culprit).
// The BatchNormalization layer applies the same checks to its state; in inference mode it
// propagates NaN from x element-wise as Keras does (see docs/bad-inputs.md).
#pragma once

#include "bnorm/core/tensor.hpp"

namespace bnorm {

// Biased batch moments of x per channel of `axis` (divide by the count, as Keras normalizes).
struct BatchNormStatistics {
  Tensor batch_mean;
  Tensor batch_variance;
};
BatchNormStatistics batch_norm_moments(const Tensor& x, int axis = -1);

// y = (x - mean) / sqrt(variance + epsilon) * scale + offset with given statistics (Keras
// inference mode: the moving statistics). variance must be >= 0.
Tensor batch_norm_inference(const Tensor& x, const Tensor& mean, const Tensor& variance,
                            const Tensor* scale, const Tensor* offset, float epsilon,
                            int axis = -1);

// Keras training mode: normalizes with the batch's own biased moments, which are returned for
// batch_norm_update_moving and batch_norm_backward.
struct BatchNormTrainingResult {
  Tensor y;
  Tensor batch_mean;
  Tensor batch_variance;
};
BatchNormTrainingResult batch_norm_training(const Tensor& x, const Tensor* scale,
                                            const Tensor* offset, float epsilon, int axis = -1);

// Keras 3: moving = moving * momentum + batch * (1 - momentum), for mean and variance. All four
// tensors have shape (C,) with C = moving_mean's length; momentum in [0, 1] (a double, like
// Keras's Python float: momentum and 1 - momentum are each rounded to float32). On any error the
// moving statistics are left bit-identical.
void batch_norm_update_moving(Tensor& moving_mean, Tensor& moving_variance,
                              const Tensor& batch_mean, const Tensor& batch_variance,
                              double momentum);

// Gradients of y = BN(x) given dy (same shape as x). batch_statistics = true: mean/variance
// are x's own batch moments (from batch_norm_training), which depend on x; false: they are
// constants (moving statistics). dscale/doffset are always returned (shape (C,)).
struct BatchNormGradients {
  Tensor dx;
  Tensor dscale;
  Tensor doffset;
};
BatchNormGradients batch_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& mean,
                                       const Tensor& variance, const Tensor* scale, float epsilon,
                                       bool batch_statistics, int axis = -1);

}  // namespace bnorm
