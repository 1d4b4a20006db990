"""bnorm.losses: the Keras losses bnorm trains with (computed in C++, "sum_over_batch_size"
reduction: the mean over the batch)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

__all__ = ["Loss", "SparseCategoricalCrossentropy", "CategoricalCrossentropy",
           "MeanSquaredError", "sparse_categorical_crossentropy", "categorical_crossentropy",
           "mean_squared_error", "mse", "get"]


class Loss:
    """Base of the loss classes; `name` is Keras's function name."""

    _function = ""

    def __init__(self, from_logits: bool = False, reduction: str = "sum_over_batch_size",
                 name: Optional[str] = None, **kwargs: Any) -> None:
        if from_logits:
            raise ValueError(f"{type(self).__name__}: from_logits=True is not supported; end the "
                             "model with a softmax (bnorm then computes the loss from its logits)")
        if reduction != "sum_over_batch_size":
            raise ValueError(f"{type(self).__name__}: reduction '{reduction}' is not supported")
        for key in ("ignore_class", "label_smoothing", "axis"):
            value = kwargs.pop(key, None)
            if value not in (None, 0, 0.0, -1):
                raise ValueError(f"{type(self).__name__}: '{key}' is not supported")
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got unexpected arguments {sorted(kwargs)}")
        self.name = name or self._function

    def get_config(self) -> dict:
        """Keras's get_config()."""
        return {"name": self.name, "reduction": "sum_over_batch_size"}


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy with integer class labels."""

    _function = "sparse_categorical_crossentropy"


class CategoricalCrossentropy(Loss):
    """Cross-entropy with one-hot labels."""

    _function = "categorical_crossentropy"


class MeanSquaredError(Loss):
    """Mean of squared differences."""

    _function = "mean_squared_error"


def _named(function: str) -> Callable[..., Any]:
    def loss(y_true: Any, y_pred: Any) -> Any:
        raise NotImplementedError(f"bnorm computes {function} inside fit/evaluate; pass it to "
                                  "compile(loss=...)")
    loss.__name__ = function
    loss.__doc__ = f"keras.losses.{function}, usable as compile(loss=...)."
    return loss


sparse_categorical_crossentropy = _named("sparse_categorical_crossentropy")
categorical_crossentropy = _named("categorical_crossentropy")
mean_squared_error = _named("mean_squared_error")
mse = mean_squared_error


def get(identifier: Union[str, Loss, Callable[..., Any]]) -> str:
    """The loss's Keras function name from a name, a Loss object or a loss function."""
    if isinstance(identifier, Loss):
        return identifier._function
    if callable(identifier):
        return getattr(identifier, "__name__", "")
    if isinstance(identifier, str):
        return identifier
    raise TypeError(f"cannot interpret {identifier!r} as a loss")
