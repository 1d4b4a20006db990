"""bnorm.initializers: Keras initializer objects for layer arguments (strings work too)."""

from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = ["Initializer", "Zeros", "Ones", "Constant", "GlorotUniform", "GlorotNormal", "HeNormal",
           "HeUniform", "LecunNormal", "LecunUniform", "RandomNormal", "RandomUniform",
           "TruncatedNormal", "VarianceScaling"]


class Initializer:
    """Base: `get_config()` is what the layer receives (bnorm draws from its own seeded
    generator; `seed` is accepted and ignored)."""

    _keras_class_name = ""

    def __init__(self, seed: Optional[int] = None, **config: Any) -> None:
        self._config = config

    def get_config(self) -> Dict[str, Any]:
        """Keras's get_config()."""
        return dict(self._config)


def _initializer(name: str, doc: str, **defaults: Any) -> type:
    def __init__(self: Initializer, *args: Any, seed: Optional[int] = None, **kwargs: Any) -> None:
        config = dict(defaults)
        config.update(dict(zip(defaults, args)))
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise TypeError(f"{name}() got unexpected arguments {sorted(unknown)}")
        config.update(kwargs)
        Initializer.__init__(self, seed, **config)

    return type(name, (Initializer,), {"__init__": __init__, "_keras_class_name": name,
                                       "__doc__": doc, "__module__": __name__})


Zeros = _initializer("Zeros", "All zeros.")
Ones = _initializer("Ones", "All ones.")
Constant = _initializer("Constant", "Constant(value=0.0).", value=0.0)
GlorotUniform = _initializer("GlorotUniform", "Uniform in +-sqrt(6 / (fan_in + fan_out)).")
GlorotNormal = _initializer("GlorotNormal", "Truncated normal, variance 2 / (fan_in + fan_out).")
HeNormal = _initializer("HeNormal", "Truncated normal, variance 2 / fan_in.")
HeUniform = _initializer("HeUniform", "Uniform, variance 2 / fan_in.")
LecunNormal = _initializer("LecunNormal", "Truncated normal, variance 1 / fan_in.")
LecunUniform = _initializer("LecunUniform", "Uniform, variance 1 / fan_in.")
RandomNormal = _initializer("RandomNormal", "RandomNormal(mean=0.0, stddev=0.05).", mean=0.0,
                            stddev=0.05)
RandomUniform = _initializer("RandomUniform", "RandomUniform(minval=-0.05, maxval=0.05).",
                             minval=-0.05, maxval=0.05)
TruncatedNormal = _initializer("TruncatedNormal", "TruncatedNormal(mean=0.0, stddev=0.05).",
                               mean=0.0, stddev=0.05)
VarianceScaling = _initializer(
    "VarianceScaling", "VarianceScaling(scale=1.0, mode='fan_in', distribution='truncated_normal').",
    scale=1.0, mode="fan_in", distribution="truncated_normal")
