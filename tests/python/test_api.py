"""The Python module's Keras API: structure, training, weights, files, errors, zero-copy."""

import importlib.resources
import inspect
import json
import os
import re

import numpy as np
import pytest

import bnorm
from bnorm import _core
from bnorm._arrays import as_float32
from conftest import seed_model


def test_version_and_top_level_names():
    cmake = open(os.path.join(os.path.dirname(__file__), "..", "..", "CMakeLists.txt")).read()
    version = re.search(r"project\(bnorm VERSION ([0-9.]+)", cmake).group(1)
    assert bnorm.__version__ == version
    assert bnorm.Sequential is bnorm.models.Sequential
    assert bnorm.Model is bnorm.models.Model
    assert bnorm.Input is bnorm.layers.Input
    assert bnorm.saving.load_model is bnorm.models.load_model
    assert issubclass(bnorm.NonFiniteError, ValueError)


def test_stubs_and_marker_are_shipped():
    files = {p.name for p in importlib.resources.files("bnorm").iterdir()}
    assert "_core.pyi" in files and "py.typed" in files
    stub = importlib.resources.files("bnorm").joinpath("_core.pyi").read_text()
    assert "def make_layer" in stub and "class Model" in stub


def test_every_public_name_has_a_docstring():
    modules = [bnorm, bnorm.layers, bnorm.models, bnorm.optimizers, bnorm.losses,
               bnorm.callbacks, bnorm.ops, bnorm.saving, bnorm.utils, bnorm.initializers,
               bnorm.regularizers, bnorm.activations, bnorm.datasets,
               bnorm.datasets.fashion_mnist]
    missing = []
    for module in modules:
        assert module.__doc__, module.__name__
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if isinstance(obj, (str, int, float)) or not (callable(obj) or hasattr(obj, "__doc__")):
                continue
            if not getattr(obj, "__doc__", None):
                missing.append(f"{module.__name__}.{name}")
            if isinstance(obj, type):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not callable(member) and not isinstance(
                            member, property):
                        continue
                    if not inspect.getdoc(getattr(obj, attr)):  # inherited docs count
                        missing.append(f"{module.__name__}.{name}.{attr}")
    assert not missing, missing


def test_seed_model_fit_evaluate_predict(blobs):
    x, y, xt, yt = blobs
    model = seed_model(bnorm)
    history = model.fit(x, y, batch_size=32, epochs=3, validation_split=0.1, verbose=0)
    assert set(history.history) == {"accuracy", "loss", "val_accuracy", "val_loss"}
    assert all(len(v) == 3 for v in history.history.values())
    assert history.epoch == [0, 1, 2]
    assert model.history is history
    assert history.history["loss"][-1] < history.history["loss"][0]
    loss, accuracy = model.evaluate(xt, yt, verbose=0)
    assert accuracy > 0.9 and loss < 0.5
    assert model.evaluate(xt, yt, verbose=0, return_dict=True) == {"accuracy": accuracy,
                                                                   "loss": loss}
    probabilities = model.predict(xt, verbose=0)
    assert probabilities.dtype == np.float32 and probabilities.shape == (200, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert np.mean(probabilities.argmax(axis=1) == yt) == pytest.approx(accuracy)
    assert model.optimizer.iterations == 3 * 17  # 540 training samples in batches of 32


def test_layers_are_the_objects_the_user_created():
    dense = bnorm.layers.Dense(8, activation="relu", name="hidden")
    bn = bnorm.layers.BatchNormalization()
    model = bnorm.Sequential([bnorm.Input(shape=(4,)), dense, bn, bnorm.layers.Dense(2)])
    assert len(model.layers) == 3  # no input layer, as Keras lists them
    assert model.layers[0] is dense and model.layers[1] is bn
    assert model.get_layer("hidden") is dense
    assert [w.name for w in bn.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert [w.name for w in bn.trainable_weights] == ["gamma", "beta"]
    assert bn.moving_variance.numpy().tolist() == [1.0] * 8
    assert dense.kernel.shape == (4, 8)
    assert model.count_params() == 4 * 8 + 8 + 4 * 8 + 8 * 2 + 2
    assert model.input_shape == (None, 4) and model.output_shape == (None, 2)


def test_first_layer_input_shape_argument():
    model = bnorm.Sequential([bnorm.layers.Dense(5, input_shape=(3,)), bnorm.layers.Dense(1)])
    assert model.built and model.input_shape == (None, 3)


def test_get_set_weights_keras_order_and_errors():
    model = seed_model(bnorm, features=6, classes=2)
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(6, 64), (64,), (64,), (64,), (64,), (64,), (64, 2),
                                          (2,)]
    changed = [w + 1.0 for w in weights]
    model.set_weights(changed)
    for a, b in zip(model.get_weights(), changed):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="8"):
        model.set_weights(changed[:-1])
    bad = list(changed)
    bad[0] = np.zeros((7, 64), np.float32)
    with pytest.raises(ValueError, match=r"\(6, 64\)"):
        model.set_weights(bad)
    for a, b in zip(model.get_weights(), changed):  # nothing written by the failed calls
        np.testing.assert_array_equal(a, b)


