"""bnorm.callbacks: Keras 3's callback protocol, called by fit between batches and epochs.

A callback written in Python subclasses `Callback` and overrides any of on_train_begin,
on_epoch_begin, on_train_batch_end (alias on_batch_end), on_epoch_end, on_train_end; `self.model`
is the model being trained, and setting `self.model.stop_training = True` ends fit after the
current epoch. fit runs its batches in C++ with the GIL released and calls back into Python only
where a callback needs it (per-batch hooks are skipped when no callback overrides them).
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any, Callable, Dict, List, Optional

import numpy as np

__all__ = ["Callback", "CallbackList", "History", "ProgbarLogger", "EarlyStopping",
           "ModelCheckpoint", "CSVLogger", "LearningRateScheduler", "LambdaCallback",
           "TerminateOnNaN"]


class Callback:
    """Base class of callbacks (keras.callbacks.Callback)."""

    def __init__(self) -> None:
        self.model: Any = None
        self.params: Dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        """Called by fit with the model being trained."""
        self.model = model

    def set_params(self, params: Dict[str, Any]) -> None:
        """Called by fit with {"verbose", "epochs", "steps"}."""
        self.params = params

    def on_train_begin(self, logs: Optional[Dict[str, float]] = None) -> None:
        """Before the first epoch."""

    def on_train_end(self, logs: Optional[Dict[str, float]] = None) -> None:
        """After the last epoch."""

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        """At the start of epoch `epoch` (from 0)."""

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        """At the end of an epoch; logs hold loss/metrics and val_ ones."""

    def on_train_batch_begin(self, batch: int, logs: Optional[Dict[str, float]] = None) -> None:
        """Not called by bnorm's fit (batches start in C++); kept for Keras compatibility."""

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, float]] = None) -> None:
        """After each batch; logs hold the epoch's running means."""
        self.on_batch_end(batch, logs)

    def on_batch_end(self, batch: int, logs: Optional[Dict[str, float]] = None) -> None:
        """Keras's older name of on_train_batch_end."""


def _overrides(callback: Callback, *names: str) -> bool:
    return any(getattr(type(callback), n) is not getattr(Callback, n) for n in names)


class History(Callback):
    """Records every epoch's logs: `history.history["val_accuracy"][epoch]`; `epoch` lists the
    epoch numbers. fit returns it (and sets model.history)."""

    def __init__(self) -> None:
        super().__init__()
        self.history: Dict[str, List[float]] = {}
        self.epoch: List[int] = []

    def on_train_begin(self, logs: Optional[Dict[str, float]] = None) -> None:
        self.epoch = []

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        if self.model is not None:
            self.model.history = self


class ProgbarLogger(Callback):
    """Keras's verbose=1 progress bar. bnorm draws it in C++ (the same line format as the
    `bnorm` command line) and writes it to sys.stdout; fit adds it when verbose is 1 or 2."""


class CallbackList:
    """What fit calls: the callbacks in order, then History. Internal to fit."""

    def __init__(self, callbacks: List[Callback], model: Any, params: Dict[str, Any]) -> None:
        self.callbacks = callbacks
        for c in callbacks:
            c.set_model(model)
            c.set_params(params)
        self.params = params
        self.wants_batches = any(_wants_batches(c) for c in callbacks)

    def on_train_begin(self, epochs: int, steps: int) -> None:
        """Tells every callback the steps per epoch, then calls on_train_begin."""
        self.params["steps"] = steps
        for c in self.callbacks:
            c.on_train_begin({})

    def on_epoch_begin(self, epoch: int) -> None:
        """Calls every callback's on_epoch_begin."""
        for c in self.callbacks:
            c.on_epoch_begin(epoch, {})

    def on_train_batch_end(self, step: int, logs: Dict[str, float]) -> None:
        """Calls every callback's on_train_batch_end; they share one logs dict (as in Keras, a
        callback may add entries that later ones see)."""
        shared = dict(logs)
        for c in self.callbacks:
            c.on_train_batch_end(step, shared)

    def on_epoch_end(self, epoch: int, logs: Dict[str, float]) -> None:
        """Calls every callback's on_epoch_end; they share one logs dict (LearningRateScheduler
        adds "learning_rate" for CSVLogger and History to record)."""
        shared = dict(logs)
        for c in self.callbacks:
            c.on_epoch_end(epoch, shared)

    def on_train_end(self) -> None:
        """Calls every callback's on_train_end."""
        for c in self.callbacks:
            c.on_train_end({})


