"""bnorm: batch normalization exactly as in TensorFlow/Keras 3, in C++, with Keras's API.

    import bnorm as keras        # the Keras 3 names: Sequential, Model, Input, layers, ...
    (x, y), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    model = keras.Sequential([keras.Input(shape=(784,)),
                              keras.layers.Dense(64, activation="relu"),
                              keras.layers.BatchNormalization(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x.reshape(-1, 784) / 255.0, y, epochs=10, validation_split=0.1)

Errors: ValueError (bad arguments and shapes; bnorm.NonFiniteError, a ValueError, for NaN/Inf),
TypeError (wrong types), OSError (files), each with bnorm's one-line message.
"""

from . import _core
from ._core import NonFiniteError
from . import (activations, callbacks, datasets, initializers, layers, losses, models, ops,
               optimizers, regularizers, saving, utils)
from .layers import Input
from .models import Model, Sequential

__version__: str = _core.__version__

__all__ = ["__version__", "Input", "Model", "Sequential", "NonFiniteError", "activations",
           "callbacks", "datasets", "initializers", "layers", "losses", "models", "ops",
           "optimizers", "regularizers", "saving", "utils", "set_num_threads"]


def set_num_threads(n: int) -> None:
    """Threads bnorm's kernels use (results are bitwise the same at any count)."""
    _core.set_num_threads(int(n))