def test_frozen_batch_normalization_keeps_its_statistics(blobs):
    x, y, _, _ = blobs
    model = seed_model(bnorm)
    bn = model.layers[1]
    bn.trainable = False
    before = bn.get_weights()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(bn.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert [w.name for w in bn.non_trainable_weights] == ["gamma", "beta", "moving_mean",
                                                          "moving_variance"]


def test_functional_residual_model_and_nested_call():
    inputs = bnorm.Input(shape=(6, 6, 2))
    h = bnorm.layers.Conv2D(4, 3, padding="same")(inputs)
    h = bnorm.layers.Activation("relu")(bnorm.layers.BatchNormalization()(h))
    r = bnorm.layers.BatchNormalization()(bnorm.layers.Conv2D(4, 3, padding="same")(h))
    h = bnorm.layers.Activation("relu")(bnorm.layers.Add()([r, h]))
    outputs = bnorm.layers.Dense(3, activation="softmax")(
        bnorm.layers.GlobalAveragePooling2D()(h))
    assert outputs.shape == (None, 3)
    model = bnorm.Model(inputs, outputs, name="residual")
    assert model.name == "residual"
    assert [type(l).__name__ for l in model.layers][:3] == ["Conv2D", "BatchNormalization",
                                                            "Activation"]
    model.compile(optimizer=bnorm.optimizers.SGD(learning_rate=0.05, momentum=0.9),
                  loss=bnorm.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert model.optimizer.learning_rate == pytest.approx(0.05)
    # The model called as a layer inside another graph shares its weights.
    outer_in = bnorm.Input(shape=(6, 6, 2))
    outer = bnorm.Model(outer_in, model(outer_in))
    np.testing.assert_allclose(outer.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)
    np.testing.assert_allclose(model(x), model.predict(x, verbose=0), rtol=1e-6)


def test_two_inputs_and_two_outputs():
    a = bnorm.Input(shape=(3,), name="a")
    b = bnorm.Input(shape=(2,), name="b")
    joined = bnorm.layers.Concatenate()([a, b])
    h = bnorm.layers.Dense(4, activation="relu")(joined)
    out1 = bnorm.layers.Dense(2, activation="softmax")(h)
    out2 = bnorm.layers.Dense(2, activation="softmax")(h)
    model = bnorm.Model([a, b], [out1, out2])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(1)
    xa = rng.normal(size=(10, 3)).astype(np.float32)
    xb = rng.normal(size=(10, 2)).astype(np.float32)
    y = rng.integers(0, 2, size=10)
    history = model.fit([xa, xb], [y, y], epochs=1, verbose=0)
    assert list(history.history) == ["loss"]
    p1, p2 = model.predict([xa, xb], verbose=0)
    assert p1.shape == (10, 2) and p2.shape == (10, 2)
    assert isinstance(model.evaluate([xa, xb], [y, y], verbose=0), float)


def test_train_on_batch_returns_the_batchs_loss_and_accuracy(blobs):
    x, y, _, _ = blobs
    model = seed_model(bnorm)
    before = model.evaluate(x[:32], y[:32], verbose=0, return_dict=True)
    loss, accuracy = model.train_on_batch(x[:32], y[:32])
    # The forward pass before the update, with batch statistics: evaluate in inference mode uses
    # the moving ones, so compare the accuracy's granularity and the loss's order only.
    assert accuracy * 32 == pytest.approx(round(accuracy * 32))
    assert np.isfinite(loss) and abs(loss - before["loss"]) < 1.0
    logs = model.train_on_batch(x[32:64], y[32:64], return_dict=True)
    assert list(logs) == ["accuracy", "loss"]
    assert model.optimizer.iterations == 2
    no_metrics = bnorm.Sequential([bnorm.Input(shape=(20,)), bnorm.layers.Dense(3,
                                   activation="softmax")])
    no_metrics.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert isinstance(no_metrics.train_on_batch(x[:8], y[:8]), float)


def test_save_and_load_every_format(tmp_path, blobs):
    x, y, xt, _ = blobs
    model = seed_model(bnorm)
    model.fit(x, y, epochs=1, verbose=0)
    expected = model.predict(xt, verbose=0)
    for name in ("m.keras", "m.h5", "m.bnorm"):
        path = tmp_path / name
        model.save(path)
        loaded = bnorm.saving.load_model(path)
        assert isinstance(loaded, bnorm.Sequential)
        np.testing.assert_allclose(loaded.predict(xt, verbose=0), expected, rtol=1e-6, atol=1e-7)
        assert loaded.optimizer is not None and loaded.optimizer.name == "adam"
    with open(tmp_path / "m.keras", "rb") as f:
        assert f.read(2) == b"PK"  # a zip, as Keras writes
    uncompiled = bnorm.saving.load_model(tmp_path / "m.keras", compile=False)
    assert uncompiled.optimizer is None
    with pytest.raises(RuntimeError, match="compile"):
        uncompiled.fit(x, y, verbose=0)
    uncompiled.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    uncompiled.fit(x, y, verbose=0)


def test_fashion_mnist_in_keras_format():
    (x, y), (xt, yt) = bnorm.datasets.fashion_mnist.load_data()
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.uint8
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,)
    assert x.max() == 255 and set(np.unique(y)) == set(range(10))


def test_eager_batch_normalization_is_keras_exact():
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, size=(16, 5)).astype(np.float32)
    bn = bnorm.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    y = bn(x, training=True)
    mean, var = x.astype(np.float64).mean(0), x.astype(np.float64).var(0)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * var, rtol=1e-5)
    inference = bn(x, training=False)
    np.testing.assert_allclose(
        inference, (x - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var + 1e-3), rtol=1e-5, atol=1e-5)
    assert bn.get_config()["momentum"] == pytest.approx(0.9)


