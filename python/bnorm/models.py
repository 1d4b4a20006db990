"""bnorm.models: Keras 3's Model (functional) and Sequential over bnorm's one C++ training engine.

    model = bnorm.Sequential([bnorm.layers.Dense(64, activation="relu"),
                              bnorm.layers.BatchNormalization(),
                              bnorm.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=10, validation_split=0.1)

fit, evaluate, predict and train_on_batch run in C++ with the GIL released; NumPy float32
C-contiguous inputs are read in place (no copy).
"""

from __future__ import annotations

import math
import os
import sys
import threading
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from . import _core, callbacks as callbacks_module, losses, optimizers
from ._arrays import as_float32, as_float32_list
from .layers import InputLayer, KerasTensor, Layer

__all__ = ["Model", "Sequential", "load_model", "save_model"]

_SEED_LOCK = threading.Lock()
_NEXT_SEED = [0]


def _next_seed() -> int:
    """Each new model draws the next seed: the same script builds the same weights every run
    (bnorm.utils.set_random_seed changes the sequence)."""
    with _SEED_LOCK:
        seed = _NEXT_SEED[0]
        _NEXT_SEED[0] += 1
    return seed


def _set_seed_base(seed: int) -> None:
    with _SEED_LOCK:
        _NEXT_SEED[0] = int(seed) * 1000003


def _verbose(verbose: Any) -> int:
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2; received {verbose!r}")
    return int(verbose)


def _refuse(where: str, **unsupported: Any) -> None:
    for key, value in unsupported.items():
        if value is not None:
            raise ValueError(f"{where}: '{key}' is not supported by bnorm")


def _summary_line(steps: int, logs: Dict[str, float]) -> str:
    """The final progress line of evaluate/predict with verbose=1 (fit draws its own in C++)."""
    bar = "\u2501" * 20
    text = f"{steps}/{steps} {bar}"
    for key, value in logs.items():
        text += f" - {key}: {value:.4f}"
    return text


