"""bnorm.optimizers: Keras 3's SGD, Adam and RMSprop (the update rules run in C++).

An optimizer object holds its hyper-parameters until `model.compile` attaches it to a model;
from then on `learning_rate` and `iterations` read and write the model's optimizer."""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

__all__ = ["Optimizer", "SGD", "Adam", "RMSprop", "get"]

# Keras arguments bnorm does not implement: accepted only at their "off" value.
_OFF_VALUES = {"weight_decay": None, "clipnorm": None, "clipvalue": None, "global_clipnorm": None,
               "use_ema": False, "loss_scale_factor": None, "gradient_accumulation_steps": None}
_IGNORED_WITHOUT_EMA = ("ema_momentum", "ema_overwrite_frequency")


class Optimizer:
    """Base class: `learning_rate` (a float; schedules as callbacks), `iterations`."""

    _keras_class_name = ""
    _defaults: Dict[str, float] = {}

    def __init__(self, name: Optional[str] = None, **config: Any) -> None:
        cls = type(self).__name__
        for key, off in _OFF_VALUES.items():
            value = config.pop(key, off)
            if value != off:
                raise ValueError(f"{cls}: {key}={value!r} is not supported by bnorm")
        for key in _IGNORED_WITHOUT_EMA:
            config.pop(key, None)
        unknown = set(config) - set(self._defaults)
        if unknown:
            raise TypeError(f"{cls}() got unexpected arguments {sorted(unknown)}")
        self._config = {k: float(config.get(k, v)) for k, v in self._defaults.items()}
        lr = config.get("learning_rate", self._defaults["learning_rate"])
        if callable(lr) or not isinstance(lr, (int, float)):
            raise TypeError(f"{cls}: learning_rate must be a number (use a LearningRateScheduler "
                            "callback for schedules)")
        self.name = name or cls.lower()
        self._model: Any = None

    def _attach(self, native_model: Any) -> None:
        if self._model is not None and self._model is not native_model:
            raise ValueError(f"{type(self).__name__}: this optimizer is already used by another "
                             "model; create one per model")
        self._model = native_model

    @property
    def learning_rate(self) -> float:
        """The learning rate the next updates use."""
        if self._model is not None and self._model.compiled:
            return float(self._model.learning_rate)
        return self._config["learning_rate"]

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        if self._model is not None and self._model.compiled:
            self._model.learning_rate = float(value)
        self._config["learning_rate"] = float(value)

    @property
    def iterations(self) -> int:
        """Number of update steps taken."""
        if self._model is not None and self._model.compiled:
            return int(self._model.iterations)
        return 0

    def get_config(self) -> Dict[str, Any]:
        """Keras's get_config()."""
        config: Dict[str, Any] = {"name": self.name, **self._config}
        config["learning_rate"] = self.learning_rate
        for flag in ("nesterov", "centered"):
            if flag in config:
                config[flag] = bool(config[flag])
        return config

    def __repr__(self) -> str:
        return f"<{type(self).__name__} learning_rate={self.learning_rate}>"


class SGD(Optimizer):
    """keras.optimizers.SGD(learning_rate=0.01, momentum=0.0, nesterov=False)."""

    _keras_class_name = "SGD"
    _defaults = {"learning_rate": 0.01, "momentum": 0.0, "nesterov": 0.0}

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 name: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(name, learning_rate=learning_rate, momentum=momentum,
                         nesterov=float(bool(nesterov)), **kwargs)


class Adam(Optimizer):
    """keras.optimizers.Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-07)."""

    _keras_class_name = "Adam"
    _defaults = {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, name: Optional[str] = None,
                 **kwargs: Any) -> None:
        if amsgrad:
            raise ValueError("Adam: amsgrad=True is not supported by bnorm")
        super().__init__(name, learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, **kwargs)


class RMSprop(Optimizer):
    """keras.optimizers.RMSprop(learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-07,
    centered=False)."""

    _keras_class_name = "RMSprop"
    _defaults = {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7,
                 "centered": 0.0}

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, name: Optional[str] = None,
                 **kwargs: Any) -> None:
        super().__init__(name, learning_rate=learning_rate, rho=rho, momentum=momentum,
                         epsilon=epsilon, centered=float(bool(centered)), **kwargs)


_BY_NAME = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop}


def get(identifier: Union[str, Optimizer, Dict[str, Any]]) -> Optimizer:
    """keras.optimizers.get: an optimizer from a name ("adam"), a config dict or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower())
        if cls is None:
            raise ValueError(f"unknown optimizer '{identifier}'; bnorm has: sgd, adam, rmsprop")
        return cls()
    if isinstance(identifier, dict) and "class_name" in identifier:
        cls = _BY_NAME.get(str(identifier["class_name"]).lower())
        if cls is None:
            raise ValueError(f"unknown optimizer class '{identifier['class_name']}'")
        return cls(**identifier.get("config", {}))
    raise TypeError(f"cannot interpret {identifier!r} as an optimizer")
