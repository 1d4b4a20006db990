"""bnorm.activations: Keras's built-in activations as names for layer arguments
(`Dense(64, activation=bnorm.activations.relu)` is `activation="relu"`). Layers run them in C++;
calling one on an array computes it with NumPy for convenience."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["relu", "sigmoid", "tanh", "softmax", "linear", "get"]


def relu(x: Any) -> np.ndarray:
    """max(x, 0)."""
    return np.maximum(np.asarray(x, dtype=np.float32), np.float32(0))


def sigmoid(x: Any) -> np.ndarray:
    """1 / (1 + exp(-x))."""
    a = np.asarray(x, dtype=np.float32)
    return (1.0 / (1.0 + np.exp(-a))).astype(np.float32)


def tanh(x: Any) -> np.ndarray:
    """tanh(x)."""
    return np.tanh(np.asarray(x, dtype=np.float32))


def softmax(x: Any, axis: int = -1) -> np.ndarray:
    """exp(x) / sum(exp(x)) along axis."""
    a = np.asarray(x, dtype=np.float32)
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def linear(x: Any) -> np.ndarray:
    """x."""
    return np.asarray(x, dtype=np.float32)


def get(identifier: Any) -> Callable[..., np.ndarray]:
    """The activation function of a name."""
    table = {f.__name__: f for f in (relu, sigmoid, tanh, softmax, linear)}
    if callable(identifier):
        return identifier
    if identifier is None:
        return linear
    if identifier not in table:
        raise ValueError(f"unknown activation '{identifier}'")
    return table[identifier]
