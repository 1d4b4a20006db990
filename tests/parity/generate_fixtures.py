#!/usr/bin/env python3
"""Generate golden reference-parity fixtures for bnorm.

Runs the real reference implementations -- Keras 3 on the TensorFlow backend,
PyTorch and the `onnx` package -- and writes small fixture files that the C++
tests read.  Everything is deterministic: every case draws its data from a
numpy Generator seeded from the case name, the frameworks run single-threaded,
and the fixture directories are wiped and rewritten on every run.

Layout written (relative to this file's directory):

  fixtures/<family>/<case>/meta.json      description of the case
  fixtures/<family>/<case>/<array>.npy    one array per file (npy v1.0,
                                          little-endian, C order, float32,
                                          int64 for labels/counters)
  onnx/test_batchnorm_*/                  ONNX's own backend node test data
  onnx/test_batchnorm_*/expected.json     our index of which .pb is which
  onnx/LICENSE, onnx/NOTICE, onnx/README.md

See docs/parity-fixtures.md for the format and what each family captures.
Use tests/parity/generate.sh to create the environment and run this script.
"""

from __future__ import annotations

import os

# Must be set before TensorFlow / Keras / torch are imported.
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"

import argparse  # noqa: E402
import copy  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.experimental.enable_op_determinism()

import keras  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402


def _import_torch():
    """PyTorch is imported only when installed; only the torch_bn family
    needs it (main() refuses that family without it)."""
    try:
        import torch as t
    except ImportError:
        return None
    t.set_num_threads(1)
    return t


torch = _import_torch()
keras.config.set_floatx("float32")
keras.config.set_epsilon(1e-7)

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES_DIR = HERE / "fixtures"
ONNX_DIR = HERE / "onnx"
GENERATOR = "tests/parity/generate_fixtures.py"

VERSIONS = {
    "python": platform.python_version(),
    "numpy": np.__version__,
    "tensorflow": tf.__version__,
    "keras": keras.__version__,
    "torch": torch.__version__ if torch is not None else None,
    "onnx": onnx.__version__,
}

N_STEPS = 5  # batches fed in training mode for the *_after arrays


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def case_rng(family: str, case: str) -> np.random.Generator:
    """A Generator whose seed depends only on the family and case name."""
    return np.random.default_rng(zlib.crc32(f"{family}/{case}".encode()))


def canonical(name: str, arr) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind in "iub":
        out = np.array(a, dtype="<i8", order="C")
    else:
        out = np.array(a, dtype="<f4", order="C")
        if not np.all(np.isfinite(out)):
            raise ValueError(f"array {name} contains non-finite values")
    assert out.shape == a.shape and out.flags.c_contiguous
    return out


def save_case(family: str, case: str, config: dict, arrays: dict,
              extra: dict | None = None) -> None:
    d = FIXTURES_DIR / family / case
    d.mkdir(parents=True, exist_ok=False)
    for name, arr in arrays.items():
        np.save(d / f"{name}.npy", canonical(name, arr), allow_pickle=False)
    meta = {
        "family": family,
        "case": case,
        "generator": GENERATOR,
        "versions": VERSIONS,
        "config": config,
        "arrays": list(arrays),
    }
    if extra:
        meta.update(extra)
    (d / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"  {family}/{case}: {', '.join(arrays)}")


def channel_shape(ndim: int, axis: int, c: int) -> list[int]:
    s = [1] * ndim
    s[axis] = c
    return s


def channel_data(rng, shape, axis, mean_c, sd_c) -> np.ndarray:
    """Normal data with a per-channel mean and standard deviation."""
    cs = channel_shape(len(shape), axis, len(mean_c))
    z = rng.standard_normal(shape)
    return (z * sd_c.reshape(cs) + mean_c.reshape(cs)).astype(np.float32)


def f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def to_np(t) -> np.ndarray:
    if torch is not None and isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return keras.ops.convert_to_numpy(t)


# --------------------------------------------------------------------------
# keras_bn
# --------------------------------------------------------------------------

KERAS_BN_CASES = [
    # name, shape, axis, momentum, epsilon, center, scale, init, data
    # 2-D (N, C), C = 5
    dict(name="nc_n1", shape=(1, 5), axis=-1),
    dict(name="nc_n2", shape=(2, 5), axis=-1),
    dict(name="nc_n7", shape=(7, 5), axis=-1),
    dict(name="nc_n32", shape=(32, 5), axis=-1),
    dict(name="nc_n256", shape=(256, 5), axis=-1),
    dict(name="nc_n32_axis1", shape=(32, 5), axis=1),
    dict(name="nc_n32_momentum_0.9", shape=(32, 5), axis=-1, momentum=0.9),
    dict(name="nc_n32_momentum_0.5", shape=(32, 5), axis=-1, momentum=0.5),
    dict(name="nc_n32_eps_1e-5", shape=(32, 5), axis=-1, epsilon=1e-5),
    dict(name="nc_n32_no_center", shape=(32, 5), axis=-1, center=False),
    dict(name="nc_n32_no_scale", shape=(32, 5), axis=-1, scale=False),
    dict(name="nc_n32_no_center_no_scale", shape=(32, 5), axis=-1,
         center=False, scale=False),
    dict(name="nc_n32_default_init", shape=(32, 5), axis=-1, init="default"),
    dict(name="nc_n7_momentum_0.5_eps_1e-5", shape=(7, 5), axis=-1,
         momentum=0.5, epsilon=1e-5),
    dict(name="nc_n64_large_mean", shape=(64, 5), axis=-1, data="large_mean"),
    # 4-D channels-last (N, H, W, C)
    dict(name="nhwc", shape=(4, 5, 6, 3), axis=-1),
    dict(name="nhwc_n1", shape=(1, 4, 4, 3), axis=-1),
    dict(name="nhwc_momentum_0.9_eps_1e-5", shape=(4, 5, 6, 3), axis=-1,
         momentum=0.9, epsilon=1e-5),
    dict(name="nhwc_no_center_no_scale", shape=(4, 5, 6, 3), axis=-1,
         center=False, scale=False),
    dict(name="nhwc_default_init", shape=(4, 5, 6, 3), axis=-1,
         init="default"),
    # 16 channels (a full AVX-512 vector of floats), conv-output shaped
    dict(name="nhwc_c16", shape=(2, 5, 5, 16), axis=-1),
    # 4-D channels-first (N, C, H, W)
    dict(name="nchw_axis1", shape=(4, 3, 5, 6), axis=1),
    dict(name="nchw_axis1_momentum_0.5", shape=(4, 3, 5, 6), axis=1,
         momentum=0.5),
    dict(name="nchw_axis1_no_scale", shape=(4, 3, 5, 6), axis=1, scale=False),
    dict(name="nchw_axis1_eps_1e-5", shape=(2, 3, 4, 4), axis=1,
         epsilon=1e-5),
    dict(name="nchw_axis1_c16", shape=(2, 16, 5, 5), axis=1),
    # 4-D with the channel on an inner axis
    dict(name="rank4_axis2", shape=(3, 4, 5, 6), axis=2),
    # 3-D (N, C, L)
    dict(name="ncl_axis1", shape=(6, 4, 7), axis=1),
    dict(name="ncl_axis1_momentum_0.9_eps_1e-5", shape=(6, 4, 7), axis=1,
         momentum=0.9, epsilon=1e-5),
    dict(name="ncl_axis1_no_center", shape=(6, 4, 7), axis=1, center=False),
    # 3-D (N, L, C)
    dict(name="nlc_axis-1", shape=(6, 7, 4), axis=-1),
]


def keras_bn_make(spec, input_shape, init):
    layer = keras.layers.BatchNormalization(
        axis=spec["axis"], momentum=spec["momentum"], epsilon=spec["epsilon"],
        center=spec["center"], scale=spec["scale"])
    layer.build(input_shape)
    for name, value in init.items():
        getattr(layer, name).assign(value)
    return layer


def keras_bn_case(spec_in: dict) -> None:
    spec = dict(momentum=0.99, epsilon=1e-3, center=True, scale=True,
                init="random", data="normal")
    spec.update(spec_in)
    name = spec["name"]
    shape = tuple(spec["shape"])
    ndim = len(shape)
    axis = spec["axis"] % ndim
    c = shape[axis]
    rng = case_rng("keras_bn", name)

    if spec["data"] == "large_mean":
        mean_c = rng.uniform(1.0e4, 1.1e4, c)
        sd_c = rng.uniform(0.5, 2.0, c)
    else:
        mean_c = rng.uniform(-4.0, 6.0, c)
        sd_c = rng.uniform(0.5, 3.0, c)

    # Initial state: either random (most cases) or the layer's own defaults.
    init: dict[str, np.ndarray] = {}
    if spec["init"] == "random":
        if spec["scale"]:
            init["gamma"] = f32(rng.uniform(0.5, 1.5, c))
        if spec["center"]:
            init["beta"] = f32(rng.normal(0.0, 0.5, c))
        if spec["data"] == "large_mean":
            init["moving_mean"] = f32(mean_c + rng.normal(0.0, 1.0, c))
        else:
            init["moving_mean"] = f32(rng.normal(0.0, 2.0, c))
        init["moving_variance"] = f32(rng.uniform(0.5, 2.0, c))

    x = channel_data(rng, shape, axis, mean_c, sd_c)
    dy = rng.standard_normal(shape).astype(np.float32)
    x_steps = np.stack([
        channel_data(rng, shape, axis, mean_c + rng.normal(0.0, 0.5, c), sd_c)
        for _ in range(N_STEPS)])

    arrays: dict[str, np.ndarray] = {}
    probe = keras_bn_make(spec, shape, init)
    weight_names = (["gamma"] if spec["scale"] else []) + \
        (["beta"] if spec["center"] else []) + \
        ["moving_mean", "moving_variance"]
    for wn in weight_names:
        arrays[wn] = to_np(getattr(probe, wn))
    # Keras weight order (what get_weights / .keras files use).
    keras_weight_order = [w.path.split("/")[-1] for w in probe.weights]

    # Training-mode forward + gradients from the initial state (fresh layer).
    layer = keras_bn_make(spec, shape, init)
    xt = tf.constant(x)
    dyt = tf.constant(dy)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=True)
        loss = tf.reduce_sum(y * dyt)
    wrt = [xt]
    if spec["scale"]:
        wrt.append(layer.gamma)
    if spec["center"]:
        wrt.append(layer.beta)
    grads = tape.gradient(loss, wrt)
    y_training = to_np(y)

    # Inference-mode forward from the initial state (fresh layer).
    layer = keras_bn_make(spec, shape, init)
    y_inference = to_np(layer(x, training=False))

    # N_STEPS training-mode calls, then inference.
    layer = keras_bn_make(spec, shape, init)
    for i in range(N_STEPS):
        layer(x_steps[i], training=True)
    mm_after = to_np(layer.moving_mean)
    mv_after = to_np(layer.moving_variance)
    y_inference_after = to_np(layer(x, training=False))

    arrays.update(x=x, y_training=y_training, y_inference=y_inference, dy=dy,
                  dx=to_np(grads[0]))
    gi = 1
    if spec["scale"]:
        arrays["dgamma"] = to_np(grads[gi])
        gi += 1
    if spec["center"]:
        arrays["dbeta"] = to_np(grads[gi])
    arrays.update(x_steps=x_steps, moving_mean_after=mm_after,
                  moving_variance_after=mv_after,
                  y_inference_after=y_inference_after)

    config = {
        "layer": "keras.layers.BatchNormalization",
        "backend": keras.backend.backend(),
        "dtype": "float32",
        "axis": spec["axis"],
        "axis_normalized": axis,
        "momentum": spec["momentum"],
        "epsilon": spec["epsilon"],
        "center": spec["center"],
        "scale": spec["scale"],
        "input_shape": list(shape),
        "channels": c,
        "initial_state": spec["init"],
        "data": spec["data"],
        "steps": N_STEPS,
        "keras_weight_order": keras_weight_order,
    }
    notes = []
    if spec["init"] == "default":
        notes.append("all-default initializers: gamma=1, beta=0, "
                     "moving_mean=0, moving_variance=1")
    if shape[0] == 1 and ndim == 2:
        notes.append("one value per channel in training: batch variance 0, "
                     "Keras returns (approximately) beta in training mode")
    if spec["data"] == "large_mean":
        notes.append("per-channel mean ~1e4 with std ~1: exercises precision "
                     "of the batch-statistics computation")
    save_case("keras_bn", name, config, arrays,
              {"notes": notes} if notes else None)


