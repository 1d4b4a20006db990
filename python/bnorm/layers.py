"""bnorm.layers: Keras 3's layers over bnorm's C++ layers.

Each class takes Keras's constructor arguments (the same names, defaults and positional order)
and hands them to the C++ layer table, the same translation the `.keras` loader uses, so a layer
built here and one read from a Keras file are configured identically. A layer is called on
symbolic tensors (`bnorm.Input`) to build a functional graph, or on NumPy arrays to run it
eagerly: `BatchNormalization()(x, training=True)` normalizes with the batch's statistics and
updates the moving ones, exactly as Keras does.
"""

from __future__ import annotations

import json
import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from ._arrays import as_float32

__all__ = [
    "Layer", "Input", "InputLayer", "KerasTensor", "Variable",
    "Dense", "BatchNormalization", "Activation", "Dropout", "ReLU", "Rescaling", "Normalization",
    "Reshape", "Identity", "Flatten", "Add", "Subtract", "Multiply", "Average", "Concatenate",
    "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D", "AveragePooling2D",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "ZeroPadding2D",
]


class KerasTensor:
    """A symbolic tensor of a functional graph (what `bnorm.Input` and layer calls return).

    `shape` includes the batch dimension as None, as Keras prints it."""

    def __init__(self, native: "_core.SymbolicTensor") -> None:
        self._native = native

    @property
    def shape(self) -> Tuple[Optional[int], ...]:
        """(None, *per-sample shape)."""
        return (None, *self._native.shape)

    @property
    def dtype(self) -> str:
        """Always "float32": bnorm computes in float32."""
        return "float32"

    @property
    def name(self) -> str:
        """Name of the layer or input that produces this tensor."""
        return self._native.producer

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape}, dtype=float32, name={self.name}>"


def Input(  # noqa: N802 (Keras's name)
    shape: Optional[Sequence[int]] = None,
    batch_size: Optional[int] = None,
    dtype: Any = None,
    sparse: Optional[bool] = None,
    batch_shape: Optional[Sequence[Optional[int]]] = None,
    name: Optional[str] = None,
    tensor: Any = None,
    optional: bool = False,
) -> KerasTensor:
    """keras.Input: a model input of per-sample `shape` (or `batch_shape` with the batch
    dimension first). bnorm computes in float32; sparse, ragged and optional inputs and fixed
    batch sizes are not supported."""
    if batch_shape is not None:
        if shape is not None:
            raise ValueError("Input: pass shape or batch_shape, not both")
        shape = tuple(batch_shape)[1:]
    if shape is None:
        raise ValueError("Input: shape is required")
    if isinstance(shape, int):
        shape = (shape,)
    if any(d is None for d in shape):
        raise ValueError(f"Input: every per-sample dimension must be known; received {tuple(shape)}")
    _check_dtype(dtype, "Input")
    if sparse or tensor is not None or optional:
        raise ValueError("Input: sparse, optional and tensor-backed inputs are not supported")
    return KerasTensor(_core.make_input([int(d) for d in shape], name or ""))


class InputLayer:
    """keras.layers.InputLayer(shape=...): declares a Sequential model's input shape."""

    def __init__(self, shape: Optional[Sequence[int]] = None, batch_size: Optional[int] = None,
                 dtype: Any = None, sparse: Optional[bool] = None,
                 batch_shape: Optional[Sequence[Optional[int]]] = None,
                 name: Optional[str] = None, **kwargs: Any) -> None:
        if "input_shape" in kwargs:
            shape = kwargs.pop("input_shape")
        if kwargs:
            raise TypeError(f"InputLayer: unexpected arguments {sorted(kwargs)}")
        self.output = Input(shape=shape, dtype=dtype, sparse=sparse, batch_shape=batch_shape,
                            name=name)
        self.name = name


def _check_dtype(dtype: Any, where: str) -> None:
    if dtype is None:
        return
    if np.dtype(dtype) != np.float32:
        raise ValueError(f"{where}: dtype {dtype} is not supported (bnorm computes in float32)")


class Variable:
    """A view of one weight of a layer (Keras's KerasVariable): `numpy()` copies its value,
    `assign(value)` writes it."""

    def __init__(self, layer: "Layer", name: str, shape: Tuple[int, ...], trainable: bool) -> None:
        self._layer = layer
        self.name = name
        self.shape = shape
        self.trainable = trainable
        self.dtype = "float32"

    @property
    def path(self) -> str:
        """"<layer name>/<weight name>", as Keras 3 names variables."""
        return f"{self._layer.name}/{self.name}"

    def numpy(self) -> np.ndarray:
        """A copy of the current value."""
        return self._layer._native.get_weight(self.name)

    @property
    def value(self) -> np.ndarray:
        """The current value (a copy)."""
        return self.numpy()

    def assign(self, value: Any) -> None:
        """Writes `value` (same shape) into the weight."""
        self._layer._native.set_weight(self.name, as_float32(value, f"{self.path}.assign"))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.numpy()
        return array if dtype is None else array.astype(dtype)

    def __repr__(self) -> str:
        return f"<Variable path={self.path}, shape={self.shape}, dtype=float32>"


