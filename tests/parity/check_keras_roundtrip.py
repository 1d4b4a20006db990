#!/usr/bin/env python3
"""Local check (not CI): bnorm's Keras model-file loader and writer against
real Keras, on the keras_files fixtures.

For every case in tests/parity/fixtures/keras_files/ and every model file it
has (model.keras, model.h5, tf2.h5):

  convert  bnorm convert <case>/<file> <tmp>/out.keras, then Keras loads
           out.keras with keras.saving.load_model(out, safe_mode=True) and
           predicts x.npy; compared with y.npy (for tf2.h5 of a case that
           has y_tf2.npy, tf.keras 2's own answer is accepted as well:
           tf.keras 2 computes something else there, see its meta.json)
  predict  bnorm predict --model <case>/<file> --input x.npy --output <tmp>/y.npy
           (several inputs: --input repeated in the model's input order;
           several outputs: --output repeated, one file per output)
  refuse   refuse_* cases: bnorm convert must exit non-zero and its message
           must contain meta.json's "expect_error_substring"
           (case-insensitive)

Error measure: max over elements of |a - b| / max(1, |b|), b = the Keras
reference.  The run fails (exit 1) when any comparison exceeds --tol
(default 1e-5), any command fails, or a refuse case is accepted; exit 2 when
the bnorm binary or one of its commands (convert; predict --input/--output)
is missing.

  <venv>/bin/python tests/parity/check_keras_roundtrip.py \\
      --bnorm build/tools/cli/bnorm [--case NAME ...] [--files model.keras]
"""

from __future__ import annotations

import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

from keras_check_util import rel_err, run, short  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_FIXTURES = HERE / "fixtures" / "keras_files"
DEFAULT_BNORM = REPO / "build" / "tools" / "cli" / "bnorm"
MODEL_FILES = ("model.keras", "model.h5", "tf2.h5")


def probe_bnorm(bnorm: str) -> list[str]:
    """What is missing from the binary (empty when everything is there)."""
    missing = []
    top = run([bnorm, "--help"])
    if top.returncode != 0:
        return [f"'{bnorm} --help' failed: {short(top.stderr or top.stdout)}"]
    if "convert" not in top.stdout:
        missing.append("the 'convert' command (bnorm convert IN OUT)")
    pred = run([bnorm, "predict", "--help"])
    helptext = pred.stdout + pred.stderr
    if pred.returncode != 0 or "--input" not in helptext or \
            "--output" not in helptext:
        missing.append("'bnorm predict --input X.npy --output Y.npy'")
    return missing


def arrays(d: pathlib.Path, stem: str) -> list[np.ndarray]:
    one = d / f"{stem}.npy"
    if one.exists():
        return [np.load(one)]
    out = []
    while (d / f"{stem}{len(out)}.npy").exists():
        out.append(np.load(d / f"{stem}{len(out)}.npy"))
    return out


def input_paths(d: pathlib.Path) -> list[pathlib.Path]:
    if (d / "x.npy").exists():
        return [d / "x.npy"]
    out = []
    while (d / f"x{len(out)}.npy").exists():
        out.append(d / f"x{len(out)}.npy")
    return out


