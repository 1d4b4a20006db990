#!/usr/bin/env python3
"""Record the golden data of tests/python/test_keras_equivalence.py from real Keras 3.

How the committed files were made (Python 3.11, tensorflow-cpu 2.20.0, keras 3.15.1,
numpy, as pinned in tests/parity/requirements.txt):

    /work/venv-parity/bin/python tests/python/generate_keras_equivalence.py

Any virtualenv with those packages will do; `--only CASE ...` regenerates some cases.

For every case of equivalence_cases.CASES this script

  1. draws the case's inputs with numpy.random.default_rng(crc32("keras_equivalence/<case>"))
     (float32 features, int64 labels that a random linear "teacher" assigns, so that
     training has something to learn);
  2. seeds Keras with keras.utils.set_random_seed (here only: the cases never do) and builds
     the case's model, so its initial weights are Keras's own initializers' values; the
     frozen_bn case then gives its BatchNormalization "pre-trained" values (gamma, beta,
     moving mean and variance drawn from the same generator) so that freezing it matters;
  3. runs the case function with the real keras module, twice, and refuses to write
     anything unless both runs agree bit for bit (the data must not depend on thread
     timing or op nondeterminism);
  4. writes tests/python/fixtures/keras_equivalence/<case>.npz in the format of
     equivalence_cases.pack (inputs, w0..wN, out_<result>, versions, generated_by).

TensorFlow runs on the CPU, single-threaded, with op determinism on. The .npz contents are
reproducible; the files' bytes are not (zip member timestamps).
"""

from __future__ import annotations

import os

# Must be set before TensorFlow / Keras are imported.
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.experimental.enable_op_determinism()

import keras  # noqa: E402

import equivalence_cases as cases  # noqa: E402  (this script's own directory)

HERE = pathlib.Path(__file__).resolve().parent
OUT_DIR = HERE / "fixtures" / "keras_equivalence"
FAMILY = "keras_equivalence"
GENERATED_BY = ("tests/python/generate_keras_equivalence.py: real Keras "
                f"{keras.__version__} (TensorFlow {tf.__version__} backend, CPU, "
                "1 thread, op determinism) ran the case of tests/python/equivalence_cases.py")
VERSIONS = [f"python={platform.python_version()}", f"numpy={np.__version__}",
            f"tensorflow={tf.__version__}", f"keras={keras.__version__}"]

# Rows (train, held-out) and input shape of each case. The seed model's 784 features
# are Fashion-MNIST's; frozen_bn and fit_epochs train the same architecture on fewer
# features so that the committed files stay small (the first Dense kernel is 784x64
# floats, 200 kB for each copy of it).
SHAPES = {
    "seed_model": dict(rows=96, eval_rows=32, shape=(784,), classes=10),
    "residual_cnn": dict(rows=128, eval_rows=40, shape=(8, 8, 3), classes=4),
    "frozen_bn": dict(rows=128, eval_rows=50, shape=(64,), classes=10),
    "fit_epochs": dict(rows=200, eval_rows=0, shape=(64,), classes=10),
    "sgd_conv_bn": dict(rows=96, eval_rows=40, shape=(8, 8, 3), classes=3),
}


def case_seed(case: str) -> int:
    return zlib.crc32(f"{FAMILY}/{case}".encode())


def draw_inputs(case: str, rng: np.random.Generator) -> dict:
    """Features and teacher labels. Flat features look like image pixels (k/255, about
    half of them 0); images are N(0, 1) rounded to multiples of 1/8 (so that the
    files compress: they are a third of their size otherwise)."""
    spec = SHAPES[case]
    n = spec["rows"] + spec["eval_rows"]
    shape = (n, *spec["shape"])
    if len(spec["shape"]) == 1:
        pixels = rng.integers(0, 256, size=shape) * (rng.random(shape) < 0.5)
        x = (pixels / 255.0).astype(np.float32)
    else:
        x = (np.round(rng.normal(0.0, 1.0, size=shape) * 8.0) / 8.0).astype(np.float32)
    flat = x.reshape(n, -1).astype(np.float64)
    teacher = rng.normal(0.0, 1.0, size=(flat.shape[1], spec["classes"]))
    y = np.argmax((flat - flat.mean(axis=0)) @ teacher, axis=1).astype(np.int64)
    inputs = {"x": x[:spec["rows"]], "y": y[:spec["rows"]]}
    if spec["eval_rows"]:
        inputs["x_eval"] = x[spec["rows"]:]
        inputs["y_eval"] = y[spec["rows"]:]
    return inputs


def pretrained_bn(model, weights: list, rng: np.random.Generator) -> list:
    """The weights with every BatchNormalization's gamma ~ U(0.5, 1.5), beta ~ N(0, 0.5),
    moving_mean ~ N(0.5, 0.5), moving_variance ~ U(0.5, 2): what a trained layer has,
    unlike the initializers' 1, 0, 0, 1."""
    weights = list(weights)
    at = 0
    for layer in model.layers:
        count = len(layer.get_weights())
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = weights[at].shape
            weights[at:at + 4] = [rng.uniform(0.5, 1.5, shape), rng.normal(0.0, 0.5, shape),
                                  rng.normal(0.5, 0.5, shape), rng.uniform(0.5, 2.0, shape)]
            weights[at:at + 4] = [w.astype(np.float32) for w in weights[at:at + 4]]
        at += count
    return weights


def run_keras(case: str, data: dict) -> dict:
    run, _ = cases.CASES[case]
    keras.backend.clear_session()
    return run(keras, data)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.asarray(a[k]).dtype == np.asarray(b[k]).dtype
        and np.array_equal(a[k], b[k]) for k in a)


def generate(case: str) -> pathlib.Path:
    _, build = cases.CASES[case]
    rng = np.random.default_rng(case_seed(case))
    inputs = draw_inputs(case, rng)

    keras.backend.clear_session()
    keras.utils.set_random_seed(case_seed(case) % 2**31)
    model = build(keras, inputs)
    weights = [np.asarray(w) for w in model.get_weights()]
    if case == "frozen_bn":
        weights = pretrained_bn(model, weights, rng)
    data = {**inputs, "weights": weights}

    results = run_keras(case, data)
    again = run_keras(case, data)
    if not same(results, again):
        raise SystemExit(f"{case}: two Keras runs of the same script differ; nothing written")
    if case == "frozen_bn":  # Keras's semantics, checked on Keras itself
        for i in range(2, 6):
            if not np.array_equal(results[f"final_w{i}"], weights[i]):
                raise SystemExit(f"{case}: Keras changed the frozen BN's weight {i}")

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{case}.npz"
    np.savez_compressed(path, **cases.pack(inputs, weights, results, VERSIONS, GENERATED_BY))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(cases.CASES), metavar="CASE",
                        help="generate these cases only")
    args = parser.parse_args()
    print(" ".join(VERSIONS))
    for case in args.only or cases.CASES:
        start = time.time()
        path = generate(case)
        print(f"{case}: {path.relative_to(HERE.parent.parent)} "
              f"({path.stat().st_size / 1024:.1f} kB, {time.time() - start:.1f} s)")


if __name__ == "__main__":
    sys.exit(main())
