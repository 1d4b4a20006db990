#!/usr/bin/env python3
"""Golden fixtures for the BN family: Batch Renormalization (Keras 3's `renorm`) and Ghost BN
(tf.keras 2's `virtual_batch_size`), made by the real frameworks.

Writes tests/parity/fixtures/keras_bn_family/<case>/{meta.json, *.npy} (the layout of
generate_fixtures.py, docs/parity-fixtures.md). Each case: a layer with random weights and
statistics (so the renorm corrections r, d are far from 1, 0 and the clipping acts), one
training-mode call on x with the gradients of sum(y * dy), the weights after it, then N_STEPS
further training calls and an inference call. Run with the parity venv:
    ../venv-parity/bin/python tests/parity/generate_bn_family.py
"""
from __future__ import annotations

import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"

import importlib.metadata  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
import keras  # noqa: E402
import tf_keras  # noqa: E402

FAMILY = "keras_bn_family"
OUT = pathlib.Path(__file__).resolve().parent / "fixtures" / FAMILY
N_STEPS = 3
VERSIONS = {
    "python": platform.python_version(),
    "numpy": np.__version__,
    "tensorflow": tf.__version__,
    "keras": keras.__version__,
    "tf_keras": importlib.metadata.version("tf_keras"),
}

CASES = [
    # Keras 3 renorm (rmax/rmin/dmax as in the paper's schedule's end points)
    dict(name="renorm_nc", kind="renorm", shape=(32, 5), axis=-1,
         clipping={"rmax": 3.0, "rmin": 1 / 3, "dmax": 5.0}),
    dict(name="renorm_nc_tight_clip", kind="renorm", shape=(16, 4), axis=-1,
         clipping={"rmax": 1.5, "rmin": 0.8, "dmax": 0.5}, momentum=0.9, renorm_momentum=0.9),
    dict(name="renorm_nc_no_clip", kind="renorm", shape=(16, 4), axis=-1, clipping=None),
    dict(name="renorm_nhwc", kind="renorm", shape=(4, 3, 3, 6), axis=-1,
         clipping={"rmax": 2.0, "rmin": 0.5, "dmax": 1.0}),
    dict(name="renorm_nchw_axis1", kind="renorm", shape=(4, 3, 5, 5), axis=1,
         clipping={"rmax": 2.0, "dmax": 1.0}, epsilon=1e-5),
    dict(name="renorm_no_scale_center", kind="renorm", shape=(16, 4), axis=-1,
         clipping={"rmax": 2.0, "rmin": 0.5, "dmax": 1.0}, scale=False, center=False),
    # tf.keras 2 ghost BN
    dict(name="ghost_nc_v8", kind="ghost", shape=(32, 5), axis=-1, virtual_batch_size=8),
    dict(name="ghost_nc_v4_momentum_0.9", kind="ghost", shape=(12, 3), axis=-1,
         virtual_batch_size=4, momentum=0.9),
    dict(name="ghost_nhwc_v2", kind="ghost", shape=(6, 3, 3, 4), axis=-1, virtual_batch_size=2),
    dict(name="ghost_nchw_axis1_v3", kind="ghost", shape=(6, 4, 3, 3), axis=1,
         virtual_batch_size=3),
    dict(name="ghost_nc_whole_batch", kind="ghost", shape=(8, 3), axis=-1, virtual_batch_size=8),
]