# --------------------------------------------------------------------------
# Keras models (keras_frozen, keras_seed)
# --------------------------------------------------------------------------


def glorot_uniform(rng, fan_in, fan_out):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return f32(rng.uniform(-limit, limit, (fan_in, fan_out)))


MODEL_WEIGHT_NAMES = ["dense_kernel", "dense_bias", "bn_gamma", "bn_beta",
                      "bn_moving_mean", "bn_moving_variance",
                      "dense_1_kernel", "dense_1_bias"]


def model_weights(model) -> dict[str, np.ndarray]:
    dense, bn, dense_1 = model.layers
    return {
        "dense_kernel": to_np(dense.kernel),
        "dense_bias": to_np(dense.bias),
        "bn_gamma": to_np(bn.gamma),
        "bn_beta": to_np(bn.beta),
        "bn_moving_mean": to_np(bn.moving_mean),
        "bn_moving_variance": to_np(bn.moving_variance),
        "dense_1_kernel": to_np(dense_1.kernel),
        "dense_1_bias": to_np(dense_1.bias),
    }


def set_model_weights(model, w: dict[str, np.ndarray]) -> None:
    dense, bn, dense_1 = model.layers
    dense.kernel.assign(w["dense_kernel"])
    dense.bias.assign(w["dense_bias"])
    bn.gamma.assign(w["bn_gamma"])
    bn.beta.assign(w["bn_beta"])
    bn.moving_mean.assign(w["bn_moving_mean"])
    bn.moving_variance.assign(w["bn_moving_variance"])
    dense_1.kernel.assign(w["dense_1_kernel"])
    dense_1.bias.assign(w["dense_1_bias"])


def build_mlp(n_in, n_hidden, n_out, hidden_activation, bn_trainable=True):
    model = keras.Sequential([
        keras.Input((n_in,)),
        keras.layers.Dense(n_hidden, activation=hidden_activation,
                           name="dense"),
        keras.layers.BatchNormalization(trainable=bn_trainable,
                                        name="batch_normalization"),
        keras.layers.Dense(n_out, activation="softmax", name="dense_1"),
    ])
    return model


def teacher_labels(rng, x, n_out):
    w = rng.standard_normal((x.shape[1], n_out))
    logits = (x - x.mean(0)) @ w + rng.normal(0.0, 1.0, (x.shape[0], n_out))
    return np.argmax(logits, axis=1).astype(np.int64)


def optimizer_config(opt) -> dict:
    cfg = opt.get_config()
    keep = {}
    for k, v in cfg.items():
        if isinstance(v, (bool, int, float, str)) or v is None:
            keep[k] = v
        elif isinstance(v, (np.floating, np.integer)):
            keep[k] = v.item()
    return keep


FROZEN_CASES = [
    dict(name="bn_frozen", bn_trainable=False),
    dict(name="bn_trainable", bn_trainable=True),
]


def keras_frozen_case(spec) -> None:
    name = spec["name"]
    rng = case_rng("keras_frozen", name)
    n_in, n_hidden, n_out = 8, 6, 3
    n_samples, batch_size, epochs, lr = 32, 8, 2, 0.1
    keras.utils.set_random_seed(1234)

    x = f32(rng.normal(0.5, 1.5, (n_samples, n_in)))
    y = teacher_labels(rng, x, n_out)
    init = {
        "dense_kernel": glorot_uniform(rng, n_in, n_hidden),
        "dense_bias": f32(rng.normal(0.0, 0.1, n_hidden)),
        "bn_gamma": f32(rng.uniform(0.5, 1.5, n_hidden)),
        "bn_beta": f32(rng.normal(0.0, 0.5, n_hidden)),
        "bn_moving_mean": f32(rng.normal(0.0, 1.0, n_hidden)),
        "bn_moving_variance": f32(rng.uniform(0.5, 3.0, n_hidden)),
        "dense_1_kernel": glorot_uniform(rng, n_hidden, n_out),
        "dense_1_bias": f32(rng.normal(0.0, 0.1, n_out)),
    }
    model = build_mlp(n_in, n_hidden, n_out, None, spec["bn_trainable"])
    set_model_weights(model, init)
    bn = model.layers[1]
    trainable_names = [v.path for v in model.trainable_weights]
    opt = keras.optimizers.SGD(learning_rate=lr)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy",
                  jit_compile=False)
    hist = model.fit(x, y, batch_size=batch_size, epochs=epochs,
                     shuffle=False, verbose=0)
    after = model_weights(model)
    preds = model.predict(x, batch_size=n_samples, verbose=0)

    arrays = dict(init)
    arrays["x"] = x
    arrays["y"] = y
    for k in MODEL_WEIGHT_NAMES:
        arrays[k + "_after"] = after[k]
    arrays["predictions_after"] = preds

    config = {
        "model": "Sequential: Input(8) -> Dense(6, linear) -> "
                 f"BatchNormalization(trainable={spec['bn_trainable']}) -> "
                 "Dense(3, softmax)",
        "layer_sizes": [n_in, n_hidden, n_out],
        "hidden_activation": "linear",
        "bn_trainable": spec["bn_trainable"],
        "bn_momentum": bn.momentum,
        "bn_epsilon": bn.epsilon,
        "loss": "sparse_categorical_crossentropy",
        "optimizer": "SGD",
        "learning_rate": lr,
        "optimizer_config": optimizer_config(opt),
        "batch_size": batch_size,
        "epochs": epochs,
        "steps": epochs * (n_samples // batch_size),
        "shuffle": False,
        "n_samples": n_samples,
        "jit_compile": False,
        "trainable_weights": trainable_names,
        "predict": "model.predict(x) (inference mode: BN uses moving stats)",
    }
    extra = {"observations": {
        "fit_history_loss_per_epoch": [float(v) for v in hist.history["loss"]],
        "fit_history_loss_meaning": "mean over the epoch's batches of each "
            "batch's pre-update loss (weighted by batch size)",
    }}
    save_case("keras_frozen", name, config, arrays, extra)


SEED_CASES = [
    dict(name="sgd_momentum", optimizer="SGD",
         make=lambda: keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)),
    dict(name="adam", optimizer="Adam", make=lambda: keras.optimizers.Adam()),
]


def seed_data():
    rng = case_rng("keras_seed", "data")
    n_in, n_out, n_batches, batch = 100, 10, 20, 32
    mean_f = rng.uniform(-1.0, 1.0, n_in)
    sd_f = rng.uniform(0.5, 2.0, n_in)
    x_all = f32(rng.standard_normal((n_batches * batch + 64, n_in)) * sd_f
                + mean_f)
    y_all = teacher_labels(rng, x_all, n_out)
    x_batches = x_all[:n_batches * batch].reshape(n_batches, batch, n_in)
    y_batches = y_all[:n_batches * batch].reshape(n_batches, batch)
    x_eval = x_all[n_batches * batch:]
    init = {
        "dense_kernel": glorot_uniform(rng, n_in, 64),
        "dense_bias": np.zeros(64, np.float32),
        "bn_gamma": np.ones(64, np.float32),
        "bn_beta": np.zeros(64, np.float32),
        "bn_moving_mean": np.zeros(64, np.float32),
        "bn_moving_variance": np.ones(64, np.float32),
        "dense_1_kernel": glorot_uniform(rng, 64, n_out),
        "dense_1_bias": np.zeros(n_out, np.float32),
    }
    return init, x_batches, y_batches, x_eval


def probe_softmax_crossentropy() -> dict:
    """Does Keras' sparse CE on a softmax output use the logits?

    Builds Dense(3, softmax) whose logits for the single sample are
    [20, 0, -20] with label 2: the exact loss is ~40; a loss computed from
    clipped probabilities would be -log(1e-7) = 16.118.
    """
    model = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(3, activation="softmax", name="out"),
    ])
    model.layers[0].kernel.assign(f32([[20.0, 0.0, -20.0]]))
    model.layers[0].bias.assign(f32([0.0, 0.0, 0.0]))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0),
                  loss="sparse_categorical_crossentropy", jit_compile=False)
    x = f32([[1.0]])
    y = np.array([2], np.int64)
    exact = float(np.log(np.exp(20.0) + 1.0 + np.exp(-20.0)) + 20.0)
    probs = model.predict(x, verbose=0)
    out = {
        "exact_loss_float64": exact,
        "clipped_prob_loss": float(-np.log(keras.config.epsilon())),
        "train_on_batch": float(model.train_on_batch(x, y)),
        "evaluate": float(model.evaluate(x, y, verbose=0)),
        "eager_loss_on_model_output": float(
            keras.losses.sparse_categorical_crossentropy(y, model(x))[0]),
        "eager_loss_on_plain_probabilities": float(
            keras.losses.sparse_categorical_crossentropy(
                y, tf.constant(probs))[0]),
    }
    return out


