"""bnorm.utils: set_random_seed."""

from __future__ import annotations

from . import _core
from .models import _set_seed_base

__all__ = ["set_random_seed"]


def set_random_seed(seed: int) -> None:
    """keras.utils.set_random_seed: seeds bnorm's weight initialization, dropout and shuffling
    for the models and eagerly called layers created afterwards (bnorm's own generators; NumPy's
    global generator is seeded too, as Keras does)."""
    import numpy as np

    _set_seed_base(seed)
    _core.set_seed(int(seed))
    np.random.seed(int(seed) % (2**32))
