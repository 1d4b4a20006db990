"""bnorm.ops: batch normalization as functions on NumPy arrays, with gradients.

`moments` and `batch_normalization` have keras.ops's signatures; `batch_norm_training`,
`batch_norm_backward` and `update_moving_statistics` are the pieces of a training step for
people who only want the layer's math (bnorm's Keras-exact kernels: biased batch variance,
float32, every argument checked before any kernel runs; NaN/Inf raise bnorm.NonFiniteError)."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from . import _core
from ._arrays import as_float32

__all__ = ["moments", "batch_normalization", "batch_norm_training", "batch_norm_backward",
           "update_moving_statistics"]


def _optional(value: Any, what: str) -> Optional[np.ndarray]:
    return None if value is None else as_float32(value, what)


def _channel_axis(ndim: int, axes: Sequence[int]) -> int:
    reduced = sorted({a % ndim for a in axes})
    kept = [a for a in range(ndim) if a not in reduced]
    if len(kept) != 1 or 0 not in reduced:
        raise ValueError(f"moments: axes {list(axes)} must reduce every axis of a rank-{ndim} "
                         "array but one channel axis (and always the batch axis 0)")
    return kept[0]


def moments(x: Any, axes: Sequence[int], keepdims: bool = False,
            synchronized: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """keras.ops.moments: (mean, variance) over `axes` (every axis but the channel one), the
    variance biased (divided by the count) as BatchNormalization uses it."""
    if synchronized:
        raise ValueError("moments: synchronized=True needs bnorm's distributed runner")
    array = as_float32(x, "x")
    axis = _channel_axis(array.ndim, axes)
    mean, variance = _core.bn_moments(array, axis)
    if keepdims:
        shape = [1] * array.ndim
        shape[axis] = -1
        mean, variance = mean.reshape(shape), variance.reshape(shape)
    return mean, variance


def batch_normalization(x: Any, mean: Any, variance: Any, axis: int, offset: Any = None,
                        scale: Any = None, epsilon: float = 1e-3) -> np.ndarray:
    """keras.ops.batch_normalization: (x - mean) / sqrt(variance + epsilon) * scale + offset with
    per-channel (shape (C,)) statistics along `axis`."""
    return _core.bn_inference(as_float32(x, "x"), as_float32(mean, "mean"),
                              as_float32(variance, "variance"), _optional(scale, "scale"),
                              _optional(offset, "offset"), float(epsilon), int(axis))


def batch_norm_training(x: Any, scale: Any = None, offset: Any = None, epsilon: float = 1e-3,
                        axis: int = -1) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BatchNormalization's training forward: (y, batch_mean, batch_variance), normalizing with
    the batch's own biased moments."""
    return _core.bn_training(as_float32(x, "x"), _optional(scale, "scale"),
                             _optional(offset, "offset"), float(epsilon), int(axis))


def batch_norm_backward(x: Any, dy: Any, mean: Any, variance: Any, scale: Any = None,
                        epsilon: float = 1e-3, batch_statistics: bool = True,
                        axis: int = -1) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dscale, doffset) of y = BN(x) given dy. batch_statistics=True: mean and
    variance are x's own batch moments (training); False: constants (moving statistics)."""
    return _core.bn_backward(as_float32(x, "x"), as_float32(dy, "dy"), as_float32(mean, "mean"),
                             as_float32(variance, "variance"), _optional(scale, "scale"),
                             float(epsilon), bool(batch_statistics), int(axis))


def update_moving_statistics(moving_mean: Any, moving_variance: Any, batch_mean: Any,
                             batch_variance: Any,
                             momentum: float = 0.99) -> Tuple[np.ndarray, np.ndarray]:
    """Keras's update: moving = moving * momentum + batch * (1 - momentum); returns the new
    (moving_mean, moving_variance) and leaves the arguments unchanged."""
    return _core.bn_update_moving(as_float32(moving_mean, "moving_mean"),
                                  as_float32(moving_variance, "moving_variance"),
                                  as_float32(batch_mean, "batch_mean"),
                                  as_float32(batch_variance, "batch_variance"), float(momentum))