def rng_for(case: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{FAMILY}/{case}".encode()))


def f32(a):
    return np.asarray(a, dtype=np.float32)


def data(rng, shape, axis, mean_c, sd_c):
    cs = [1] * len(shape)
    cs[axis] = len(mean_c)
    return f32(rng.standard_normal(shape) * sd_c.reshape(cs) + mean_c.reshape(cs))


def make(spec, shape, init):
    kw = dict(axis=spec["axis"], momentum=spec["momentum"], epsilon=spec["epsilon"],
              center=spec["center"], scale=spec["scale"])
    if spec["kind"] == "renorm":
        layer = keras.layers.BatchNormalization(
            renorm=True, renorm_clipping=spec["clipping"],
            renorm_momentum=spec["renorm_momentum"], **kw)
    else:
        layer = tf_keras.layers.BatchNormalization(
            virtual_batch_size=spec["virtual_batch_size"], **kw)
    layer.build(shape)
    for name, value in init.items():
        var = getattr(layer, name)
        var.assign(np.reshape(value, var.shape))  # ghost weights are (1, 1, C)-shaped
    return layer


def weight_names(layer):
    return [w.name.split("/")[-1].split(":")[0] for w in layer.weights]


def weights(layer):
    return {n: f32(np.reshape(w.numpy(), (-1,))) for n, w in zip(weight_names(layer),
                                                                 layer.weights)}


def case(spec_in):
    spec = dict(momentum=0.99, epsilon=1e-3, center=True, scale=True, renorm_momentum=0.99)
    spec.update(spec_in)
    name, shape = spec["name"], tuple(spec["shape"])
    axis = spec["axis"] % len(shape)
    c = shape[axis]
    rng = rng_for(name)
    mean_c, sd_c = rng.uniform(-3.0, 5.0, c), rng.uniform(0.5, 3.0, c)
    init = {}
    if spec["scale"]:
        init["gamma"] = f32(rng.uniform(0.5, 1.5, c))
    if spec["center"]:
        init["beta"] = f32(rng.normal(0.0, 0.5, c))
    init["moving_mean"] = f32(rng.normal(0.0, 2.0, c))
    if spec["kind"] == "renorm":
        # Keras tracks moving_stddev and derives moving_variance from it; the renorm statistics
        # start away from the data so r and d are far from (1, 0).
        stddev = f32(rng.uniform(0.7, 2.0, c))
        init["moving_stddev"] = stddev
        init["moving_variance"] = f32(np.maximum(stddev * stddev - spec["epsilon"], 0.0))
        init["renorm_mean"] = f32(rng.normal(0.0, 2.0, c))
        init["renorm_stddev"] = f32(rng.uniform(0.3, 3.0, c))
    else:
        init["moving_variance"] = f32(rng.uniform(0.5, 2.0, c))
    x = data(rng, shape, axis, mean_c, sd_c)
    dy = f32(rng.standard_normal(shape))
    x_steps = np.stack([data(rng, shape, axis, mean_c + rng.normal(0, 0.5, c), sd_c)
                        for _ in range(N_STEPS)])

    probe = make(spec, shape, init)
    order = weight_names(probe)
    arrays = {f"init_{n}": v for n, v in weights(probe).items()}

    layer = make(spec, shape, init)
    xt, dyt = tf.constant(x), tf.constant(dy)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=True)
        loss = tf.reduce_sum(y * dyt)
    wrt = [xt] + ([layer.gamma] if spec["scale"] else []) + ([layer.beta] if spec["center"] else [])
    grads = tape.gradient(loss, wrt)
    arrays.update(x=x, dy=dy, y_training=f32(y.numpy()), dx=f32(grads[0].numpy()))
    if spec["scale"]:
        arrays["dgamma"] = f32(np.reshape(grads[1].numpy(), (-1,)))
    if spec["center"]:
        arrays["dbeta"] = f32(np.reshape(grads[-1].numpy(), (-1,)))
    arrays.update({f"after1_{n}": v for n, v in weights(layer).items()})

    layer = make(spec, shape, init)
    arrays["y_inference"] = f32(layer(x, training=False).numpy())
    for i in range(N_STEPS):
        layer(x_steps[i], training=True)
    arrays.update({f"after_steps_{n}": v for n, v in weights(layer).items()})
    arrays["y_inference_after"] = f32(layer(x, training=False).numpy())
    arrays["x_steps"] = x_steps

    config = {k: spec[k] for k in ("kind", "axis", "momentum", "epsilon", "center", "scale")}
    config.update(input_shape=list(shape), channels=c, steps=N_STEPS, weight_order=order,
                  keras_config=json.loads(json.dumps(probe.get_config(), default=str)))
    if spec["kind"] == "renorm":
        config.update(renorm_clipping=spec["clipping"], renorm_momentum=spec["renorm_momentum"],
                      layer="keras.layers.BatchNormalization(renorm=True)")
    else:
        config.update(virtual_batch_size=spec["virtual_batch_size"],
                      layer="tf_keras.layers.BatchNormalization(virtual_batch_size=...)")
    d = OUT / name
    d.mkdir(parents=True)
    for n, a in arrays.items():
        np.save(d / f"{n}.npy", np.ascontiguousarray(a, dtype="<f4"), allow_pickle=False)
    meta = {"family": FAMILY, "case": name, "generator": "tests/parity/generate_bn_family.py",
            "versions": VERSIONS, "config": config, "arrays": list(arrays)}
    (d / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"  {FAMILY}/{name}: {', '.join(arrays)}")


FILES_OUT = OUT.parent / "keras_bn_family_files"


def model_file(name, framework, build, filename):
    """A small model with a family BN layer, trained a few steps (so every weight is non-trivial),
    saved by the framework itself, with inputs and its inference predictions."""
    rng = rng_for("files/" + name)
    x_train = f32(rng.normal(1.0, 2.0, (64, 6)))
    y_train = rng.integers(0, 3, 64)
    framework.utils.set_random_seed(1)
    model = build()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, batch_size=16, epochs=2, verbose=0, shuffle=False)
    x = f32(rng.normal(1.0, 2.0, (10, 6)))
    y = f32(model.predict(x, verbose=0))
    d = FILES_OUT / name
    d.mkdir(parents=True)
    model.save(d / filename)
    np.save(d / "x.npy", x, allow_pickle=False)
    np.save(d / "y.npy", y, allow_pickle=False)
    meta = {"family": "keras_bn_family_files", "case": name,
            "generator": "tests/parity/generate_bn_family.py", "versions": VERSIONS,
            "config": {"file": filename}, "arrays": ["x", "y"]}
    (d / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"  keras_bn_family_files/{name}: {filename}, x, y")


def main():
    for out in (OUT, FILES_OUT):
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
    for spec in CASES:
        case(spec)
    model_file("renorm_keras3", keras, lambda: keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(8),
        keras.layers.BatchNormalization(renorm=True, momentum=0.9, renorm_momentum=0.9,
                                        renorm_clipping={"rmax": 2.0, "rmin": 0.5, "dmax": 1.0}),
        keras.layers.Activation("relu"), keras.layers.Dense(3, activation="softmax")]),
        "model.keras")
    model_file("ghost_tf_keras2", tf_keras, lambda: tf_keras.Sequential([
        tf_keras.Input((6,)), tf_keras.layers.Dense(8),
        tf_keras.layers.BatchNormalization(virtual_batch_size=4, momentum=0.9),
        tf_keras.layers.Activation("relu"), tf_keras.layers.Dense(3, activation="softmax")]),
        "model.h5")


if __name__ == "__main__":
    main()
