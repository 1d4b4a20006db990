"""bnorm.datasets: the datasets keras.datasets has that exist on a Debian machine without a
download (Fashion-MNIST from the dataset-fashion-mnist package)."""

from . import fashion_mnist

__all__ = ["fashion_mnist"]