def keras_seed_case(spec, data) -> None:
    name = spec["name"]
    init, x_batches, y_batches, x_eval = data
    keras.utils.set_random_seed(4321)
    model = build_mlp(100, 64, 10, "relu")
    set_model_weights(model, init)
    opt = spec["make"]()
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy",
                  jit_compile=False)
    losses = []
    for i in range(x_batches.shape[0]):
        losses.append(float(model.train_on_batch(x_batches[i], y_batches[i])))
    after = model_weights(model)
    preds = model.predict(x_eval, batch_size=x_eval.shape[0], verbose=0)

    arrays = dict(init)
    arrays["x_batches"] = x_batches
    arrays["y_batches"] = y_batches
    for k in MODEL_WEIGHT_NAMES:
        arrays[k + "_after"] = after[k]
    arrays["losses"] = f32(losses)
    arrays["x_eval"] = x_eval
    arrays["predictions_after"] = preds
    bn = model.layers[1]
    config = {
        "model": "Sequential: Input(100) -> Dense(64, relu) -> "
                 "BatchNormalization() -> Dense(10, softmax)",
        "layer_sizes": [100, 64, 10],
        "hidden_activation": "relu",
        "bn_momentum": bn.momentum,
        "bn_epsilon": bn.epsilon,
        "loss": "sparse_categorical_crossentropy",
        "optimizer": spec["optimizer"],
        "optimizer_config": optimizer_config(opt),
        "training": "model.train_on_batch(x_batches[i], y_batches[i]) "
                    "for i in 0..19",
        "batch_size": int(x_batches.shape[1]),
        "steps": int(x_batches.shape[0]),
        "jit_compile": False,
        "initial_weights": "glorot-uniform kernels (numpy, fixed seed), "
                           "zero biases, BN defaults",
        "losses": "losses[i] = value returned by train_on_batch at step i: "
                  "mean sparse CE of batch i computed in the forward pass "
                  "of that step (training mode, BN batch statistics), i.e. "
                  "with the weights BEFORE that step's update",
        "predict": "model.predict(x_eval) (inference mode: BN uses moving "
                   "stats)",
    }
    extra = {"observations": {
        "softmax_sparse_ce_probe": probe_softmax_crossentropy(),
    }}
    save_case("keras_seed", name, config, arrays, extra)


# --------------------------------------------------------------------------
# keras_conv, keras_pool, keras_flatten: the image layers, one layer per case
# --------------------------------------------------------------------------

IMAGE_SHAPE = (2, 7, 6, 3)  # (N, H, W, C) of the single-layer cases


def image_x(rng, data_format: str, shape=IMAGE_SHAPE, data="normal"):
    """An (N, H, W, C) draw, transposed to (N, C, H, W) for channels_first.

    data="ties": small integers, so that pooling windows hold equal maxima.
    """
    if data == "ties":
        x = f32(rng.integers(0, 3, shape))
    else:
        x = f32(rng.standard_normal(shape))
    return nhwc_to(x, data_format)


def nhwc_to(a, data_format: str) -> np.ndarray:
    return a if data_format == "channels_last" else \
        np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2)))


def to_nhwc(a, data_format: str) -> np.ndarray:
    return a if data_format == "channels_last" else \
        np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)))


def layer_forward_backward(layer, x, dy, variables):
    """y = layer(x) and the gradients of sum(y * dy) w.r.t. x and `variables`."""
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
        loss = tf.reduce_sum(y * tf.constant(dy))
    grads = tape.gradient(loss, [xt] + list(variables))
    return to_np(y), [to_np(g) for g in grads]


