"""fit's callbacks, progress output, Ctrl-C, threads; the functional BN ops and their gradients."""

import os
import signal
import threading

import numpy as np
import pytest

import bnorm
from conftest import seed_model


class Recorder(bnorm.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", self.params.get("steps")))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, sorted(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, dict(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


def test_python_callbacks_are_called_in_keras_order(blobs):
    x, y, _, _ = blobs
    recorder = Recorder()
    model = seed_model(bnorm)
    history = model.fit(x[:100], y[:100], batch_size=50, epochs=2, validation_data=(x[100:150],
                        y[100:150]), callbacks=[recorder], verbose=0)
    kinds = [c[0] for c in recorder.calls]
    assert kinds == ["train_begin", "epoch_begin", "batch_end", "batch_end", "epoch_end",
                     "epoch_begin", "batch_end", "batch_end", "epoch_end", "train_end"]
    assert recorder.calls[0] == ("train_begin", 2)
    assert recorder.calls[2] == ("batch_end", 0, ["accuracy", "loss"])
    assert recorder.model is model
    last = recorder.calls[-2][2]
    assert set(last) == {"accuracy", "loss", "val_accuracy", "val_loss"}
    assert last["val_loss"] == history.history["val_loss"][-1]


def test_a_callback_stops_training(blobs):
    x, y, _, _ = blobs

    class StopAfterFirst(bnorm.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    history = seed_model(bnorm).fit(x, y, epochs=5, callbacks=[StopAfterFirst()], verbose=0)
    assert len(history.history["loss"]) == 1


def test_early_stopping_restores_the_best_weights(blobs):
    x, y, _, _ = blobs
    model = seed_model(bnorm)
    model.optimizer.learning_rate = 0.5  # noisy enough that val_loss gets worse
    stop = bnorm.callbacks.EarlyStopping(monitor="val_loss", patience=1,
                                         restore_best_weights=True)
    history = model.fit(x, y, epochs=8, validation_split=0.2, callbacks=[stop], verbose=0)
    losses = history.history["val_loss"]
    best = int(np.argmin(losses))
    if len(losses) < 8:
        assert stop.stopped_epoch == len(losses) - 1
    assert stop.best == pytest.approx(losses[best])
    assert model.evaluate(x[480:], y[480:], verbose=0)[0] == pytest.approx(losses[best],
                                                                           rel=1e-5)


def test_learning_rate_scheduler_and_csv_logger_and_checkpoint(tmp_path, blobs):
    x, y, _, _ = blobs
    model = seed_model(bnorm)
    seen = []
    schedule = bnorm.callbacks.LearningRateScheduler(lambda epoch, lr: 0.01 / (epoch + 1))
    probe = bnorm.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seen.append(model.optimizer.learning_rate))
    csv_path = tmp_path / "log.csv"
    checkpoint = bnorm.callbacks.ModelCheckpoint(str(tmp_path / "m_{epoch:02d}.keras"))
    model.fit(x, y, epochs=3, callbacks=[schedule, probe, bnorm.callbacks.CSVLogger(csv_path),
                                         checkpoint], verbose=0)
    assert seen == pytest.approx([0.01, 0.005, 0.01 / 3])
    rows = csv_path.read_text().splitlines()
    assert rows[0] == "epoch,accuracy,learning_rate,loss" and len(rows) == 4
    assert sorted(p.name for p in tmp_path.glob("m_*.keras")) == [
        "m_01.keras", "m_02.keras", "m_03.keras"]
    np.testing.assert_allclose(
        bnorm.saving.load_model(tmp_path / "m_03.keras").predict(x[:5], verbose=0),
        model.predict(x[:5], verbose=0), rtol=1e-6)


def test_verbose_progress_goes_to_sys_stdout(capsys, blobs):
    x, y, _, _ = blobs
    model = seed_model(bnorm)
    model.fit(x, y, epochs=2, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert "19/19" in out and "accuracy:" in out and "loss:" in out
    model.fit(x, y, epochs=1, verbose=0)
    model.predict(x, verbose=0)
    assert capsys.readouterr().out == ""


def test_ctrl_c_interrupts_fit_between_batches_and_keeps_the_model(blobs):
    x, y, _, _ = blobs

    class InterruptAtBatch3(bnorm.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 3:
                os.kill(os.getpid(), signal.SIGINT)

    model = seed_model(bnorm)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=10, epochs=3, callbacks=[InterruptAtBatch3()], verbose=0)
    # The signal is seen right after the batch that raised it: 4 steps, then the check.
    assert model.optimizer.iterations in (4, 5)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    model.fit(x, y, epochs=1, verbose=0)  # the model trains on afterwards


def test_ctrl_c_without_python_callbacks(blobs):
    x, y, _, _ = blobs
    model = seed_model(bnorm)
    big_x = np.repeat(x, 20, axis=0)
    big_y = np.repeat(y, 20, axis=0)
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            model.fit(big_x, big_y, batch_size=8, epochs=1000, verbose=0)
    finally:
        timer.cancel()
    assert 0 < model.optimizer.iterations < 1000 * len(big_x) // 8


def test_one_model_is_not_run_by_two_threads_at_once(blobs):
    x, y, _, _ = blobs
    model = seed_model(bnorm)
    inside, release = threading.Event(), threading.Event()
    errors = []

    class Hold(bnorm.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                inside.set()
                release.wait(10)

    def train():
        try:
            model.fit(x, y, epochs=1, callbacks=[Hold()], verbose=0)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    thread = threading.Thread(target=train)
    thread.start()
    assert inside.wait(10)
    try:
        with pytest.raises(RuntimeError, match="another thread"):
            model.predict(x, verbose=0)
    finally:
        release.set()
        thread.join()
    assert not errors
    other = seed_model(bnorm)  # different models run side by side
    other.predict(x, verbose=0)


# ---- bnorm.ops ------------------------------------------------------------------------------

def test_moments_and_batch_normalization_match_keras_formulas():
    rng = np.random.default_rng(5)
    x = rng.normal(1.0, 2.0, size=(4, 3, 3, 6)).astype(np.float32)
    mean, variance = bnorm.ops.moments(x, axes=[0, 1, 2])
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance, x64.var(axis=(0, 1, 2)), rtol=1e-5)
    kept_mean, _ = bnorm.ops.moments(x, axes=[0, 1, 2], keepdims=True)
    assert kept_mean.shape == (1, 1, 1, 6)
    gamma = rng.uniform(0.5, 1.5, 6).astype(np.float32)
    beta = rng.normal(size=6).astype(np.float32)
    y = bnorm.ops.batch_normalization(x, mean, variance, axis=-1, offset=beta, scale=gamma,
                                      epsilon=1e-3)
    expected = (x64 - x64.mean((0, 1, 2))) / np.sqrt(x64.var((0, 1, 2)) + 1e-3) * gamma + beta
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="axes"):
        bnorm.ops.moments(x, axes=[1, 2])
    with pytest.raises(ValueError, match=r"\(6,\)"):
        bnorm.ops.batch_normalization(x, mean[:5], variance, axis=-1)


def test_batch_norm_gradients_match_finite_differences():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, 4).astype(np.float32)
    beta = rng.normal(size=4).astype(np.float32)
    dy = rng.normal(size=(6, 4)).astype(np.float32)
    y, batch_mean, batch_variance = bnorm.ops.batch_norm_training(x, gamma, beta, epsilon=1e-3)
    dx, dgamma, dbeta = bnorm.ops.batch_norm_backward(x, dy, batch_mean, batch_variance, gamma,
                                                      epsilon=1e-3, batch_statistics=True)

    def loss(x64, g64, b64):  # float64 reference of sum(dy * BN(x))
        m, v = x64.mean(0), x64.var(0)
        return float(np.sum(dy * ((x64 - m) / np.sqrt(v + 1e-3) * g64 + b64)))

    x64, g64, b64 = x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64)
    h = 1e-6
    numeric_dx = np.zeros_like(x64)
    for index in np.ndindex(x.shape):
        plus, minus = x64.copy(), x64.copy()
        plus[index] += h
        minus[index] -= h
        numeric_dx[index] = (loss(plus, g64, b64) - loss(minus, g64, b64)) / (2 * h)
    numeric_dgamma = np.array([(loss(x64, g64 + h * e, b64) - loss(x64, g64 - h * e, b64)) / (2 * h)
                               for e in np.eye(4)])
    np.testing.assert_allclose(dx, numeric_dx, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(dgamma, numeric_dgamma, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dbeta, dy.sum(0), rtol=1e-5, atol=1e-5)
    new_mean, new_var = bnorm.ops.update_moving_statistics(
        np.zeros(4, np.float32), np.ones(4, np.float32), batch_mean, batch_variance, 0.99)
    np.testing.assert_allclose(new_mean, 0.01 * batch_mean, rtol=1e-5)
    np.testing.assert_allclose(new_var, 0.99 + 0.01 * batch_variance, rtol=1e-6)
    with pytest.raises(bnorm.NonFiniteError):
        bnorm.ops.batch_norm_training(np.full((2, 2), np.inf, np.float32))


def test_resume_from_a_checkpoint_is_bit_exact(tmp_path, blobs):
    x, y, _, _ = blobs

    def model():
        bnorm.utils.set_random_seed(3)
        m = bnorm.Sequential([bnorm.Input(shape=(20,)), bnorm.layers.Dense(16, activation="relu"),
                              bnorm.layers.BatchNormalization(), bnorm.layers.Dropout(0.3),
                              bnorm.layers.Dense(3, activation="softmax")])
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return m

    straight = model()
    full = straight.fit(x, y, epochs=2, batch_size=16, verbose=0)
    first = model()
    first.fit(x, y, epochs=1, batch_size=16, verbose=0,
              callbacks=[bnorm.callbacks.ModelCheckpoint(str(tmp_path / "ckpt.bnorm"))])
    resumed = bnorm.saving.load_model(tmp_path / "ckpt.bnorm")
    rest = resumed.fit(x, y, epochs=2, initial_epoch=1, batch_size=16, verbose=0)
    assert rest.epoch == [1]
    assert rest.history["loss"] == full.history["loss"][1:]
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)