class Model:
    """keras.Model(inputs, outputs, name=None): a functional model. Calling layers on
    `bnorm.Input` tensors builds the graph (shared layers, several inputs and outputs, nested
    models, residual connections); `Model(inputs, outputs)` keeps what lies between them."""

    def __init__(self, inputs: Any = None, outputs: Any = None, name: Optional[str] = None,
                 trainable: bool = True, **kwargs: Any) -> None:
        if kwargs:
            raise TypeError(f"Model() got unexpected arguments {sorted(kwargs)}")
        if inputs is None or outputs is None:
            raise TypeError("bnorm.Model needs inputs and outputs (the functional API); "
                            "subclassed models with a Python call() are not supported")
        self._single_input = not isinstance(inputs, (list, tuple))
        self._single_output = not isinstance(outputs, (list, tuple))
        ins = [inputs] if self._single_input else list(inputs)
        outs = [outputs] if self._single_output else list(outputs)
        for t in ins + outs:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"Model: inputs and outputs must be KerasTensors (from "
                                f"bnorm.Input and layer calls); received {type(t).__name__}")
        native = _core.Model.functional([t._native for t in ins], [t._native for t in outs],
                                        name or "functional", _next_seed())
        self._init_common(native)
        if not trainable:
            self.trainable = False

    def _init_common(self, native: Any) -> None:
        self._native = native
        self._optimizer: Optional[optimizers.Optimizer] = None
        self.history: Optional[callbacks_module.History] = None

    @classmethod
    def _from_native(cls, native: Any) -> "Model":
        klass = Sequential if native.is_sequential else Model
        obj = klass.__new__(klass)
        obj._init_common(native)
        obj._single_input = len(native.input_shapes) <= 1
        obj._single_output = len(native.output_shapes) <= 1
        if native.compiled:
            opt = optimizers.get(native.optimizer_name)
            for key, value in native.optimizer_config.items():
                if key in opt._config:
                    opt._config[key] = float(value)
            opt._attach(native)
            obj._optimizer = opt
        return obj

    # ---- structure --------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The model's name."""
        return self._native.name

    @property
    def layers(self) -> List[Layer]:
        """Every layer once, in graph order, without the input layers (as Keras lists them)."""
        return [Layer._wrap(n) for n in self._native.layers]

    def get_layer(self, name: Optional[str] = None, index: Optional[int] = None) -> Layer:
        """A layer by name or by index into `layers`."""
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No such layer: {name}. Existing layers are: "
                         f"{[l.name for l in self.layers]}.")

    @property
    def inputs(self) -> List[KerasTensor]:
        """The symbolic inputs."""
        return [KerasTensor(t) for t in self._native.inputs]

    @property
    def outputs(self) -> List[KerasTensor]:
        """The symbolic outputs."""
        return [KerasTensor(t) for t in self._native.outputs]

    @property
    def input_shape(self) -> Any:
        """(None, ...) per input; one tuple for a single input."""
        shapes = [(None, *s) for s in self._native.input_shapes]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self) -> Any:
        """(None, ...) per output; one tuple for a single output."""
        shapes = [(None, *s) for s in self._native.output_shapes]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def built(self) -> bool:
        """Whether the weights exist."""
        return self._native.built

    @property
    def trainable(self) -> bool:
        """False when every layer is frozen; setting it sets every layer."""
        return any(l.trainable for l in self.layers) if self.layers else True

    @trainable.setter
    def trainable(self, value: bool) -> None:
        for layer in self.layers:
            layer.trainable = value

    @property
    def weights(self) -> list:
        """Every weight of every layer (Keras order)."""
        return [w for l in self.layers for w in l.weights]

    @property
    def trainable_weights(self) -> list:
        """The weights the optimizer updates."""
        return [w for l in self.layers for w in l.trainable_weights]

    @property
    def non_trainable_weights(self) -> list:
        """Moving statistics and the weights of frozen layers."""
        return [w for l in self.layers for w in l.non_trainable_weights]

    def count_params(self) -> int:
        """Number of weight elements."""
        return int(self._native.count_params())

    def get_weights(self) -> List[np.ndarray]:
        """Copies of every weight as NumPy arrays, in Keras order."""
        return list(self._native.get_weights())

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Sets every weight (Keras order); ValueError on a count or shape mismatch, before
        anything is written."""
        self._native.set_weights([as_float32(w, f"set_weights[{i}]")
                                  for i, w in enumerate(weights)])

    def summary(self, line_length: Optional[int] = None, positions: Any = None,
                print_fn: Any = None, expand_nested: bool = False, show_trainable: bool = False,
                layer_range: Any = None) -> None:
        """Prints Keras's summary table (layer, output shape, parameters; "Connected to" for a
        functional model) and the parameter totals."""
        text = self._native.summary()
        (print_fn or print)(text)

    def __call__(self, inputs: Any, training: Optional[bool] = None) -> Any:
        """On KerasTensors: a call of this model inside another graph (weights shared). On
        arrays: the outputs in inference mode (training=True is not supported eagerly)."""
        items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if all(isinstance(t, KerasTensor) for t in items):
            outs = [KerasTensor(t) for t in self._native.call_symbolic([t._native for t in items])]
            return outs[0] if len(outs) == 1 else outs
        if training:
            raise ValueError("model(x, training=True) is not supported; use fit or "
                             "train_on_batch to train, evaluate(...) for batch statistics")
        xs = as_float32_list(inputs, "x")
        return self.predict(xs if len(xs) > 1 else xs[0], batch_size=max(1, len(xs[0])), verbose=0)

    # ---- compile ----------------------------------------------------------------------------
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, loss_weights: Any = None,
                metrics: Any = None, weighted_metrics: Any = None, run_eagerly: bool = False,
                steps_per_execution: int = 1, jit_compile: Any = "auto",
                auto_scale_loss: bool = True) -> None:
        """Keras's compile: optimizer (name or bnorm.optimizers object), loss (name, loss object or
        function: sparse_categorical_crossentropy, categorical_crossentropy, mean_squared_error),
        metrics (["accuracy"] or none). With several outputs the loss applies to each and the
        total is their sum."""
        if loss is None:
            raise ValueError("compile: a loss is required (bnorm has no custom training step)")
        _refuse("compile", loss_weights=loss_weights, weighted_metrics=weighted_metrics)
        opt = optimizers.get(optimizer)
        names: List[str] = []
        for m in metrics or []:
            name = m if isinstance(m, str) else getattr(m, "name", getattr(m, "__name__", ""))
            if name not in ("accuracy", "acc", "sparse_categorical_accuracy",
                            "categorical_accuracy"):
                raise ValueError(f"compile: metric {m!r} is not supported; bnorm has 'accuracy'")
            names = ["accuracy"]
        opt._attach(self._native)
        config = {k: v for k, v in opt._config.items()}
        self._native.compile(opt._keras_class_name, config, losses.get(loss), names)
        self._optimizer = opt
        self._uncompiled = False

    @property
    def optimizer(self) -> Optional[optimizers.Optimizer]:
        """The optimizer given to compile (its learning_rate reads and writes the model's)."""
        return self._optimizer

    @property
    def stop_training(self) -> bool:
        """Set to True by a callback to end fit after the current epoch."""
        return self._native.stop_training

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self._native.stop_training = bool(value)

    def _check_compiled(self, what: str) -> None:
        if not self._native.compiled or getattr(self, "_uncompiled", False):
            raise RuntimeError(f"You must call `compile()` before using the model ({what}).")

    # ---- training ---------------------------------------------------------------------------
    def fit(self, x: Any = None, y: Any = None, batch_size: Optional[int] = None, epochs: int = 1,
            verbose: Any = "auto", callbacks: Optional[List[callbacks_module.Callback]] = None,
            validation_split: float = 0.0, validation_data: Any = None, shuffle: bool = True,
            class_weight: Any = None, sample_weight: Any = None, initial_epoch: int = 0,
            steps_per_epoch: Optional[int] = None, validation_steps: Optional[int] = None,
            validation_batch_size: Optional[int] = None,
            validation_freq: int = 1) -> callbacks_module.History:
        """Keras's fit on NumPy arrays (one per input/output for multi-input models). Batches of
        `batch_size` (default 32, the last one partial), `validation_split` holds out the last
        fraction before shuffling, `validation_data=(x_val, y_val)` overrides it. Returns a
        History whose .history has "loss", "accuracy" and "val_" keys per epoch. Ctrl-C stops
        after the current batch with KeyboardInterrupt; the model keeps the last step's weights.
        `initial_epoch` continues a run as Keras does (epochs initial_epoch..epochs-1); on a model
        loaded from a bnorm checkpoint (ModelCheckpoint to a .bnorm file) it continues that run
        bit for bit."""
        self._check_compiled("fit")
        _refuse("fit", class_weight=class_weight, sample_weight=sample_weight,
                steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                validation_batch_size=validation_batch_size)
        if validation_freq != 1:
            raise ValueError("fit: only validation_freq=1 is supported")
        if x is None or y is None:
            raise ValueError("fit: x and y are required (NumPy arrays)")
        level = _verbose(verbose)
        xs = as_float32_list(x, "x")
        ys = as_float32_list(y, "y")
        validation = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("fit: validation_data must be (x_val, y_val)")
            validation = (as_float32(validation_data[0], "validation_data x"),
                          as_float32(validation_data[1], "validation_data y"))
        history = callbacks_module.History()
        user = list(callbacks or [])
        for c in user:
            if not isinstance(c, callbacks_module.Callback):
                raise TypeError(f"fit: callbacks must be bnorm.callbacks.Callback objects; "
                                f"received {type(c).__name__}")
        params = {"verbose": level, "epochs": epochs, "steps": None}
        cb_list = callbacks_module.CallbackList(user + [history], self, params)
        writer = None
        if level > 0:
            def writer(text: str) -> None:
                sys.stdout.write(text)
                sys.stdout.flush()
        interactive = level == 1 and hasattr(sys.stdout, "isatty") and sys.stdout.isatty()
        self.reset_metrics()
        self._native.fit(xs, ys, int(batch_size or 32), int(epochs), float(validation_split),
                         validation, bool(shuffle), cb_list, cb_list.wants_batches, writer,
                         bool(interactive), int(initial_epoch))
        self.history = history
        return history

    def train_on_batch(self, x: Any, y: Any = None, sample_weight: Any = None,
                       class_weight: Any = None, return_dict: bool = False) -> Any:
        """One gradient step on one batch. Returns what Keras 3 returns: this batch's loss and
        metrics, computed by the forward pass before the update (Keras resets its metrics on
        every call): a float loss when the model has no metrics, [loss, accuracy] otherwise, a
        dict {"accuracy", "loss"} with return_dict=True."""
        self._check_compiled("train_on_batch")
        _refuse("train_on_batch", sample_weight=sample_weight, class_weight=class_weight)
        xs = as_float32_list(x, "x")
        ys = as_float32_list(y, "y")
        loss, correct = self._native.train_on_batch(xs, ys)
        logs = {"loss": float(loss)}
        if self._native.metrics:
            logs = {"accuracy": float(correct) / len(xs[0]), **logs}
        if return_dict:
            return logs
        return [logs["loss"], logs["accuracy"]] if self._native.metrics else logs["loss"]

    def reset_metrics(self) -> None:
        """Keras's reset_metrics: bnorm keeps no metric state between calls (fit and evaluate
        compute theirs per call, train_on_batch per batch), so there is nothing to reset."""

    def evaluate(self, x: Any = None, y: Any = None, batch_size: Optional[int] = None,
                 verbose: Any = "auto", sample_weight: Any = None, steps: Optional[int] = None,
                 callbacks: Any = None, return_dict: bool = False, **kwargs: Any) -> Any:
        """Loss and metrics in inference mode (moving statistics): a scalar loss without metrics,
        [loss, accuracy] with them, a dict with return_dict=True."""
        self._check_compiled("evaluate")
        _refuse("evaluate", sample_weight=sample_weight, steps=steps, callbacks=callbacks)
        if kwargs:
            raise TypeError(f"evaluate() got unexpected arguments {sorted(kwargs)}")
        xs = as_float32_list(x, "x")
        ys = as_float32_list(y, "y")
        bs = int(batch_size or 32)
        loss, accuracy = self._native.evaluate(xs, ys, bs, False)
        logs = {"accuracy": accuracy, "loss": loss} if self._native.metrics else {"loss": loss}
        if _verbose(verbose) == 1:
            print(_summary_line(math.ceil(len(xs[0]) / bs), logs))
        if return_dict:
            return logs
        return [loss, accuracy] if self._native.metrics else loss

    def predict(self, x: Any, batch_size: Optional[int] = None, verbose: Any = "auto",
                steps: Optional[int] = None, callbacks: Any = None) -> Any:
        """Outputs in inference mode as float32 NumPy arrays (one array, or a list for several
        outputs). BatchNormalization that follows a Dense/Conv2D is folded into it for speed
        (equal within float32 rounding)."""
        _refuse("predict", steps=steps, callbacks=callbacks)
        xs = as_float32_list(x, "x")
        bs = int(batch_size or 32)
        outs = list(self._native.predict(xs, bs))
        if _verbose(verbose) == 1:
            print(_summary_line(math.ceil(len(xs[0]) / bs), {}))
        return outs[0] if len(outs) == 1 else outs

    def recalibrate_batch_norm(self, x: Any, batch_size: int = 32, batches: int = 200) -> int:
        """PreciseBN (Wu & Johnson 2021; fvcore's update_bn_stats, not in Keras): replaces every
        trainable BatchNormalization's moving statistics by the average of its batch statistics
        over the first `batches` batches of x (0: all), the model running forward in training
        mode; nothing else changes. Closes the gap a short run leaves between training-mode and
        inference-mode accuracy. Returns the number of batches used."""
        xs = as_float32_list(x, "x")
        return int(self._native.recalibrate_batch_norm(xs, int(batch_size), int(batches)))

    def predict_on_batch(self, x: Any) -> Any:
        """predict on one batch."""
        xs = as_float32_list(x, "x")
        return self.predict(x, batch_size=max(1, len(xs[0])), verbose=0)

    def test_on_batch(self, x: Any, y: Any = None, return_dict: bool = False) -> Any:
        """evaluate on one batch."""
        xs = as_float32_list(x, "x")
        return self.evaluate(x, y, batch_size=max(1, len(xs[0])), verbose=0,
                             return_dict=return_dict)

    # ---- files ------------------------------------------------------------------------------
    def save(self, filepath: Union[str, "os.PathLike[str]"], overwrite: bool = True,
             zipped: Any = None, **kwargs: Any) -> None:
        """Saves the model atomically: `.keras` (Keras 3's format, loads in
        keras.saving.load_model), `.h5` (legacy HDF5) or `.bnorm` (bnorm's own)."""
        path = os.fspath(filepath)
        if not overwrite and os.path.exists(path):
            raise FileExistsError(f"save: {path} exists and overwrite=False")
        self._native.save(path)

    def load_weights(self, filepath: Union[str, "os.PathLike[str]"], **kwargs: Any) -> None:
        """Weights from a `.weights.h5`, a Keras model file or a `.bnorm` file, matched by layer;
        the model is unchanged when loading fails."""
        self._native.load_weights(os.fspath(filepath))

    def get_config(self) -> Dict[str, Any]:
        """Name and layer configs (for inspection; save() writes the full Keras config)."""
        return {"name": self.name, "layers": [
            {"class_name": type(l).__name__, "config": l.get_config()} for l in self.layers]}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


class Sequential(Model):
    """keras.Sequential(layers=None, name=None): a chain of layers. Declare the input with
    `bnorm.Input(shape=...)` (or `input_shape=` on the first layer); otherwise the model is
    built on the first batch it sees."""

    def __init__(self, layers: Optional[Sequence[Any]] = None, name: Optional[str] = None,
                 trainable: bool = True) -> None:
        self._init_common(_core.Model.sequential(name or "sequential", _next_seed()))
        self._single_input = True
        self._single_output = True
        self._has_input = False
        pending: List[Layer] = []  # consecutive plain layers are added in one call
        for layer in layers or []:
            if isinstance(layer, Layer) and (pending or self._native.layers or self._has_input or
                                             layer._input_shape is None):
                self._check_layer(layer)
                pending.append(layer)
                continue
            self._flush(pending)
            self.add(layer)
        self._flush(pending)
        if not trainable:
            self.trainable = False

    def add(self, layer: Any) -> None:
        """Appends a layer (or an Input, which must come first)."""
        if isinstance(layer, InputLayer):
            layer = layer.output
        if isinstance(layer, KerasTensor):
            if self._native.layers or getattr(self, "_has_input", False):
                raise ValueError("Sequential.add: an Input must come before every layer")
            self._native.add_input(list(layer._native.shape), "")
            self._has_input = True
            return
        self._check_layer(layer)
        if not self._native.layers and not getattr(self, "_has_input", False) and (
                layer._input_shape is not None):
            self._native.add_input(list(layer._input_shape), "")
            self._has_input = True
        self._native.add(layer._native)

    @staticmethod
    def _check_layer(layer: Any) -> None:
        if isinstance(layer, Model):
            raise ValueError("Sequential.add: adding a model inside a Sequential is not "
                             "supported; use the functional API to nest models")
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a bnorm layer; received "
                            f"{type(layer).__name__}")

    def _flush(self, pending: List[Layer]) -> None:
        if pending:
            self._native.add_layers([l._native for l in pending])
            pending.clear()

    def pop(self) -> Layer:
        """Removing layers is not supported (bnorm plans the graph when layers are added)."""
        raise NotImplementedError("Sequential.pop is not supported; build a new Sequential")

    def build(self, input_shape: Optional[Sequence[Optional[int]]] = None) -> None:
        """Creates the weights for a batch shape (None, ...)."""
        if input_shape is None:
            raise ValueError("Sequential.build: input_shape is required (None, ...)")
        self._native.build_sequential([int(d) for d in tuple(input_shape)[1:]])


def load_model(filepath: Union[str, "os.PathLike[str]"], custom_objects: Any = None,
               compile: bool = True, safe_mode: bool = True) -> Model:
    """A model from a `.keras` (Keras 3), `.h5` (legacy Keras) or `.bnorm` file, recognized by
    its content. Compiled with the file's optimizer, loss and metrics when it has them (and
    compile=True). Layers
    outside bnorm's allow-list (Lambda, custom classes) are refused: nothing in a file runs as
    code."""
    if custom_objects:
        raise ValueError("load_model: custom objects are not supported (bnorm never runs code "
                         "from a model file)")
    model = Model._from_native(_core.load_model(os.fspath(filepath)))
    if not compile:  # Keras: the model comes back uncompiled (compile it to train)
        model._optimizer = None
        model._uncompiled = True
    return model


def save_model(model: Model, filepath: Union[str, "os.PathLike[str]"], overwrite: bool = True,
               **kwargs: Any) -> None:
    """model.save(filepath)."""
    model.save(filepath, overwrite=overwrite, **kwargs)
