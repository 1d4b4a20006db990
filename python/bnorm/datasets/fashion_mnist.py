"""bnorm.datasets.fashion_mnist: Fashion-MNIST from Debian's `dataset-fashion-mnist` package
(/usr/share/datasets/fashion-mnist), in Keras's format. Keras's own loader downloads the files;
this one reads the installed package through bnorm's IDX reader and never touches the network."""

from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np

from .. import _core

__all__ = ["load_data"]

Split = Tuple[np.ndarray, np.ndarray]


def load_data(path: Optional[str] = None) -> Tuple[Split, Split]:
    """Returns ((x_train, y_train), (x_test, y_test)) as Keras does: images uint8 of shape
    (60000, 28, 28) and (10000, 28, 28), labels uint8 of shape (60000,) and (10000,).

    `path`: a directory holding the four IDX files (raw or .gz); defaults to $BNORM_FASHION_MNIST
    or Debian's location. OSError naming the package to install when they are missing."""
    directory = path or os.environ.get("BNORM_FASHION_MNIST") or "/usr/share/datasets/fashion-mnist"
    train_x, train_y, test_x, test_y = _core.load_fashion_mnist(directory)

    def images(x: np.ndarray) -> np.ndarray:
        # bnorm scales to v / 255 in float32; * 255 and rounding gives v back exactly.
        return np.rint(x * np.float32(255.0)).astype(np.uint8)

    return ((images(train_x), train_y.astype(np.uint8)),
            (images(test_x), test_y.astype(np.uint8)))
