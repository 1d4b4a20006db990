"""NumPy conversions at the boundary of bnorm's C++ core.

A float32, C-contiguous array goes to C++ as it is (the core reads its buffer: no copy). Anything
else numeric is converted once, here, with NumPy's own rules; what cannot be converted without
losing meaning (complex numbers, strings, objects) is refused with a TypeError.
"""

from __future__ import annotations

from typing import Any, List

import numpy as np


def as_float32(value: Any, what: str) -> np.ndarray:
    """Returns `value` as a float32 C-contiguous array (the same object when it already is one)."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{what}: expected a numeric array (bool, int, uint or float); received dtype "
            f"{array.dtype}"
        )
    if array.ndim == 0:
        raise ValueError(f"{what}: expected an array with a batch dimension; received a scalar")
    return np.ascontiguousarray(array, dtype=np.float32)


def as_float32_list(value: Any, what: str) -> List[np.ndarray]:
    """One array, or a list/tuple of NumPy arrays (one per model input or output), as float32
    arrays. A nested Python list of numbers is one array, as NumPy reads it."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, np.ndarray) for v in value):
        return [as_float32(v, f"{what}[{i}]") for i, v in enumerate(value)]
    return [as_float32(value, what)]

