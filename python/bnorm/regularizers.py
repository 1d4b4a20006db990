"""bnorm.regularizers: L2 (the regularizer bnorm implements), as objects or `l2(factor)`."""

from __future__ import annotations

from typing import Any, Dict

__all__ = ["Regularizer", "L2", "l2"]


class Regularizer:
    """Base class."""

    _keras_class_name = ""

    def get_config(self) -> Dict[str, Any]:
        """Keras's get_config()."""
        return {}


class L2(Regularizer):
    """keras.regularizers.L2(l2=0.01): adds l2 * sum(w ** 2) to the loss."""

    _keras_class_name = "L2"

    def __init__(self, l2: float = 0.01) -> None:
        self.l2 = float(l2)

    def get_config(self) -> Dict[str, Any]:
        return {"l2": self.l2}


l2 = L2