def compare(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    if len(got) != len(want):
        return float("inf")
    return max(rel_err(g, w) for g, w in zip(got, want))


def keras_predict(path: pathlib.Path, xs: list[np.ndarray]) -> list[np.ndarray]:
    import keras
    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    y = model(xs if len(xs) > 1 else xs[0], training=False)
    ys = list(y.values()) if isinstance(y, dict) else \
        (list(y) if isinstance(y, (list, tuple)) else [y])
    return [keras.ops.convert_to_numpy(t) for t in ys]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bnorm", default=str(DEFAULT_BNORM),
                    help="bnorm CLI binary (default: build/tools/cli/bnorm)")
    ap.add_argument("--fixtures", default=str(DEFAULT_FIXTURES))
    ap.add_argument("--case", action="append", help="only these cases")
    ap.add_argument("--files", action="append", choices=MODEL_FILES,
                    help="only these model files of each case")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory and print it")
    args = ap.parse_args()

    bnorm = args.bnorm
    if not (os.path.isfile(bnorm) and os.access(bnorm, os.X_OK)):
        print(f"check_keras_roundtrip: no executable bnorm at {bnorm} "
              f"(build it, or pass --bnorm PATH)", file=sys.stderr)
        return 2
    missing = probe_bnorm(bnorm)
    if missing:
        print(f"check_keras_roundtrip: {bnorm} lacks: " + "; ".join(missing),
              file=sys.stderr)
        return 2

    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    root = pathlib.Path(args.fixtures)
    cases = sorted(p for p in root.iterdir()
                   if p.is_dir() and (p / "meta.json").exists())
    if args.case:
        unknown = set(args.case) - {p.name for p in cases}
        if unknown:
            ap.error(f"unknown case(s): {', '.join(sorted(unknown))}")
        cases = [p for p in cases if p.name in args.case]
    files = args.files or list(MODEL_FILES)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bnorm_keras_rt_"))

    rows = []       # (case, file, check, result, detail)
    failures = 0
    worst = (0.0, "")
    for d in cases:
        meta = json.loads((d / "meta.json").read_text())
        for f in files:
            src = d / f
            if not src.exists():
                continue
            work = tmp / d.name / f.replace(".", "_")
            work.mkdir(parents=True)
            out = work / "out.keras"
            if meta.get("expect_refuse"):
                p = run([bnorm, "convert", str(src), str(out)])
                msg = p.stderr + p.stdout
                want = meta["expect_error_substring"]
                if p.returncode == 0:
                    rows.append((d.name, f, "refuse", "FAIL", "accepted"))
                    failures += 1
                elif want.lower() not in msg.lower():
                    rows.append((d.name, f, "refuse", "FAIL",
                                 f"message lacks '{want}': {short(msg)}"))
                    failures += 1
                else:
                    rows.append((d.name, f, "refuse", "ok", short(msg, 70)))
                continue

            xs_paths = input_paths(d)
            xs = [np.load(p) for p in xs_paths]
            want = arrays(d, "y")
            # tf2.h5 where tf.keras 2 computes something else (hard_sigmoid):
            # both answers are accepted (Keras 3 itself reads that file with
            # Keras 3 semantics, i.e. y.npy); the detail says which matched.
            refs = [("", want)]
            if f == "tf2.h5" and arrays(d, "y_tf2"):
                refs.append((" (= tf.keras 2)", arrays(d, "y_tf2")))

            def best(got):
                errs = [(compare(got, r), tag) for tag, r in refs]
                return min(errs)

            # convert, then Keras reads bnorm's .keras
            p = run([bnorm, "convert", str(src), str(out)])
            if p.returncode != 0:
                rows.append((d.name, f, "convert", "FAIL",
                             f"rc {p.returncode}: {short(p.stderr or p.stdout)}"))
                failures += 1
            else:
                try:
                    e, tag = best(keras_predict(out, xs))
                    ok = e <= args.tol
                    rows.append((d.name, f, "convert", "ok" if ok else "FAIL",
                                 f"{e:.3g}{tag}"))
                    failures += 0 if ok else 1
                    if e > worst[0]:
                        worst = (e, f"{d.name}/{f} convert")
                except Exception as ex:  # noqa: BLE001 - reported in the table
                    rows.append((d.name, f, "convert", "FAIL",
                                 f"Keras cannot load bnorm's file: "
                                 f"{type(ex).__name__}: {short(str(ex))}"))
                    failures += 1

            # bnorm predict
            n_out = len(want)
            ypaths = [work / (f"y{i}.npy" if n_out > 1 else "y.npy")
                      for i in range(n_out)]
            cmd = [bnorm, "predict", "--model", str(src)]
            for xp in xs_paths:
                cmd += ["--input", str(xp)]
            for yp in ypaths:
                cmd += ["--output", str(yp)]
            p = run(cmd)
            if p.returncode != 0:
                rows.append((d.name, f, "predict", "FAIL",
                             f"rc {p.returncode}: {short(p.stderr or p.stdout)}"))
                failures += 1
            elif not all(yp.exists() for yp in ypaths):
                rows.append((d.name, f, "predict", "FAIL",
                             "output file(s) not written"))
                failures += 1
            else:
                e, tag = best([np.load(yp) for yp in ypaths])
                ok = e <= args.tol
                rows.append((d.name, f, "predict", "ok" if ok else "FAIL",
                             f"{e:.3g}{tag}"))
                failures += 0 if ok else 1
                if e > worst[0]:
                    worst = (e, f"{d.name}/{f} predict")

    w = [max(len(r[i]) for r in rows + [("case", "file", "check", "res")])
         for i in range(4)]
    print(f"{'case':<{w[0]}}  {'file':<{w[1]}}  {'check':<{w[2]}}  "
          f"{'res':<{w[3]}}  max rel err / detail")
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  "
              f"{r[3]:<{w[3]}}  {r[4]}")
    print(f"\n{len(rows)} checks, {failures} failed; worst relative error "
          f"{worst[0]:.3g} ({worst[1] or '-'}); tolerance {args.tol:g} "
          f"(max |a-b| / max(1, |b|))")
    if args.keep:
        print(f"temporary files kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