def _monitor_mode(monitor: str, mode: str, where: str) -> Callable[[float, float], bool]:
    """Keras's mode="auto": maximize accuracy-like quantities, minimize the rest."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{where}: mode must be 'auto', 'min' or 'max'; received '{mode}'")
    if mode == "max" or (mode == "auto" and ("acc" in monitor or monitor.startswith("fmeasure"))):
        return lambda current, best: current > best
    return lambda current, best: current < best


class EarlyStopping(Callback):
    """keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=0, patience=0, verbose=0,
    mode="auto", baseline=None, restore_best_weights=False, start_from_epoch=0)."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: Optional[float] = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0) -> None:
        super().__init__()
        self.monitor = monitor
        self.patience = patience
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self._better = _monitor_mode(monitor, mode, "EarlyStopping")
        maximize = self._better(1.0, 0.0)
        self.min_delta = abs(min_delta) if maximize else -abs(min_delta)
        self.stopped_epoch = 0

    def on_train_begin(self, logs: Optional[Dict[str, float]] = None) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        maximize = self._better(1.0, 0.0)
        self.best = -math.inf if maximize else math.inf
        self.best_weights: Optional[List[np.ndarray]] = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        current = (logs or {}).get(self.monitor)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._better(current - self.min_delta, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._better(current - self.min_delta, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: Optional[Dict[str, float]] = None) -> None:
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print("Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """keras.callbacks.ModelCheckpoint(filepath, monitor="val_loss", verbose=0,
    save_best_only=False, save_weights_only=False, mode="auto", save_freq="epoch"). `filepath`
    may hold fields such as "{epoch:02d}" or "{val_loss:.2f}"; files are written atomically in the
    format their extension names (.keras, .h5, .bnorm)."""

    def __init__(self, filepath: str, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 save_freq: Any = "epoch", initial_value_threshold: Optional[float] = None) -> None:
        super().__init__()
        if save_weights_only:
            raise ValueError("ModelCheckpoint: save_weights_only=True is not supported; bnorm "
                             "saves whole models (load_weights reads weights back from them)")
        if save_freq != "epoch":
            raise ValueError("ModelCheckpoint: only save_freq='epoch' is supported")
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self._better = _monitor_mode(monitor, mode, "ModelCheckpoint")
        maximize = self._better(1.0, 0.0)
        self.best = initial_value_threshold if initial_value_threshold is not None else (
            -math.inf if maximize else math.inf)

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None or not self._better(current, self.best):
                return
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                      f"{current:.5f}, saving model to {path}")
            self.best = current
        elif self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        self.model.save(path)


class CSVLogger(Callback):
    """keras.callbacks.CSVLogger(filename, separator=",", append=False): one row per epoch,
    header "epoch" then the sorted log keys."""

    def __init__(self, filename: str, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = append
        self.keys: Optional[List[str]] = None

    def on_train_begin(self, logs: Optional[Dict[str, float]] = None) -> None:
        has_header = self.append and os.path.exists(self.filename) and os.path.getsize(
            self.filename) > 0
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self.keys = None
        self._header_written = has_header

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        writer = csv.writer(self._file, delimiter=self.sep, lineterminator="\n")
        if not self._header_written:
            writer.writerow(["epoch", *self.keys])
            self._header_written = True
        writer.writerow([epoch, *(logs.get(k, "NA") for k in self.keys)])
        self._file.flush()

    def on_train_end(self, logs: Optional[Dict[str, float]] = None) -> None:
        if getattr(self, "_file", None) is not None and not self._file.closed:
            self._file.close()


class LearningRateScheduler(Callback):
    """keras.callbacks.LearningRateScheduler(schedule, verbose=0): at the start of each epoch,
    learning_rate = schedule(epoch, learning_rate) (or schedule(epoch))."""

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        optimizer = self.model.optimizer
        try:
            rate = self.schedule(epoch, float(optimizer.learning_rate))
        except TypeError:
            rate = self.schedule(epoch)
        if not isinstance(rate, (float, int, np.floating)) or not math.isfinite(float(rate)):
            raise ValueError(f"LearningRateScheduler: the schedule returned {rate!r}; expected a "
                             "finite float")
        optimizer.learning_rate = float(rate)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {rate}.")

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class LambdaCallback(Callback):
    """keras.callbacks.LambdaCallback(on_epoch_begin=None, on_epoch_end=None, on_train_begin=None,
    on_train_end=None, on_train_batch_end=None): callbacks from plain functions."""

    def __init__(self, on_epoch_begin: Optional[Callable[..., Any]] = None,
                 on_epoch_end: Optional[Callable[..., Any]] = None,
                 on_train_begin: Optional[Callable[..., Any]] = None,
                 on_train_end: Optional[Callable[..., Any]] = None,
                 on_train_batch_end: Optional[Callable[..., Any]] = None,
                 on_batch_end: Optional[Callable[..., Any]] = None) -> None:
        super().__init__()
        for name, fn in (("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                         ("on_train_begin", on_train_begin), ("on_train_end", on_train_end),
                         ("on_train_batch_end", on_train_batch_end or on_batch_end)):
            if fn is not None:
                setattr(self, name, fn)

    @property
    def _wants_batches(self) -> bool:
        return "on_train_batch_end" in self.__dict__


class TerminateOnNaN(Callback):
    """keras.callbacks.TerminateOnNaN: bnorm's fit already stops with bnorm.NonFiniteError
    naming the epoch and step when the loss or a batch's statistics stop being finite, before
    the weights are updated; this callback is accepted for compatibility."""


def _wants_batches(callback: Callback) -> bool:
    if isinstance(callback, LambdaCallback):
        return callback._wants_batches
    return _overrides(callback, "on_train_batch_end", "on_batch_end")