# C++ layer address -> its Python object (while that object lives), so model.layers returns the
# objects the user created.
_WRAPPERS: "weakref.WeakValueDictionary[int, Layer]" = weakref.WeakValueDictionary()
_ACTIVATION_FUNCTIONS = {"relu", "sigmoid", "tanh", "softmax", "linear", "elu", "selu", "gelu",
                         "swish", "silu", "softplus", "softsign", "hard_sigmoid", "hard_swish",
                         "leaky_relu", "relu6", "exponential", "mish", "log_softmax"}


def _to_json(key: str, value: Any) -> Any:
    """A constructor argument in the JSON form of Keras's get_config()."""
    if hasattr(value, "get_config") and hasattr(value, "_keras_class_name"):
        return {"class_name": value._keras_class_name, "config": value.get_config()}
    if callable(value) and key == "activation":
        name = getattr(value, "__name__", None)
        if name in _ACTIVATION_FUNCTIONS:
            return name
        raise ValueError(f"activation {value!r}: only built-in activations (by name or as "
                         "bnorm.activations functions) are supported; bnorm runs no Python code "
                         "inside its layers")
    if isinstance(value, (tuple, list)):
        return [_to_json(key, v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class Layer:
    """Base of every bnorm layer (Keras's keras.layers.Layer).

    Subclasses name the Keras class and its positional arguments; everything else is Keras's
    keyword arguments. Layers written in Python (a subclass with its own `call`) are not
    supported: bnorm runs every layer in C++."""

    _class_name = ""
    _positional: Tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not self._class_name:
            raise TypeError("bnorm layers are C++ layers: subclassing Layer with your own call() "
                            "is not supported; compose the built-in layers instead")
        cls = type(self).__name__
        if len(args) > len(self._positional):
            raise TypeError(f"{cls}() takes at most {len(self._positional)} positional "
                            f"arguments ({len(args)} given)")
        config: Dict[str, Any] = dict(zip(self._positional, args))
        for key, value in kwargs.items():
            if key in config:
                raise TypeError(f"{cls}() got multiple values for argument '{key}'")
            config[key] = value
        self._input_shape: Optional[Tuple[int, ...]] = None
        if config.get("input_shape") is not None:
            self._input_shape = tuple(int(d) for d in config["input_shape"])
        if config.get("input_dim") is not None:
            self._input_shape = (int(config["input_dim"]),)
        if config.get("batch_input_shape") is not None:
            self._input_shape = tuple(int(d) for d in config["batch_input_shape"][1:])
        for key in ("input_shape", "input_dim", "batch_input_shape"):
            config.pop(key, None)
        if not isinstance(config.get("dtype"), dict):  # a DTypePolicy config goes to C++
            _check_dtype(config.pop("dtype", None), cls)
        args_json = {k: _to_json(k, v) for k, v in config.items() if v is not None}
        try:
            native = _core.make_layer(self._class_name, json.dumps(args_json))
        except ValueError as error:
            message = str(error)
            if "unknown key" in message:
                raise TypeError(message) from None
            raise
        self._bind(native)

    def _bind(self, native: "_core.Layer") -> None:
        self._native = native
        _WRAPPERS[native.address] = self

    @classmethod
    def _wrap(cls, native: "_core.Layer") -> "Layer":
        """The Python object of a C++ layer (the same object every time while it lives)."""
        existing = _WRAPPERS.get(native.address)
        if existing is not None and existing._native is native:
            return existing
        klass = _CLASSES.get(native.class_name, Layer)
        obj = klass.__new__(klass)
        obj._input_shape = None
        obj._bind(native)
        return obj

    # ---- identity and flags -----------------------------------------------------------------
    @property
    def name(self) -> str:
        """The layer's name (unique within a model; a model names unnamed layers as Keras does)."""
        return self._native.name

    @property
    def trainable(self) -> bool:
        """Keras's trainable flag. False freezes the weights, and a frozen BatchNormalization
        normalizes with its moving statistics even during fit (Keras 3 semantics). Read when fit
        starts."""
        return self._native.trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._native.trainable = bool(value)

    @property
    def built(self) -> bool:
        """Whether the weights exist."""
        return self._native.built

    @property
    def dtype(self) -> str:
        """Always "float32"."""
        return "float32"

    # ---- weights ----------------------------------------------------------------------------
    @property
    def weights(self) -> List[Variable]:
        """Every weight in Keras order (BatchNormalization: gamma, beta, moving_mean,
        moving_variance)."""
        return [Variable(self, n, tuple(s), t) for n, s, t in self._native.weight_info()]

    @property
    def trainable_weights(self) -> List[Variable]:
        """The weights an optimizer updates (none when the layer is frozen)."""
        return [v for v in self.weights if v.trainable and self.trainable]

    @property
    def non_trainable_weights(self) -> List[Variable]:
        """The other weights (moving statistics; all of them when frozen)."""
        return [v for v in self.weights if not (v.trainable and self.trainable)]

    @property
    def trainable_variables(self) -> List[Variable]:
        """Alias of trainable_weights."""
        return self.trainable_weights

    @property
    def non_trainable_variables(self) -> List[Variable]:
        """Alias of non_trainable_weights."""
        return self.non_trainable_weights

    @property
    def variables(self) -> List[Variable]:
        """Alias of weights."""
        return self.weights

    def get_weights(self) -> List[np.ndarray]:
        """Copies of the weights as NumPy arrays, Keras order."""
        return list(self._native.get_weights())

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Sets every weight; ValueError on a count or shape mismatch (nothing written then)."""
        self._native.set_weights([as_float32(w, f"{self.name}.set_weights[{i}]")
                                  for i, w in enumerate(weights)])

    def __getattr__(self, attr: str) -> Any:
        # Keras's layer.kernel, layer.gamma, layer.moving_mean, ...
        if attr.startswith("_"):
            raise AttributeError(attr)
        native = self.__dict__.get("_native")
        if native is not None:
            for n, s, t in native.weight_info():
                if n == attr:
                    return Variable(self, n, tuple(s), t)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{attr}'")

    def count_params(self) -> int:
        """Number of weight elements."""
        return int(self._native.count_params())

    def get_config(self) -> Dict[str, Any]:
        """Keras's get_config(): name, trainable, dtype and the constructor arguments."""
        return json.loads(self._native.config())

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Layer":
        """A new layer from get_config()'s dict."""
        return cls(**config)

    def build(self, input_shape: Any) -> None:
        """Creates the weights for an input shape with the batch dimension first (Keras's
        build(input_shape)); a list of shapes for a merge layer."""
        shapes = input_shape if input_shape and isinstance(input_shape[0], (list, tuple)) else [
            input_shape]
        self._native.build([[int(d) for d in s[1:]] for s in shapes])

    # ---- calls ------------------------------------------------------------------------------
    def __call__(self, inputs: Any, training: Optional[bool] = None, **kwargs: Any) -> Any:
        """On KerasTensors: adds a call to the functional graph and returns its output tensor.
        On arrays: runs the layer (training=True: batch statistics, dropout) and returns a new
        NumPy array."""
        if kwargs:
            raise TypeError(f"{type(self).__name__}.__call__: unexpected arguments {sorted(kwargs)}")
        items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if all(isinstance(t, KerasTensor) for t in items):
            if training is not None:
                raise ValueError(
                    f"{self.name}: training={training} on a symbolic call is not supported; the "
                    "mode comes from fit (training) and predict/evaluate (inference)")
            return KerasTensor(self._native.call_symbolic([t._native for t in items]))
        if any(isinstance(t, KerasTensor) for t in items):
            raise TypeError(f"{self.name}: inputs mix KerasTensors and arrays")
        arrays = [as_float32(t, f"{self.name} input") for t in items]
        return self._native.call_eager(arrays, bool(training))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


def _layer_class(class_name: str, positional: Tuple[str, ...], doc: str) -> type:
    return type(class_name, (Layer,), {
        "_class_name": class_name, "_positional": positional, "__doc__": doc,
        "__module__": __name__})


Dense = _layer_class("Dense", ("units", "activation"), """keras.layers.Dense(units,
activation=None, use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
kernel_regularizer=None, bias_regularizer=None): y = activation(x @ kernel + bias).""")
BatchNormalization = _layer_class(
    "BatchNormalization", ("axis", "momentum", "epsilon", "center", "scale"),
    """keras.layers.BatchNormalization(axis=-1, momentum=0.99, epsilon=0.001, center=True,
scale=True, beta_initializer="zeros", gamma_initializer="ones",
moving_mean_initializer="zeros", moving_variance_initializer="ones", beta_regularizer=None,
gamma_regularizer=None): Keras-exact batch normalization. Training: batch statistics (biased
variance) and moving = moving * momentum + batch * (1 - momentum); inference: the moving
statistics. Weights gamma, beta, moving_mean, moving_variance.""")
Activation = _layer_class("Activation", ("activation",),
                          """keras.layers.Activation(activation): an activation by name.""")
Dropout = _layer_class("Dropout", ("rate", "noise_shape", "seed"),
                       """keras.layers.Dropout(rate, seed=None): zeroes units with probability
rate in training and scales the rest by 1 / (1 - rate); identity at inference.""")
ReLU = _layer_class("ReLU", ("max_value", "negative_slope", "threshold"),
                    """keras.layers.ReLU(max_value=None, negative_slope=0.0, threshold=0.0).""")
Rescaling = _layer_class("Rescaling", ("scale", "offset"),
                         """keras.layers.Rescaling(scale, offset=0.0): y = x * scale + offset.""")
Normalization = _layer_class("Normalization", ("axis", "mean", "variance", "invert"),
                             """keras.layers.Normalization(axis=-1, mean=None, variance=None,
invert=False) with given mean and variance: y = (x - mean) / sqrt(variance).""")
Reshape = _layer_class("Reshape", ("target_shape",),
                       """keras.layers.Reshape(target_shape): per-sample reshape (-1 allowed).""")
Identity = _layer_class("Identity", (), """keras.layers.Identity(): returns its input.""")
Flatten = _layer_class("Flatten", ("data_format",),
                       """keras.layers.Flatten(data_format=None): per-sample flatten.""")
Add = _layer_class("Add", (), """keras.layers.Add(): elementwise sum of a list of tensors
(the residual connection).""")
Subtract = _layer_class("Subtract", (), """keras.layers.Subtract(): a - b.""")
Multiply = _layer_class("Multiply", (), """keras.layers.Multiply(): elementwise product.""")
Average = _layer_class("Average", (), """keras.layers.Average(): elementwise mean.""")
Concatenate = _layer_class("Concatenate", ("axis",),
                           """keras.layers.Concatenate(axis=-1): joins tensors along an axis.""")
Conv2D = _layer_class(
    "Conv2D", ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
               "groups", "activation", "use_bias"),
    """keras.layers.Conv2D(filters, kernel_size, strides=(1, 1), padding="valid",
data_format=None, dilation_rate=(1, 1), groups=1, activation=None, use_bias=True,
kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
bias_regularizer=None): 2-D convolution, NHWC (channels_last) or channels_first.""")
DepthwiseConv2D = _layer_class(
    "DepthwiseConv2D", ("kernel_size", "strides", "padding", "depth_multiplier", "data_format",
                        "dilation_rate", "activation", "use_bias"),
    """keras.layers.DepthwiseConv2D(kernel_size, strides=(1, 1), padding="valid",
depth_multiplier=1, data_format=None, dilation_rate=(1, 1), activation=None, use_bias=True):
one filter per input channel.""")
SeparableConv2D = _layer_class(
    "SeparableConv2D", ("filters", "kernel_size", "strides", "padding", "data_format",
                        "dilation_rate", "depth_multiplier", "activation", "use_bias"),
    """keras.layers.SeparableConv2D(filters, kernel_size, strides=(1, 1), padding="valid",
data_format=None, dilation_rate=(1, 1), depth_multiplier=1, activation=None, use_bias=True):
depthwise then pointwise convolution.""")
MaxPooling2D = _layer_class("MaxPooling2D", ("pool_size", "strides", "padding", "data_format"),
                            """keras.layers.MaxPooling2D(pool_size=(2, 2), strides=None,
padding="valid", data_format=None).""")
AveragePooling2D = _layer_class("AveragePooling2D",
                                ("pool_size", "strides", "padding", "data_format"),
                                """keras.layers.AveragePooling2D(pool_size=(2, 2), strides=None,
padding="valid", data_format=None).""")
GlobalAveragePooling2D = _layer_class("GlobalAveragePooling2D", ("data_format", "keepdims"),
                                      """keras.layers.GlobalAveragePooling2D(data_format=None,
keepdims=False).""")
GlobalMaxPooling2D = _layer_class("GlobalMaxPooling2D", ("data_format", "keepdims"),
                                  """keras.layers.GlobalMaxPooling2D(data_format=None,
keepdims=False).""")
ZeroPadding2D = _layer_class("ZeroPadding2D", ("padding", "data_format"),
                             """keras.layers.ZeroPadding2D(padding=(1, 1), data_format=None).""")

_CLASSES: Dict[str, type] = {
    c._class_name: c for c in (
        Dense, BatchNormalization, Activation, Dropout, ReLU, Rescaling, Normalization, Reshape,
        Identity, Flatten, Add, Subtract, Multiply, Average, Concatenate, Conv2D,
        DepthwiseConv2D, SeparableConv2D, MaxPooling2D, AveragePooling2D,
        GlobalAveragePooling2D, GlobalMaxPooling2D, ZeroPadding2D)
}