def test_batch_normalization_family_arguments():
    # Keras 3's renorm arguments and weights, in Keras's order.
    renorm = bnorm.layers.BatchNormalization(
        renorm=True, renorm_clipping={"rmax": 2.0, "rmin": 0.5, "dmax": 1.0},
        renorm_momentum=0.9)
    x = np.random.default_rng(1).normal(1.0, 2.0, (8, 3)).astype(np.float32)
    renorm(x, training=True)
    assert [w.name for w in renorm.weights] == [
        "gamma", "beta", "moving_mean", "moving_variance", "moving_stddev", "renorm_mean",
        "renorm_stddev"]
    config = renorm.get_config()
    assert config["renorm"] is True
    assert config["renorm_clipping"] == {"rmax": 2.0, "rmin": 0.5, "dmax": 1.0}
    # tf.keras 2's Ghost BN: the batch must split into virtual batches.
    ghost = bnorm.layers.BatchNormalization(virtual_batch_size=4)
    ghost(x, training=True)
    with pytest.raises(ValueError, match="virtual_batch_size 4 must divide the batch size"):
        ghost(x[:6], training=True)
    with pytest.raises(ValueError, match="rmax should be greater than rmin"):
        bnorm.layers.BatchNormalization(renorm=True, renorm_clipping={"rmax": 1.0, "rmin": 2.0})


def test_recalibrate_batch_norm_averages_batch_statistics():
    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 2.0, (64, 4)).astype(np.float32)
    model = bnorm.Sequential([bnorm.Input((4,)), bnorm.layers.BatchNormalization(),
                              bnorm.layers.Dense(2, activation="softmax")])
    kernel = model.layers[1].get_weights()[0].copy()
    assert model.recalibrate_batch_norm(x, batch_size=16, batches=3) == 3
    batches = x[:48].reshape(3, 16, 4).astype(np.float64)
    bn = model.layers[0]
    np.testing.assert_allclose(bn.moving_mean.numpy(), batches.mean(1).mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), batches.var(1).mean(0), rtol=1e-5)
    np.testing.assert_array_equal(model.layers[1].get_weights()[0], kernel)


