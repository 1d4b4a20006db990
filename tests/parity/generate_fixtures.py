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
import torch  # noqa: E402
from onnx import numpy_helper  # noqa: E402

torch.set_num_threads(1)
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
    "torch": torch.__version__,
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
    if isinstance(t, torch.Tensor):
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
    # 4-D channels-first (N, C, H, W)
    dict(name="nchw_axis1", shape=(4, 3, 5, 6), axis=1),
    dict(name="nchw_axis1_momentum_0.5", shape=(4, 3, 5, 6), axis=1,
         momentum=0.5),
    dict(name="nchw_axis1_no_scale", shape=(4, 3, 5, 6), axis=1, scale=False),
    dict(name="nchw_axis1_eps_1e-5", shape=(2, 3, 4, 4), axis=1,
         epsilon=1e-5),
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
    ap.add_argument("--only", choices=["keras_bn", "keras_frozen",
                                       "keras_seed", "torch_bn", "onnx"],
                    action="append", help="generate only these families")
    args = ap.parse_args()
    families = args.only or ["keras_bn", "keras_frozen", "keras_seed",
                             "torch_bn", "onnx"]
    print("versions:", json.dumps(VERSIONS))
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
    if "torch_bn" in families:
        print("torch_bn")
        for spec in TORCH_CASES:
            torch_bn_case(spec)
    if "onnx" in families:
        print("onnx")
        onnx_family()
    return 0


if __name__ == "__main__":
    sys.exit(main())