def same_padding(size, k, s, d):
    """TensorFlow 'SAME' along one axis: (out, pad_before, pad_after)."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return out, total // 2, total - total // 2


CONV_CASES = [
    dict(name="k3_s1_valid"),
    dict(name="k3_s1_same", padding="same"),
    dict(name="k3_s2_valid", strides=(2, 2)),
    dict(name="k3_s2_same", strides=(2, 2), padding="same"),
    dict(name="k3_s2x1_valid", strides=(2, 1)),
    dict(name="k3_s2x1_same", strides=(2, 1), padding="same"),
    dict(name="k2_s1_same", kernel_size=(2, 2), padding="same"),
    dict(name="k2_s2_same", kernel_size=(2, 2), strides=(2, 2), padding="same"),
    dict(name="k4_s2_same", kernel_size=(4, 4), strides=(2, 2), padding="same"),
    dict(name="k3x2_s2x1_same", kernel_size=(3, 2), strides=(2, 1),
         padding="same"),
    dict(name="k1_s1_valid", kernel_size=(1, 1)),
    dict(name="k3_d2_valid", dilation_rate=(2, 2)),
    dict(name="k3_d2_same", dilation_rate=(2, 2), padding="same"),
    dict(name="k3_d2x1_same", dilation_rate=(2, 1), padding="same"),
    dict(name="k3_same_no_bias", padding="same", use_bias=False),
    dict(name="k3_same_relu", padding="same", activation="relu"),
    dict(name="k3_s2_valid_tanh", strides=(2, 2), activation="tanh"),
    # channels_first: Keras runs tf.nn.convolution with NCHW (see the docs).
    dict(name="cf_k3_s1_valid", data_format="channels_first"),
    dict(name="cf_k3_s2_same", strides=(2, 2), padding="same",
         data_format="channels_first"),
    dict(name="cf_k4_s2_same", kernel_size=(4, 4), strides=(2, 2),
         padding="same", data_format="channels_first"),
    dict(name="cf_k3_s2x1_same", strides=(2, 1), padding="same",
         data_format="channels_first"),
    dict(name="cf_k3_d2_same", dilation_rate=(2, 2), padding="same",
         data_format="channels_first"),
    dict(name="cf_k3_same_relu_no_bias", padding="same", activation="relu",
         use_bias=False, data_format="channels_first"),
]


def make_conv(spec):
    return keras.layers.Conv2D(
        filters=spec["filters"], kernel_size=spec["kernel_size"],
        strides=spec["strides"], padding=spec["padding"],
        data_format=spec["data_format"], dilation_rate=spec["dilation_rate"],
        activation=spec["activation"], use_bias=spec["use_bias"])


def keras_conv_case(spec_in: dict) -> None:
    spec = dict(filters=5, kernel_size=(3, 3), strides=(1, 1), padding="valid",
                data_format="channels_last", dilation_rate=(1, 1),
                activation="linear", use_bias=True)
    spec.update(spec_in)
    name, fmt = spec["name"], spec["data_format"]
    rng = case_rng("keras_conv", name)
    _, h, w, c = IMAGE_SHAPE
    kh, kw = spec["kernel_size"]
    x = image_x(rng, fmt)
    limit = np.sqrt(6.0 / ((kh * kw) * (c + spec["filters"])))
    kernel = f32(rng.uniform(-limit, limit, (kh, kw, c, spec["filters"])))
    bias = f32(rng.normal(0.0, 0.5, spec["filters"]))

    layer = make_conv(spec)
    layer.build(x.shape)
    layer.kernel.assign(kernel)
    variables = [layer.kernel]
    if spec["use_bias"]:
        layer.bias.assign(bias)
        variables.append(layer.bias)
    out_shape = tuple(layer.compute_output_shape(x.shape))
    dy = f32(rng.standard_normal(out_shape))
    y, grads = layer_forward_backward(layer, x, dy, variables)

    observations = {}
    if fmt == "channels_first":
        # Keras's TF backend turns ops.add(y, bias.reshape(1, F, 1, 1)) into
        # tf.nn.bias_add(..., "NHWC") when the output width equals F, which
        # adds the bias along the width: such shapes are not stored.
        if spec["use_bias"] and out_shape[-1] == spec["filters"]:
            raise ValueError(f"keras_conv/{name}: output width == filters")
        # The same layer on the transposed data, channels_last.
        twin = make_conv(dict(spec, data_format="channels_last"))
        twin.build(to_nhwc(x, fmt).shape)
        twin.kernel.assign(kernel)
        tvars = [twin.kernel]
        if spec["use_bias"]:
            twin.bias.assign(bias)
            tvars.append(twin.bias)
        ty, tg = layer_forward_backward(twin, to_nhwc(x, fmt),
                                        to_nhwc(dy, fmt), tvars)
        diffs = {
            "y": np.abs(nhwc_to(ty, fmt) - y).max(),
            "dx": np.abs(nhwc_to(tg[0], fmt) - grads[0]).max(),
            "dkernel": np.abs(tg[1] - grads[1]).max(),
        }
        if spec["use_bias"]:
            diffs["dbias"] = np.abs(tg[2] - grads[2]).max()
        if max(diffs.values()) > 1e-4:
            raise AssertionError(f"keras_conv/{name}: channels_first differs "
                                 f"from channels_last: {diffs}")
        observations["max_abs_diff_vs_channels_last_transposed"] = {
            k: float(v) for k, v in diffs.items()}

    arrays = {"kernel": kernel}
    if spec["use_bias"]:
        arrays["bias"] = bias
    arrays.update(x=x, y=y, dy=dy, dx=grads[0], dkernel=grads[1])
    if spec["use_bias"]:
        arrays["dbias"] = grads[2]

    pads = []
    for axis in range(2):
        size = (h, w)[axis]
        k, s = spec["kernel_size"][axis], spec["strides"][axis]
        d = spec["dilation_rate"][axis]
        if spec["padding"] == "same":
            pads.append(list(same_padding(size, k, s, d)[1:]))
        else:
            pads.append([0, 0])
    config = {
        "layer": "keras.layers.Conv2D",
        "backend": keras.backend.backend(),
        "dtype": "float32",
        "filters": spec["filters"],
        "kernel_size": list(spec["kernel_size"]),
        "strides": list(spec["strides"]),
        "padding": spec["padding"],
        "data_format": fmt,
        "dilation_rate": list(spec["dilation_rate"]),
        "activation": spec["activation"],
        "use_bias": spec["use_bias"],
        "input_shape": list(x.shape),
        "output_shape": list(out_shape),
        "tf_padding_hw": pads,
        "computed_by": "keras.layers.Conv2D(data_format=...) called "
                       "eagerly under tf.GradientTape",
    }
    extra = {"observations": observations} if observations else {}
    if name == "cf_k3_s1_valid":
        extra.setdefault("observations", {})[
            "channels_first_bias_add_probe"] = probe_channels_first_bias()
    save_case("keras_conv", name, config, arrays, extra or None)


def probe_channels_first_bias() -> dict:
    """Keras 3 (TF backend) Conv2D channels_first whose output width equals
    `filters`: how far is its output from the transposed channels_last one?"""
    rng = np.random.default_rng(0)
    x = f32(rng.standard_normal((1, 2, 6, 6)))          # out (1, 4, 4, 4)
    spec = dict(filters=4, kernel_size=(3, 3), strides=(1, 1),
                padding="valid", data_format="channels_first",
                dilation_rate=(1, 1), activation="linear", use_bias=True)
    cf = make_conv(spec)
    cl = make_conv(dict(spec, data_format="channels_last"))
    cf.build(x.shape)
    cl.build(to_nhwc(x, "channels_first").shape)
    kernel = f32(rng.standard_normal((3, 3, 2, 4)))
    bias = f32([1.0, 2.0, 3.0, 4.0])
    for layer in (cf, cl):
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
    y_cf = to_np(cf(x))
    y_cl = nhwc_to(to_np(cl(to_nhwc(x, "channels_first"))), "channels_first")
    return {
        "input_shape": list(x.shape), "filters": 4, "bias": bias.tolist(),
        "max_abs_diff_channels_first_vs_channels_last":
            float(np.abs(y_cf - y_cl).max()),
        "meaning": "nonzero: keras.ops.add (TF backend) rewrites y + "
                   "bias.reshape(1, F, 1, 1) as tf.nn.bias_add(y, bias, "
                   "'NHWC') when y.shape[-1] == F, adding the bias along "
                   "the width",
    }


POOL_CASES = [
    dict(name="max_p2", layer="MaxPooling2D"),
    dict(name="max_p2_s1", layer="MaxPooling2D", strides=(1, 1)),
    dict(name="max_p2_same", layer="MaxPooling2D", padding="same"),
    dict(name="max_p3_s2_same", layer="MaxPooling2D", pool_size=(3, 3),
         strides=(2, 2), padding="same"),
    dict(name="max_p3x2_s1x2_valid", layer="MaxPooling2D", pool_size=(3, 2),
         strides=(1, 2)),
    dict(name="max_ties_p2", layer="MaxPooling2D", data="ties"),
    dict(name="max_ties_p3_s1_same", layer="MaxPooling2D", pool_size=(3, 3),
         strides=(1, 1), padding="same", data="ties"),
    dict(name="avg_p2", layer="AveragePooling2D"),
    dict(name="avg_p2_s1", layer="AveragePooling2D", strides=(1, 1)),
    dict(name="avg_p2_same", layer="AveragePooling2D", padding="same"),
    dict(name="avg_p3_s1_same", layer="AveragePooling2D", pool_size=(3, 3),
         strides=(1, 1), padding="same"),
    dict(name="avg_p3_s2_same", layer="AveragePooling2D", pool_size=(3, 3),
         strides=(2, 2), padding="same"),
    dict(name="avg_p3x2_s1x2_valid", layer="AveragePooling2D",
         pool_size=(3, 2), strides=(1, 2)),
    dict(name="gap", layer="GlobalAveragePooling2D"),
    dict(name="gap_keepdims", layer="GlobalAveragePooling2D", keepdims=True),
    dict(name="cf_max_p3_s2_same", layer="MaxPooling2D", pool_size=(3, 3),
         strides=(2, 2), padding="same", data_format="channels_first"),
    dict(name="cf_max_ties_p2_s1", layer="MaxPooling2D", strides=(1, 1),
         data="ties", data_format="channels_first"),
    dict(name="cf_avg_p3_s2_same", layer="AveragePooling2D", pool_size=(3, 3),
         strides=(2, 2), padding="same", data_format="channels_first"),
    dict(name="cf_avg_p2", layer="AveragePooling2D",
         data_format="channels_first"),
    dict(name="cf_gap", layer="GlobalAveragePooling2D",
         data_format="channels_first"),
    dict(name="cf_gap_keepdims", layer="GlobalAveragePooling2D",
         keepdims=True, data_format="channels_first"),
]


def keras_pool_case(spec_in: dict) -> None:
    spec = dict(pool_size=(2, 2), strides=None, padding="valid",
                data_format="channels_last", keepdims=False, data="normal")
    spec.update(spec_in)
    name, fmt, cls = spec["name"], spec["data_format"], spec["layer"]
    rng = case_rng("keras_pool", name)
    x = image_x(rng, fmt, data=spec["data"])
    config = {"layer": f"keras.layers.{cls}",
              "backend": keras.backend.backend(), "dtype": "float32"}
    if cls == "GlobalAveragePooling2D":
        layer = keras.layers.GlobalAveragePooling2D(
            data_format=fmt, keepdims=spec["keepdims"])
        config.update(data_format=fmt, keepdims=spec["keepdims"])
    else:
        layer = getattr(keras.layers, cls)(
            pool_size=spec["pool_size"], strides=spec["strides"],
            padding=spec["padding"], data_format=fmt)
        config.update(
            pool_size=list(spec["pool_size"]),
            strides=None if spec["strides"] is None else list(spec["strides"]),
            padding=spec["padding"], data_format=fmt)
    layer.build(x.shape)
    out_shape = tuple(layer.compute_output_shape(x.shape))
    dy = f32(rng.standard_normal(out_shape))
    y, grads = layer_forward_backward(layer, x, dy, [])
    config.update(input_shape=list(x.shape), output_shape=list(out_shape),
                  data=spec["data"])
    extra = None
    if spec["data"] == "ties":
        extra = {"notes": ["x holds the integers 0, 1, 2: most windows have "
                           "several maxima; the gradient goes to one of them "
                           "(see docs/parity-fixtures.md)"]}
    save_case("keras_pool", name, config,
              dict(x=x, y=y, dy=dy, dx=grads[0]), extra)


FLATTEN_CASES = [
    dict(name="channels_last", data_format="channels_last",
         shape=(2, 3, 4, 5)),
    dict(name="channels_first", data_format="channels_first",
         shape=(2, 5, 3, 4)),
    dict(name="channels_first_rank2", data_format="channels_first",
         shape=(3, 6)),
]


def keras_flatten_case(spec: dict) -> None:
    name = spec["name"]
    rng = case_rng("keras_flatten", name)
    x = f32(rng.standard_normal(spec["shape"]))
    layer = keras.layers.Flatten(data_format=spec["data_format"])
    out_shape = tuple(layer.compute_output_shape(x.shape))
    dy = f32(rng.standard_normal(out_shape))
    y, grads = layer_forward_backward(layer, x, dy, [])
    config = {"layer": "keras.layers.Flatten",
              "backend": keras.backend.backend(), "dtype": "float32",
              "data_format": spec["data_format"],
              "input_shape": list(x.shape), "output_shape": list(out_shape)}
    save_case("keras_flatten", name, config, dict(x=x, y=y, dy=dy,
                                                  dx=grads[0]))


# --------------------------------------------------------------------------
# keras_cnn: a small CNN with BatchNormalization trained with fit
# --------------------------------------------------------------------------

# The Adam cases drop the biases of the layers that feed a BatchNormalization
# (use_bias=False, the usual Keras practice): BN cancels such a bias, so its
# exact gradient is 0 and the computed one is rounding noise, which Adam
# rescales into steps of size ~learning_rate (TF's NHWC and NCHW runs of the
# same model then differ by 7e-4 in those biases). SGD keeps them: there the
# noise moves them by ~1e-9.
CNN_CASES = [
    dict(name="sgd_momentum", data_format="channels_last", optimizer="SGD",
         bias_before_bn=True),
    dict(name="adam", data_format="channels_last", optimizer="Adam",
         bias_before_bn=False),
    dict(name="cf_sgd_momentum", data_format="channels_first",
         optimizer="SGD", bias_before_bn=True),
    dict(name="cf_adam", data_format="channels_first", optimizer="Adam",
         bias_before_bn=False),
]
CNN_BATCH, CNN_STEPS, CNN_CLASSES = 8, 3, 3
CNN_IMAGE = (10, 10, 2)  # (H, W, C)


def build_cnn(fmt: str, bias_before_bn: bool = True):
    """Conv2D(4,3,same) -> BN -> ReLU -> MaxPooling2D(2) -> Conv2D(6,3,valid,
    strides 2) -> BN -> ReLU -> Flatten -> Dense(5) -> BN -> ReLU ->
    Dense(3, softmax); every layer with the given data_format."""
    cf = fmt == "channels_first"
    b = bias_before_bn
    h, w, c = CNN_IMAGE
    bn_axis = 1 if cf else -1
    L = keras.layers
    return keras.Sequential([
        keras.Input((c, h, w) if cf else (h, w, c)),
        L.Conv2D(4, 3, padding="same", data_format=fmt, use_bias=b,
                 name="conv2d"),
        L.BatchNormalization(axis=bn_axis, momentum=0.9,
                             name="batch_normalization"),
        L.Activation("relu", name="activation"),
        L.MaxPooling2D(2, data_format=fmt, name="max_pooling2d"),
        L.Conv2D(6, 3, strides=2, padding="valid", data_format=fmt,
                 use_bias=b, name="conv2d_1"),
        L.BatchNormalization(axis=bn_axis, epsilon=1e-5,
                             name="batch_normalization_1"),
        L.Activation("relu", name="activation_1"),
        L.Flatten(data_format=fmt, name="flatten"),
        L.Dense(5, use_bias=b, name="dense"),
        L.BatchNormalization(momentum=0.8, name="batch_normalization_2"),
        L.Activation("relu", name="activation_2"),
        L.Dense(CNN_CLASSES, activation="softmax", name="dense_1"),
    ], name="cnn")


def cnn_layer_configs(model) -> list[dict]:
    """Each layer's class and the Keras arguments bnorm needs to rebuild it."""
    keys = ["filters", "kernel_size", "strides", "padding", "data_format",
            "dilation_rate", "activation", "use_bias", "axis", "momentum",
            "epsilon", "center", "scale", "pool_size", "units"]
    out = []
    for layer in model.layers:
        cfg = layer.get_config()
        kept = {k: cfg[k] for k in keys if k in cfg}
        for k, v in kept.items():
            if isinstance(v, tuple):
                kept[k] = list(v)
        out.append({"class_name": type(layer).__name__, "name": layer.name,
                    "config": kept})
    return out


def cnn_weights(model) -> dict[str, np.ndarray]:
    """Weights in Keras order, named <layer>_<variable>."""
    return {"_".join(v.path.split("/")[-2:]): to_np(v) for v in model.weights}


