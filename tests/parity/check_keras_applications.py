#!/usr/bin/env python3
"""Local check (not CI): bnorm predict on real keras.applications models.

Builds ResNet50 and EfficientNetB0 with Keras 3 (weights=None, default 1000
classes, classifier_activation=None so that logits are compared; --softmax
keeps the softmax head), gives every BatchNormalization random moving statistics
(moving_mean ~ N(0, 0.1), moving_variance ~ U(0.5, 2); the other weights stay
at their seeded initializer values), saves each as .keras and as legacy .h5
into a temporary directory (too large to commit), and runs

  bnorm predict --model <file> --input x.npy --output y.npy

on 2 random images, comparing with Keras's own predictions,
model(x, training=False).  Error: max |a - b| / max(1, |b|).

Exit 0 when every comparison is within --tol (default 1e-5), 1 when one is
not or a bnorm command fails, 2 when the bnorm binary or
'predict --input/--output' is missing.

  <venv>/bin/python tests/parity/check_keras_applications.py \\
      --bnorm build/tools/cli/bnorm [--size 224] [--model resnet50] [--keep]

--size sets the square input side (default 224; with weights=None Keras
accepts smaller ones, e.g. 96, which makes the run much quicker).
"""

from __future__ import annotations

import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"

import argparse  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402

from keras_check_util import rel_err, run, short  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_BNORM = REPO / "build" / "tools" / "cli" / "bnorm"
CMD_TIMEOUT = 600

# name -> (constructor name in keras.applications, input value range)
MODELS = {
    "resnet50": ("ResNet50", (-120.0, 120.0)),       # caffe-style inputs
    "efficientnetb0": ("EfficientNetB0", (0.0, 255.0)),  # rescales inside
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bnorm", default=str(DEFAULT_BNORM))
    ap.add_argument("--model", action="append", choices=sorted(MODELS))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--softmax", action="store_true",
                    help="keep the softmax head (default: logits, because "
                         "an untrained 1000-class softmax is nearly uniform, "
                         "so errors in it are tiny in absolute terms)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    bnorm = args.bnorm
    if not (os.path.isfile(bnorm) and os.access(bnorm, os.X_OK)):
        print(f"check_keras_applications: no executable bnorm at {bnorm} "
              f"(build it, or pass --bnorm PATH)", file=sys.stderr)
        return 2
    ph = run([bnorm, "predict", "--help"], CMD_TIMEOUT)
    text = ph.stdout + ph.stderr
    if ph.returncode != 0 or "--input" not in text or "--output" not in text:
        print(f"check_keras_applications: {bnorm} lacks "
              f"'bnorm predict --input X.npy --output Y.npy'", file=sys.stderr)
        return 2

    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bnorm_keras_apps_"))
    failures = 0
    worst = (0.0, "-")
    rows = []
    for name in args.model or sorted(MODELS):
        ctor, (lo, hi) = MODELS[name]
        seed = zlib.crc32(f"keras_applications/{name}".encode())
        rng = np.random.default_rng(seed)
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed % (2**31))
        t0 = time.time()
        model = getattr(keras.applications, ctor)(
            weights=None, input_shape=(args.size, args.size, 3),
            classifier_activation="softmax" if args.softmax else None)
        for v in model.weights:
            kind = v.path.rsplit("/", 1)[-1]
            if kind == "moving_mean":
                v.assign(rng.normal(0.0, 0.1, v.shape).astype(np.float32))
            elif kind == "moving_variance":
                v.assign(rng.uniform(0.5, 2.0, v.shape).astype(np.float32))
        x = rng.uniform(lo, hi, (2, args.size, args.size, 3)).astype(np.float32)
        y = keras.ops.convert_to_numpy(model(x, training=False))
        d = tmp / name
        d.mkdir()
        np.save(d / "x.npy", x)
        np.save(d / "y_keras.npy", y)
        for fname in ("model.keras", "model.h5"):
            model.save(d / fname)
        print(f"{name}: {len(model.layers)} layers, {model.count_params()} "
              f"params, Keras top-1 {y.argmax(1).tolist()} output range "
              f"[{float(y.min()):.3g}, {float(y.max()):.3g}] ({time.time() - t0:.0f}s)", flush=True)
        for fname in ("model.keras", "model.h5"):
            out = d / f"y_{fname.replace('.', '_')}.npy"
            t0 = time.time()
            p = run([bnorm, "predict", "--model", str(d / fname),
                     "--input", str(d / "x.npy"), "--output", str(out)], CMD_TIMEOUT)
            if p.returncode != 0 or not out.exists():
                rows.append((name, fname, "FAIL",
                             f"rc {p.returncode}: {short(p.stderr or p.stdout)}"))
                failures += 1
                continue
            e = rel_err(np.load(out), y)
            ok = e <= args.tol
            failures += 0 if ok else 1
            if e > worst[0]:
                worst = (e, f"{name}/{fname}")
            rows.append((name, fname, "ok" if ok else "FAIL",
                         f"{e:.3g}  ({time.time() - t0:.1f}s)"))
    print(f"\n{'model':<16}{'file':<13}{'res':<6}max rel err")
    for r in rows:
        print(f"{r[0]:<16}{r[1]:<13}{r[2]:<6}{r[3]}")
    print(f"\nworst relative error {worst[0]:.3g} ({worst[1]}); tolerance "
          f"{args.tol:g} (max |a-b| / max(1, |b|)); input {args.size}x"
          f"{args.size}x3, 2 samples")
    if args.keep:
        print(f"files kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