def test_errors_are_python_errors_with_bnorm_messages(tmp_path):
    with pytest.raises(TypeError, match="unknown key 'colour'"):
        bnorm.layers.Dense(4, colour="red")
    with pytest.raises(ValueError, match="units"):
        bnorm.layers.Dense(-3)
    with pytest.raises(ValueError, match="epsilon"):
        bnorm.layers.BatchNormalization(epsilon=-1.0)
    with pytest.raises(TypeError, match="numeric"):
        bnorm.layers.BatchNormalization()(np.array([["a", "b"]]), training=True)
    with pytest.raises(TypeError, match="numeric"):
        bnorm.layers.BatchNormalization()(np.ones((2, 2), np.complex64), training=True)
    with pytest.raises(OSError, match="nope.keras"):
        bnorm.saving.load_model(tmp_path / "nope.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a model at all")
    with pytest.raises(OSError):
        bnorm.saving.load_model(tmp_path / "junk.keras")
    model = seed_model(bnorm, features=4, classes=2)
    with pytest.raises(ValueError, match=r"\(4,\)|4"):
        model.predict(np.zeros((3, 5), np.float32), verbose=0)
    x = np.zeros((8, 4), np.float32)
    x[3, 1] = np.nan
    with pytest.raises(bnorm.NonFiniteError):
        model.fit(x, np.zeros(8), verbose=0)
    with pytest.raises(ValueError, match="label"):
        model.fit(np.zeros((8, 4), np.float32), np.full(8, 7), verbose=0)
    with pytest.raises(RuntimeError, match="compile"):
        bnorm.Sequential([bnorm.Input(shape=(2,)), bnorm.layers.Dense(1)]).fit(
            np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="sample_weight"):
        model.fit(np.zeros((8, 4), np.float32), np.zeros(8), sample_weight=np.ones(8))


def test_float32_c_contiguous_arrays_go_in_without_a_copy():
    a = np.arange(24, dtype=np.float32).reshape(6, 4)
    assert as_float32(a, "x") is a
    assert _core._tensor_address(a) == a.ctypes.data  # the C++ tensor reads a's own buffer
    read_only = a.copy()
    read_only.flags.writeable = False
    assert _core._tensor_address(as_float32(read_only, "x")) == read_only.ctypes.data
    for other in (a.astype(np.float64), np.asfortranarray(a), a[:, ::2]):
        converted = as_float32(other, "x")
        assert converted is not other and converted.flags.c_contiguous
        assert converted.dtype == np.float32
        np.testing.assert_array_equal(converted, np.asarray(other, dtype=np.float32))
    with pytest.raises(TypeError):  # nanobind refuses what was not converted first
        _core._tensor_address(a.astype(np.float64))


def test_predict_results_own_their_memory():
    model = seed_model(bnorm, features=4, classes=2)
    out = model.predict(np.ones((5, 4), np.float32), verbose=0)
    assert out.flags.c_contiguous and out.dtype == np.float32
    del model
    assert np.isfinite(out).all()  # the array keeps the C++ buffer alive on its own


def test_summary_lists_layers_and_totals(capsys):
    seed_model(bnorm).summary()
    text = capsys.readouterr().out
    assert "Total params" in text and "batch_normalization" in text


def test_get_config_round_trip():
    layer = bnorm.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu",
                                kernel_initializer="he_normal", name="conv")
    config = layer.get_config()
    assert config["kernel_size"] == [3, 3] and config["strides"] == [2, 2]
    assert config["name"] == "conv"
    clone = bnorm.layers.Conv2D.from_config(config)
    assert json.dumps(clone.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True)


def test_readme_script_runs_and_learns(tmp_path, monkeypatch, capsys):
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    script = re.search(r"```python\n(import bnorm as keras.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(script, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "Epoch 10/10" in out
    loss, accuracy = namespace["model"].evaluate(namespace["x_test"], namespace["y_test"],
                                                 verbose=0)
    assert accuracy > 0.85
    assert (tmp_path / "seed.keras").exists()
    assert len(namespace["history"].history["val_accuracy"]) == 10


def test_thread_count_policy_is_the_librarys():
    with pytest.raises(ValueError, match=r"thread count 100000 is outside 1\.\."):
        bnorm.set_num_threads(100000)
    bnorm.set_num_threads(1)
    assert _core.num_threads() == 1