def cnn_data():
    """Shared by all cases: channels_first cases see the same numbers,
    transposed, so all four models compute the same function."""
    rng = case_rng("keras_cnn", "data")
    h, w, c = CNN_IMAGE
    n = CNN_BATCH * CNN_STEPS
    x = f32(rng.standard_normal((n + CNN_BATCH, h, w, c)))
    # Labels from a fixed random projection of the image, so that they
    # depend on the input.
    proj = rng.standard_normal((h * w * c, CNN_CLASSES))
    y = np.argmax(x.reshape(len(x), -1) @ proj, axis=1).astype(np.int64)
    model = build_cnn("channels_last")
    init = {}
    for v in model.weights:
        layer, var = v.path.split("/")[-2:]
        shape = tuple(v.shape)
        if var == "kernel":
            rf = int(np.prod(shape[:-2])) if len(shape) == 4 else 1
            fan_in, fan_out = rf * shape[-2], rf * shape[-1]
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            val = rng.uniform(-limit, limit, shape)
        elif var == "bias":
            val = rng.normal(0.0, 0.1, shape)
        elif var == "gamma":
            val = rng.uniform(0.7, 1.3, shape)
        elif var == "beta":
            val = rng.normal(0.0, 0.2, shape)
        elif var == "moving_mean":
            val = rng.normal(0.0, 0.3, shape)
        else:
            val = rng.uniform(0.5, 1.5, shape)
        init[f"{layer}_{var}"] = f32(val)
    return init, x[:n], y[:n], x[n:], y[n:]


def make_cnn_optimizer(kind: str):
    # Named explicitly: Keras numbers default names per process ("adam_2"),
    # which would make meta.json depend on which families ran before.
    if kind == "SGD":
        return keras.optimizers.SGD(learning_rate=0.05, momentum=0.9,
                                    name="sgd")
    return keras.optimizers.Adam(learning_rate=0.01, name="adam")


class BatchLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def keras_cnn_case(spec: dict, data) -> dict[str, np.ndarray]:
    name, fmt = spec["name"], spec["data_format"]
    init, x, y, x_eval, y_eval = data
    x, x_eval = nhwc_to(x, fmt), nhwc_to(x_eval, fmt)
    keras.utils.set_random_seed(1234)
    model = build_cnn(fmt, spec["bias_before_bn"])
    names = list(cnn_weights(model))
    init = {n: init[n] for n in names}
    for v, n in zip(model.weights, names):
        v.assign(init[n])
    preds_initial = to_np(model.predict(x_eval, verbose=0))
    opt = make_cnn_optimizer(spec["optimizer"])
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy",
                  jit_compile=False)
    logs = BatchLogs()
    hist = model.fit(x, y, batch_size=CNN_BATCH, epochs=1, shuffle=False,
                     verbose=0, callbacks=[logs])
    after = cnn_weights(model)
    preds = to_np(model.predict(x_eval, verbose=0))
    eval_loss = model.evaluate(x_eval, y_eval, batch_size=CNN_BATCH,
                               verbose=0)

    arrays = dict(init)
    arrays.update(x=x, y=y)
    arrays.update({f"{k}_after": v for k, v in after.items()})
    arrays.update(batch_losses=f32(logs.losses), x_eval=x_eval, y_eval=y_eval,
                  predictions_initial=preds_initial, predictions_after=preds,
                  evaluate_loss_after=f32(eval_loss))
    config = {
        "model": "Sequential: " + " -> ".join(
            type(l).__name__ for l in model.layers),
        "layers": cnn_layer_configs(model),
        "input_shape": list(x.shape[1:]),
        "data_format": fmt,
        "weight_names": names,
        "loss": "sparse_categorical_crossentropy",
        "optimizer": type(opt).__name__,
        "optimizer_config": optimizer_config(opt),
        "training": f"model.fit(x, y, batch_size={CNN_BATCH}, epochs=1, "
                    "shuffle=False): one step per batch",
        "batch_size": CNN_BATCH,
        "steps": CNN_STEPS,
        "jit_compile": False,
        "initial_weights": "numpy draws (glorot-uniform kernels, small "
                           "random biases, random BN gamma/beta/moving "
                           "statistics), the same for every case",
        "bias_before_bn": spec["bias_before_bn"],
        "batch_losses": "logs['loss'] in on_train_batch_end: the running "
                        "mean over the epoch of the pre-update batch losses",
        "predict": "model.predict(x_eval) (inference mode), before "
                   "(predictions_initial) and after training",
        "evaluate": f"model.evaluate(x_eval, y_eval, batch_size="
                    f"{CNN_BATCH}) after training",
    }
    extra = {"observations": {
        "fit_history_loss": [float(v) for v in hist.history["loss"]]}}
    save_case("keras_cnn", name, config, arrays, extra)
    return {k: to_nhwc(v, fmt) if k.startswith("x") else v
            for k, v in arrays.items()}


def keras_cnn_family() -> None:
    data = cnn_data()
    results = {}
    for spec in CNN_CASES:
        results[spec["name"]] = keras_cnn_case(spec, data)
    # The channels_first models compute the same function as the
    # channels_last ones; record how close Keras's two runs are.
    for spec in CNN_CASES:
        if spec["data_format"] != "channels_first":
            continue
        twin = spec["name"][len("cf_"):]
        a, b = results[spec["name"]], results[twin]
        diff = max(float(np.abs(np.float64(a[k]) - np.float64(b[k])).max())
                   for k in a)
        path = FIXTURES_DIR / "keras_cnn" / spec["name"] / "meta.json"
        meta = json.loads(path.read_text())
        meta["observations"][
            f"max_abs_diff_vs_{twin}_over_all_arrays"] = diff
        path.write_text(json.dumps(meta, indent=2) + "\n")
        if diff > 1e-4:
            raise AssertionError(f"keras_cnn/{spec['name']} differs from "
                                 f"{twin} by {diff}")


# --------------------------------------------------------------------------
# keras_layers: the layers added with the functional API, one per case
# --------------------------------------------------------------------------

LAYERS_IMAGE = (2, 5, 6, 3)  # (N, H, W, C) of the image cases


def kinked_x(rng, shape, kinks, scale=3.0):
    """Normal data (std `scale`) with about a quarter of the values set
    exactly to the given kink points (where the derivative jumps)."""
    x = f32(rng.standard_normal(shape) * scale)
    if kinks:
        pick = rng.random(shape) < 0.25
        vals = f32(rng.choice(np.asarray(kinks, dtype=np.float32), shape))
        x = np.where(pick, vals, x).astype(np.float32)
    return x


def glorot(rng, shape, fan_in, fan_out):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return f32(rng.uniform(-limit, limit, shape))


# Every case: the Keras class (keras.layers.<layer>), its arguments as
# passed, the input shapes (channels_last shapes are given; a
# data_format=channels_first case transposes them), and optional extras.
LAYER_CASES = [
    # ZeroPadding2D
    dict(name="zero_padding_1", layer="ZeroPadding2D", args=dict(padding=1)),
    dict(name="zero_padding_asym", layer="ZeroPadding2D",
         args=dict(padding=((1, 2), (0, 3)))),
    dict(name="cf_zero_padding_asym", layer="ZeroPadding2D",
         args=dict(padding=((2, 0), (1, 3)), data_format="channels_first")),
    # DepthwiseConv2D (weights "kernel" (kh, kw, C, M) and "bias" (C*M,))
    dict(name="depthwise_k3_valid", layer="DepthwiseConv2D",
         args=dict(kernel_size=3)),
    dict(name="depthwise_k3_s2_m2_same", layer="DepthwiseConv2D",
         args=dict(kernel_size=3, strides=2, depth_multiplier=2,
                   padding="same")),
    dict(name="depthwise_k2x3_same_no_bias_relu", layer="DepthwiseConv2D",
         args=dict(kernel_size=(2, 3), padding="same", use_bias=False,
                   activation="relu")),
    dict(name="depthwise_k3_d2_same", layer="DepthwiseConv2D",
         args=dict(kernel_size=3, dilation_rate=2, padding="same")),
    dict(name="cf_depthwise_k3_s2_m2_same", layer="DepthwiseConv2D",
         args=dict(kernel_size=3, strides=2, depth_multiplier=2,
                   padding="same", data_format="channels_first")),
    # SeparableConv2D (depthwise_kernel, pointwise_kernel, bias)
    dict(name="separable_k3_f4_valid", layer="SeparableConv2D",
         args=dict(filters=4, kernel_size=3)),
    dict(name="separable_k3_s2_m2_same_f5", layer="SeparableConv2D",
         args=dict(filters=5, kernel_size=3, strides=2, depth_multiplier=2,
                   padding="same")),
    dict(name="separable_k3_same_no_bias_relu", layer="SeparableConv2D",
         args=dict(filters=4, kernel_size=3, padding="same", use_bias=False,
                   activation="relu")),
    dict(name="cf_separable_k3_s2_same_f5", layer="SeparableConv2D",
         args=dict(filters=5, kernel_size=3, strides=2, padding="same",
                   data_format="channels_first")),
    # Global pooling
    dict(name="global_max", layer="GlobalMaxPooling2D", args={}),
    dict(name="global_max_keepdims", layer="GlobalMaxPooling2D",
         args=dict(keepdims=True)),
    dict(name="cf_global_max", layer="GlobalMaxPooling2D",
         args=dict(data_format="channels_first")),
    dict(name="global_max_ties", layer="GlobalMaxPooling2D", args={},
         data="ties"),
    dict(name="global_average_keepdims", layer="GlobalAveragePooling2D",
         args=dict(keepdims=True)),
    dict(name="cf_global_average_keepdims", layer="GlobalAveragePooling2D",
         args=dict(keepdims=True, data_format="channels_first")),
    # ReLU layer
    dict(name="relu_default", layer="ReLU", args={}, kinks=[0.0]),
    dict(name="relu_max_value_6", layer="ReLU", args=dict(max_value=6.0),
         kinks=[0.0, 6.0]),
    dict(name="relu_negative_slope", layer="ReLU",
         args=dict(negative_slope=0.1), kinks=[0.0]),
    dict(name="relu_threshold", layer="ReLU", args=dict(threshold=0.5),
         kinks=[0.0, 0.5]),
    dict(name="relu_all_args", layer="ReLU",
         args=dict(max_value=2.0, negative_slope=0.2, threshold=0.3),
         kinks=[0.0, 0.3, 2.0]),
    # Activation kinds
    dict(name="activation_silu", layer="Activation",
         args=dict(activation="silu"), kinks=[0.0]),
    dict(name="activation_swish", layer="Activation",
         args=dict(activation="swish"), kinks=[0.0]),
    dict(name="activation_gelu", layer="Activation",
         args=dict(activation="gelu"), kinks=[0.0]),
    dict(name="activation_hard_sigmoid", layer="Activation",
         args=dict(activation="hard_sigmoid"), kinks=[-3.0, 0.0, 3.0]),
    dict(name="activation_hard_silu", layer="Activation",
         args=dict(activation="hard_silu"), kinks=[-3.0, 0.0, 3.0]),
    dict(name="activation_hard_swish", layer="Activation",
         args=dict(activation="hard_swish"), kinks=[-3.0, 0.0, 3.0]),
    dict(name="activation_elu", layer="Activation",
         args=dict(activation="elu"), kinks=[0.0]),
    dict(name="activation_leaky_relu", layer="Activation",
         args=dict(activation="leaky_relu"), kinks=[0.0]),
    dict(name="activation_relu6", layer="Activation",
         args=dict(activation="relu6"), kinks=[0.0, 6.0]),
    # Reshape, Rescaling, Normalization, Identity, Dropout
    dict(name="reshape_flat", layer="Reshape", args=dict(target_shape=(90,))),
    dict(name="reshape_infer", layer="Reshape",
         args=dict(target_shape=(-1, 9))),
    dict(name="rescaling_scalar", layer="Rescaling",
         args=dict(scale=1.0 / 127.5, offset=-1.0), data="pixels"),
    dict(name="rescaling_per_channel", layer="Rescaling",
         args=dict(scale=[0.5, 2.0, -1.5], offset=[0.1, 0.0, -0.3])),
    dict(name="normalization_per_channel", layer="Normalization",
         args=dict(mean=[0.5, -1.0, 2.0], variance=[4.0, 0.25, 1.0])),
    dict(name="normalization_invert", layer="Normalization",
         args=dict(mean=[0.5, -1.0, 2.0], variance=[4.0, 0.25, 1.0],
                   invert=True)),
    dict(name="normalization_axis_none", layer="Normalization",
         args=dict(axis=None, mean=1.5, variance=2.0)),
    dict(name="normalization_zero_variance", layer="Normalization",
         args=dict(mean=[0.5, -1.0, 2.0], variance=[0.0, 1e-16, 1.0])),
    dict(name="normalization_adapt", layer="Normalization", args={},
         adapt=True),
    dict(name="identity", layer="Identity", args={}),
    dict(name="dropout_noise_shape", layer="Dropout",
         args=dict(rate=0.5, noise_shape=(None, 1, 1, 3)), training=False),
    # BatchNormalization over axis 3 (bnorm's with_axis({3}), Keras 2's
    # axis=[3]; Keras 3 takes an int), training mode
    dict(name="batch_norm_axis3", layer="BatchNormalization",
         args=dict(axis=3, momentum=0.9), training=True),
    # Merge layers (several inputs)
    dict(name="add", layer="Add", args={}, inputs=[LAYERS_IMAGE] * 2),
    dict(name="add_three", layer="Add", args={}, inputs=[LAYERS_IMAGE] * 3),
    dict(name="subtract", layer="Subtract", args={},
         inputs=[LAYERS_IMAGE] * 2),
    dict(name="multiply", layer="Multiply", args={},
         inputs=[LAYERS_IMAGE] * 2),
    dict(name="multiply_broadcast", layer="Multiply", args={},
         inputs=[LAYERS_IMAGE, (2, 1, 1, 3)]),
    dict(name="average", layer="Average", args={},
         inputs=[LAYERS_IMAGE] * 3),
    dict(name="concatenate_last", layer="Concatenate", args=dict(axis=-1),
         inputs=[(2, 5, 6, 3), (2, 5, 6, 2)]),
    dict(name="concatenate_axis1", layer="Concatenate", args=dict(axis=1),
         inputs=[(2, 5, 6, 3), (2, 2, 6, 3), (2, 1, 6, 3)]),
    dict(name="concatenate_axis2", layer="Concatenate", args=dict(axis=2),
         inputs=[(2, 5, 6, 3), (2, 5, 4, 3)]),
]


def layer_case_weights(rng, layer, spec) -> list[np.ndarray]:
    """Random values for every weight of a built layer, in Keras order."""
    vals = []
    for v in layer.weights:
        shape = tuple(v.shape)
        n = v.name
        if n in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            fan_in = int(np.prod(shape[:-1]))
            fan_out = int(np.prod(shape[:-2])) * shape[-1]
            vals.append(glorot(rng, shape, fan_in, fan_out))
        elif n == "bias" or n == "beta":
            vals.append(f32(rng.normal(0.0, 0.5, shape)))
        elif n == "gamma":
            vals.append(f32(rng.uniform(0.5, 1.5, shape)))
        elif n == "moving_mean":
            vals.append(f32(rng.normal(0.0, 0.5, shape)))
        elif n == "moving_variance":
            vals.append(f32(rng.uniform(0.5, 1.5, shape)))
        else:
            vals.append(None)  # Normalization's adapt state: set by adapt()
    return vals


def jsonable(v):
    if isinstance(v, tuple):
        return [jsonable(e) for e in v]
    if isinstance(v, list):
        return [jsonable(e) for e in v]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def keras_layers_case(spec: dict) -> None:
    name, cls = spec["name"], spec["layer"]
    args = dict(spec["args"])
    fmt = args.get("data_format", "channels_last")
    rng = case_rng("keras_layers", name)
    shapes = spec.get("inputs", [LAYERS_IMAGE])
    kinks = spec.get("kinks")
    xs = []
    for s in shapes:
        if spec.get("data") == "ties":
            x = f32(rng.integers(0, 3, s))
        elif spec.get("data") == "pixels":
            x = f32(rng.integers(0, 256, s))
        elif kinks is not None:
            x = kinked_x(rng, s, kinks)
        else:
            x = f32(rng.standard_normal(s) * 1.5 + 0.3)
        xs.append(nhwc_to(x, fmt) if len(s) == 4 else x)

    layer = getattr(keras.layers, cls)(**args, name=name)
    multi = len(xs) > 1
    build_shape = [x.shape for x in xs] if multi else xs[0].shape
    observations = {}
    if spec.get("adapt"):
        data = f32(rng.standard_normal((16,) + LAYERS_IMAGE[1:]) *
                   np.array([1.0, 3.0, 0.5]) + np.array([2.0, -1.0, 0.0]))
        layer.adapt(data)
    else:
        data = None
        layer.build(build_shape)
    weights = layer_case_weights(rng, layer, spec)
    for v, val in zip(layer.weights, weights):
        if val is not None:
            v.assign(val)
    weight_names = [v.name for v in layer.weights]
    initial = {n: to_np(v) for n, v in zip(weight_names, layer.weights)}
    trainable = [v for v in layer.trainable_weights]
    training = spec.get("training", True)

    xts = [tf.constant(x) for x in xs]
    out_shape = tuple(layer.compute_output_shape(build_shape))
    r = f32(rng.standard_normal(out_shape))
    with tf.GradientTape() as tape:
        for xt in xts:
            tape.watch(xt)
        y = layer(xts if multi else xts[0], training=training)
        loss = tf.reduce_sum(y * tf.constant(r))
    grads = tape.gradient(loss, xts + trainable)
    y = to_np(y)
    if tuple(y.shape) != out_shape:
        raise AssertionError(f"keras_layers/{name}: output shape {y.shape} "
                             f"!= compute_output_shape {out_shape}")
    if cls == "Dropout":
        # Training-mode masks are random draws that bnorm cannot reproduce;
        # record how Keras shares them (noise_shape) as an observation.
        yt = to_np(layer(xts[0], training=True))
        keep = (yt != 0) | (xs[0] == 0)
        shared = bool(np.all(keep == keep[:, :1, :1, :]))
        observations["training_mask_shared_over_h_w"] = shared
        observations["training_kept_values_scaled_by"] = float(
            np.median(yt[yt != 0] / xs[0][yt != 0]))

    arrays = {}
    for i, x in enumerate(xs):
        arrays[f"x{i}" if multi else "x"] = x
    for n in weight_names:
        arrays[n] = initial[n]
    if data is not None:
        arrays["adapt_data"] = data
    arrays.update(y=y, r=r)
    for i in range(len(xs)):
        g = grads[i]
        arrays[f"dx{i}" if multi else "dx"] = \
            to_np(g) if g is not None else np.zeros_like(xs[i])
    for v, g in zip(trainable, grads[len(xs):]):
        arrays[f"d_{v.name}"] = to_np(g)
    if cls == "BatchNormalization":
        arrays["moving_mean_after"] = to_np(layer.moving_mean)
        arrays["moving_variance_after"] = to_np(layer.moving_variance)

    config = {
        "layer": f"keras.layers.{cls}",
        "class_name": cls,
        "backend": keras.backend.backend(),
        "dtype": "float32",
        "args": {k: jsonable(v) for k, v in args.items()},
        "keras_config": {k: jsonable(v) for k, v in layer.get_config().items()
                         if k not in ("name", "dtype", "trainable")
                         and not isinstance(v, dict)},
        "data_format": fmt,
        "input_shapes": [list(x.shape) for x in xs],
        "output_shape": list(out_shape),
        "weight_names": weight_names,
        "trainable_weight_names": [v.name for v in trainable],
        "training": training,
        "computed_by": "layer(x, training=...) called eagerly under "
                       "tf.GradientTape; dx* and d_<weight> are the "
                       "gradients of sum(y * r)",
    }
    if spec.get("adapt"):
        config["adapt"] = "layer.adapt(adapt_data) before the call"
    extra = {"observations": observations} if observations else None
    save_case("keras_layers", name, config, arrays, extra)


# --------------------------------------------------------------------------
# keras_resnet: a small residual network, Keras functional API
# --------------------------------------------------------------------------

RESNET_CASES = [
    dict(name="sgd_momentum", optimizer="SGD"),
    dict(name="adam", optimizer="Adam"),
]
RESNET_BATCH, RESNET_STEPS, RESNET_CLASSES = 8, 3, 3
RESNET_IMAGE = (8, 8, 2)


def build_resnet():
    """Every layer named explicitly, so that the C++ side can map weights
    by name whatever order either side creates them in."""
    L = keras.layers

    def conv(f, k, s, n):
        return L.Conv2D(f, k, strides=s, padding="same", use_bias=False,
                        name=n)

    def bn(n, **kw):
        return L.BatchNormalization(name=n, **kw)

    x_in = keras.Input(RESNET_IMAGE, name="input")
    h = conv(4, 3, 1, "stem_conv")(x_in)
    h = bn("stem_bn", momentum=0.9)(h)
    h = L.ReLU(name="stem_relu")(h)
    # identity block
    b = conv(4, 3, 1, "block1_conv1")(h)
    b = bn("block1_bn1")(b)
    b = L.Activation("relu", name="block1_relu1")(b)
    b = conv(4, 3, 1, "block1_conv2")(b)
    b = bn("block1_bn2", epsilon=1e-5)(b)
    h = L.Add(name="block1_add")([b, h])
    h = L.ReLU(name="block1_out")(h)
    # projection block, stride 2
    b = conv(8, 3, 2, "block2_conv1")(h)
    b = bn("block2_bn1")(b)
    b = L.ReLU(name="block2_relu1")(b)
    b = conv(8, 3, 1, "block2_conv2")(b)
    b = bn("block2_bn2")(b)
    s = conv(8, 1, 2, "block2_shortcut_conv")(h)
    s = bn("block2_shortcut_bn")(s)
    h = L.Add(name="block2_add")([b, s])
    h = L.Activation("relu", name="block2_out")(h)
    h = L.GlobalAveragePooling2D(name="pool")(h)
    out = L.Dense(RESNET_CLASSES, activation="softmax", name="head")(h)
    return keras.Model(x_in, out, name="resnet")


def resnet_graph(model) -> list[dict]:
    keys = ["filters", "kernel_size", "strides", "padding", "use_bias",
            "axis", "momentum", "epsilon", "activation", "units",
            "max_value", "negative_slope", "threshold", "keepdims"]
    out = []
    for layer in model.layers:
        cfg = layer.get_config()
        kept = {k: jsonable(cfg[k]) for k in keys if k in cfg}
        inbound = []
        for node in layer._inbound_nodes:
            for t in node.input_tensors:
                inbound.append(t._keras_history.operation.name)
        out.append({"class_name": type(layer).__name__, "name": layer.name,
                    "inbound": inbound, "config": kept})
    return out


def resnet_weights(model) -> dict[str, np.ndarray]:
    return {f"{v.path.split('/')[-2]}_{v.name}": to_np(v)
            for v in model.weights}


def resnet_data():
    rng = case_rng("keras_resnet", "data")
    h, w, c = RESNET_IMAGE
    n = RESNET_BATCH * RESNET_STEPS
    x = f32(rng.standard_normal((n + RESNET_BATCH, h, w, c)))
    proj = rng.standard_normal((h * w * c, RESNET_CLASSES))
    y = np.argmax(x.reshape(len(x), -1) @ proj, axis=1).astype(np.int64)
    model = build_resnet()
    init = {}
    for v in model.weights:
        shape = tuple(v.shape)
        var = v.name
        if var == "kernel":
            rf = int(np.prod(shape[:-2])) if len(shape) == 4 else 1
            val = glorot(rng, shape, rf * shape[-2], rf * shape[-1])
        elif var == "bias":
            val = rng.normal(0.0, 0.1, shape)
        elif var == "gamma":
            val = rng.uniform(0.7, 1.3, shape)
        elif var == "beta":
            val = rng.normal(0.0, 0.2, shape)
        elif var == "moving_mean":
            val = rng.normal(0.0, 0.3, shape)
        else:
            val = rng.uniform(0.5, 1.5, shape)
        init[f"{v.path.split('/')[-2]}_{var}"] = f32(val)
    return init, x[:n], y[:n], x[n:], y[n:]


def make_resnet_optimizer(kind: str):
    if kind == "SGD":
        return keras.optimizers.SGD(learning_rate=0.05, momentum=0.9,
                                    name="sgd")
    return keras.optimizers.Adam(learning_rate=0.01, name="adam")


def keras_resnet_case(spec: dict, data) -> None:
    name = spec["name"]
    init, x, y, x_eval, y_eval = data
    keras.utils.set_random_seed(1234)
    model = build_resnet()
    names = list(resnet_weights(model))
    for v, n in zip(model.weights, names):
        v.assign(init[n])
    preds_initial = to_np(model.predict(x_eval, verbose=0))
    # Gradients of the first batch's loss at the initial weights, training
    # mode (what the first optimizer step applies).
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        p0 = model(x[:RESNET_BATCH], training=True)
        loss0 = loss_fn(y[:RESNET_BATCH], p0)
    tw = model.trainable_weights
    g0 = tape.gradient(loss0, tw)
    grads0 = {f"grad0_{v.path.split('/')[-2]}_{v.name}": to_np(g)
              for v, g in zip(tw, g0)}
    # That call also moved the BN statistics: put them back.
    for v, n in zip(model.weights, names):
        v.assign(init[n])

    opt = make_resnet_optimizer(spec["optimizer"])
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy",
                  jit_compile=False)
    losses = []
    for s in range(RESNET_STEPS):
        sl = slice(s * RESNET_BATCH, (s + 1) * RESNET_BATCH)
        out = model.train_on_batch(x[sl], y[sl])
        losses.append(float(out[0] if isinstance(out, list) else out))
    after = resnet_weights(model)
    preds = to_np(model.predict(x_eval, verbose=0))

    arrays = {n: init[n] for n in names}
    arrays.update(x=x, y=y, x_eval=x_eval, y_eval=y_eval,
                  predictions_initial=preds_initial, loss0=f32(loss0))
    arrays.update(grads0)
    arrays.update(step_losses=f32(losses))
    arrays.update({f"{k}_after": v for k, v in after.items()})
    arrays.update(predictions_after=preds)
    config = {
        "model": "keras.Model (functional): stem Conv2D-BN-ReLU, an "
                 "identity residual block, a stride-2 projection block, "
                 "GlobalAveragePooling2D, Dense(softmax)",
        "layers": resnet_graph(model),
        "input_shape": list(RESNET_IMAGE),
        "weight_names": names,
        "weight_naming": "<layer name>_<variable name>, in "
                         "model.weights order",
        "trainable_weight_names": [f"{v.path.split('/')[-2]}_{v.name}"
                                   for v in tw],
        "loss": "sparse_categorical_crossentropy",
        "optimizer": type(opt).__name__,
        "optimizer_config": optimizer_config(opt),
        "training": "model.train_on_batch(x[8s:8s+8], y[8s:8s+8]) for "
                    f"s = 0..{RESNET_STEPS - 1}",
        "step_losses": "train_on_batch's return: the batch loss before "
                       "that step's update",
        "grads0": "grad0_<weight>: d loss / d weight of batch 0 at the "
                  "initial weights, training mode (tf.GradientTape)",
        "batch_size": RESNET_BATCH,
        "steps": RESNET_STEPS,
        "jit_compile": False,
        "predict": "model.predict(x_eval), inference mode, before and "
                   "after training",
    }
    save_case("keras_resnet", name, config, arrays)


def keras_resnet_family() -> None:
    data = resnet_data()
    for spec in RESNET_CASES:
        keras_resnet_case(spec, data)


# --------------------------------------------------------------------------
# torch_bn
# --------------------------------------------------------------------------

TORCH_CASES = [
    dict(name="bn1d_nc_default", module="BatchNorm1d", shape=(16, 5)),
    dict(name="bn1d_nc_default_init", module="BatchNorm1d", shape=(16, 5),
         init="default"),
    dict(name="bn1d_nc_n2", module="BatchNorm1d", shape=(2, 5)),
    dict(name="bn1d_nc_momentum_0.3", module="BatchNorm1d", shape=(16, 5),
         momentum=0.3),
    dict(name="bn1d_nc_momentum_none", module="BatchNorm1d", shape=(16, 5),
         momentum=None),
    dict(name="bn1d_nc_eps_1e-3", module="BatchNorm1d", shape=(16, 5),
         eps=1e-3),
    dict(name="bn1d_nc_affine_false", module="BatchNorm1d", shape=(16, 5),
         affine=False),
    dict(name="bn1d_nc_no_running_stats", module="BatchNorm1d",
         shape=(16, 5), track_running_stats=False),
    dict(name="bn1d_ncl_default", module="BatchNorm1d", shape=(6, 4, 7)),
    dict(name="bn1d_ncl_momentum_none", module="BatchNorm1d",
         shape=(6, 4, 7), momentum=None),
    dict(name="bn2d_nchw_default", module="BatchNorm2d", shape=(4, 3, 5, 6)),
    dict(name="bn2d_nchw_momentum_0.3", module="BatchNorm2d",
         shape=(4, 3, 5, 6), momentum=0.3),
    dict(name="bn2d_nchw_momentum_none", module="BatchNorm2d",
         shape=(4, 3, 5, 6), momentum=None),
    dict(name="bn2d_nchw_eps_1e-3", module="BatchNorm2d", shape=(4, 3, 5, 6),
         eps=1e-3),
    dict(name="bn2d_nchw_affine_false", module="BatchNorm2d",
         shape=(4, 3, 5, 6), affine=False),
    dict(name="bn2d_nchw_no_running_stats", module="BatchNorm2d",
         shape=(4, 3, 5, 6), track_running_stats=False),
    dict(name="bn2d_nchw_n2", module="BatchNorm2d", shape=(2, 3, 2, 2)),
]


def torch_bn_case(spec_in: dict) -> None:
    spec = dict(momentum=0.1, eps=1e-5, affine=True, track_running_stats=True,
                init="random")
    spec.update(spec_in)
    name = spec["name"]
    shape = tuple(spec["shape"])
    c = shape[1]
    rng = case_rng("torch_bn", name)
    mean_c = rng.uniform(-4.0, 6.0, c)
    sd_c = rng.uniform(0.5, 3.0, c)

    cls = getattr(torch.nn, spec["module"])
    proto = cls(c, eps=spec["eps"], momentum=spec["momentum"],
                affine=spec["affine"],
                track_running_stats=spec["track_running_stats"])
    proto = proto.to(torch.float32)
    if spec["init"] == "random":
        with torch.no_grad():
            if spec["affine"]:
                proto.weight.copy_(torch.from_numpy(
                    f32(rng.uniform(0.5, 1.5, c))))
                proto.bias.copy_(torch.from_numpy(f32(rng.normal(0, 0.5, c))))
            if spec["track_running_stats"]:
                proto.running_mean.copy_(torch.from_numpy(
                    f32(rng.normal(0.0, 2.0, c))))
                proto.running_var.copy_(torch.from_numpy(
                    f32(rng.uniform(0.5, 2.0, c))))

    x = channel_data(rng, shape, 1, mean_c, sd_c)
    dy = rng.standard_normal(shape).astype(np.float32)
    x_steps = np.stack([
        channel_data(rng, shape, 1, mean_c + rng.normal(0.0, 0.5, c), sd_c)
        for _ in range(N_STEPS)])

    arrays: dict[str, np.ndarray] = {}
    if spec["affine"]:
        arrays["weight"] = to_np(proto.weight)
        arrays["bias"] = to_np(proto.bias)
    if spec["track_running_stats"]:
        arrays["running_mean"] = to_np(proto.running_mean)
        arrays["running_var"] = to_np(proto.running_var)
        nbt_initial = int(proto.num_batches_tracked.item())

    # Training-mode forward + autograd from the initial state.
    m = copy.deepcopy(proto)
    m.train()
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    y = m(xt)
    (y * torch.from_numpy(dy)).sum().backward()
    y_training = to_np(y)
    dx = to_np(xt.grad)
    if spec["affine"]:
        dweight = to_np(m.weight.grad)
        dbias = to_np(m.bias.grad)

    # Eval-mode forward from the initial state.
    m = copy.deepcopy(proto)
    m.eval()
    with torch.no_grad():
        y_inference = to_np(m(torch.from_numpy(x.copy())))

    # N_STEPS training-mode forwards, then eval.
    m = copy.deepcopy(proto)
    m.train()
    with torch.no_grad():
        for i in range(N_STEPS):
            m(torch.from_numpy(x_steps[i].copy()))
        m.eval()
        y_inference_after = to_np(m(torch.from_numpy(x.copy())))

    arrays.update(x=x, y_training=y_training, y_inference=y_inference, dy=dy,
                  dx=dx)
    if spec["affine"]:
        arrays.update(dweight=dweight, dbias=dbias)
    arrays["x_steps"] = x_steps
    if spec["track_running_stats"]:
        arrays["running_mean_after"] = to_np(m.running_mean)
        arrays["running_var_after"] = to_np(m.running_var)
        arrays["num_batches_tracked_after"] = np.array(
            m.num_batches_tracked.item(), dtype=np.int64)
    arrays["y_inference_after"] = y_inference_after

    config = {
        "module": f"torch.nn.{spec['module']}",
        "num_features": c,
        "momentum": spec["momentum"],
        "eps": spec["eps"],
        "affine": spec["affine"],
        "track_running_stats": spec["track_running_stats"],
        "dtype": "float32",
        "input_shape": list(shape),
        "initial_state": spec["init"],
        "steps": N_STEPS,
    }
    if spec["track_running_stats"]:
        config["num_batches_tracked_initial"] = nbt_initial
    notes = []
    if not spec["track_running_stats"]:
        notes.append("track_running_stats=False: no running buffers exist; "
                     "eval() also normalizes with batch statistics")
    if spec["momentum"] is None:
        notes.append("momentum=None: cumulative moving average with factor "
                     "1/num_batches_tracked; the first training step "
                     "overwrites the initial running stats")
    save_case("torch_bn", name, config, arrays,
              {"notes": notes} if notes else None)


# --------------------------------------------------------------------------
# onnx
# --------------------------------------------------------------------------

def copy_onnx_license() -> list[str]:
    dist = importlib.metadata.distribution("onnx")
    copied = []
    for f in dist.files or []:
        if ".dist-info" in str(f) and f.name in ("LICENSE", "NOTICE"):
            shutil.copyfile(dist.locate_file(f), ONNX_DIR / f.name)
            copied.append(f.name)
    if "LICENSE" not in copied:
        raise RuntimeError("onnx LICENSE not found in its dist-info")
    return sorted(copied)


def write_onnx_case(case) -> None:
    out = ONNX_DIR / case.name
    ds = out / "test_data_set_0"
    ds.mkdir(parents=True)
    model = case.model
    (out / "model.onnx").write_bytes(model.SerializeToString())
    inputs, outputs = case.data_sets[0]
    # Same serialization as onnx.backend.test.cmd_tools.generate_data.
    for j, arr in enumerate(inputs):
        (ds / f"input_{j}.pb").write_bytes(numpy_helper.from_array(
            arr, model.graph.input[j].name).SerializeToString())
    for j, arr in enumerate(outputs):
        (ds / f"output_{j}.pb").write_bytes(numpy_helper.from_array(
            arr, model.graph.output[j].name).SerializeToString())

    # expected.json: our own index of the files.
    node = model.graph.node[0]
    opset = {o.domain: o.version for o in model.opset_import}
    schema = onnx.defs.get_schema(node.op_type, opset.get("", 1), node.domain)
    explicit = {}
    for a in node.attribute:
        explicit[a.name] = onnx.helper.get_attribute_value(a)
    defaults = {}
    for aname, adef in sorted(schema.attributes.items()):
        if adef.default_value.name:
            defaults[aname] = onnx.helper.get_attribute_value(
                adef.default_value)
    effective = dict(defaults)
    effective.update(explicit)

    def describe(kind, values, names, formal):
        rows = []
        for j, name in enumerate(names):
            t = onnx.TensorProto()
            t.ParseFromString((ds / f"{kind}_{j}.pb").read_bytes())
            a = numpy_helper.to_array(t)
            rows.append({
                "index": j,
                "name": name,
                "role": formal[j].name,
                "file": f"test_data_set_0/{kind}_{j}.pb",
                "shape": list(a.shape),
                "dtype": str(a.dtype),
                "tensor_name_in_pb": t.name,
            })
        return rows

    expected = {
        "generator": GENERATOR,
        "onnx_version": onnx.__version__,
        "test": case.name,
        "op_type": node.op_type,
        "opset_import": [{"domain": o.domain, "version": o.version}
                         for o in model.opset_import],
        "ir_version": model.ir_version,
        "schema_since_version": schema.since_version,
        "attributes_explicit": explicit,
        "attributes": effective,
        "attribute_defaults": defaults,
        "inputs": describe("input", inputs, list(node.input),
                           schema.inputs),
        "outputs": describe("output", outputs, list(node.output),
                            schema.outputs),
        "tolerance_used_by_onnx_backend_tests": {"rtol": case.rtol,
                                                 "atol": case.atol},
        "notes": "float attributes (and the schema defaults) are float32 in "
                 "ONNX; the values here are those float32 values printed "
                 "as double. Default attributes come from the opset schema.",
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(f"  onnx/{case.name}: inputs {[r['role'] for r in expected['inputs']]}"
          f" outputs {[r['role'] for r in expected['outputs']]}")


def onnx_family() -> None:
    from onnx.backend.test.case import node as onnx_node_cases

    ONNX_DIR.mkdir(parents=True, exist_ok=True)
    for p in ONNX_DIR.glob("test_batchnorm_*"):
        shutil.rmtree(p)
    # Importing the case modules runs every operator's exporter (seeded);
    # only BatchNormalization cases are kept.  Silence other ops' warnings.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        all_cases = onnx_node_cases.collect_testcases("BatchNormalization")
    cases = [c for c in all_cases if c.name.startswith("test_batchnorm_")]
    if not cases:
        raise RuntimeError("onnx produced no BatchNormalization node tests")
    for case in sorted(cases, key=lambda c: c.name):
        write_onnx_case(case)
    copied = copy_onnx_license()
    names = "\n".join(f"- `{c.name}/`" for c in sorted(cases,
                                                        key=lambda c: c.name))
    (ONNX_DIR / "README.md").write_text(f"""# ONNX BatchNormalization backend test data

Origin: the ONNX project's own backend node tests for `BatchNormalization`
(`onnx/backend/test/case/node/batch_normalization.py`), as shipped in the
`onnx` Python package version {onnx.__version__} (https://github.com/onnx/onnx).
The {onnx.__version__} wheel does not include the serialized
`onnx/backend/test/data/node/` files, and its `cmd_tools generate-data` only
writes model tests, so `tests/parity/generate_fixtures.py` serializes the
package's own node test cases (`onnx.backend.test.case.node.collect_testcases`)
exactly the way `onnx.backend.test.cmd_tools` does: `model.onnx` plus
`test_data_set_0/input_<j>.pb` / `output_<j>.pb` (TensorProto). The data are
produced by ONNX's exporter, which seeds numpy with 0, so they are
reproducible.

Copyright (c) ONNX Project Contributors. Licensed under the Apache License,
Version 2.0: see `LICENSE` (and `NOTICE`) in this directory, copied from the
package's dist-info ({', '.join(copied)}).

`expected.json` in each directory is NOT part of ONNX: it is written by
bnorm's generator and lists the node attributes (explicit and effective),
the input/output names in order with their ONNX schema roles, the `.pb` file
of each, shapes and dtypes.

Directories:
{names}
""")


# --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    all_families = ["keras_bn", "keras_frozen", "keras_seed", "keras_conv",
                    "keras_pool", "keras_flatten", "keras_cnn", "torch_bn",
                    "onnx", "keras_layers", "keras_resnet"]
    ap.add_argument("--only", choices=all_families, action="append",
                    help="generate only these families")
    args = ap.parse_args()
    families = args.only or all_families
    print("versions:", json.dumps(VERSIONS))
    if "torch_bn" in families and torch is None:
        raise RuntimeError("the torch_bn family needs PyTorch installed")
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("Keras must run on the TensorFlow backend")

    for fam in families:
        if fam != "onnx" and (FIXTURES_DIR / fam).exists():
            shutil.rmtree(FIXTURES_DIR / fam)
    if "keras_bn" in families:
        print("keras_bn")
        for spec in KERAS_BN_CASES:
            keras_bn_case(spec)
    if "keras_frozen" in families:
        print("keras_frozen")
        for spec in FROZEN_CASES:
            keras_frozen_case(spec)
    if "keras_seed" in families:
        print("keras_seed")
        data = seed_data()
        for spec in SEED_CASES:
            keras_seed_case(spec, data)
    if "keras_conv" in families:
        print("keras_conv")
        for spec in CONV_CASES:
            keras_conv_case(spec)
    if "keras_pool" in families:
        print("keras_pool")
        for spec in POOL_CASES:
            keras_pool_case(spec)
    if "keras_flatten" in families:
        print("keras_flatten")
        for spec in FLATTEN_CASES:
            keras_flatten_case(spec)
    if "keras_cnn" in families:
        print("keras_cnn")
        keras_cnn_family()
    if "torch_bn" in families:
        print("torch_bn")
        for spec in TORCH_CASES:
            torch_bn_case(spec)
    if "onnx" in families:
        print("onnx")
        onnx_family()
    if "keras_layers" in families:
        print("keras_layers")
        for spec in LAYER_CASES:
            keras_layers_case(spec)
    if "keras_resnet" in families:
        print("keras_resnet")
        keras_resnet_family()
    return 0


if __name__ == "__main__":
    sys.exit(main())
