#!/usr/bin/env python3
"""Speed from Python: the seed model trained on Fashion-MNIST by bnorm's Python module, Keras 3
(TensorFlow backend) and PyTorch, in one run on the same machine.

bnorm and Keras run the very same script (bench/peers/keras_train.py, `--module bnorm` swaps
`import keras` for `import bnorm as keras`); PyTorch runs bench/peers/torch_train.py, the same
model, data and settings (Adam 1e-3, batch 32, shuffled, 60000 images, no validation). Each
framework runs in its own process with the given thread count; the figure is the median of the
epochs after the first (the first includes graph building and warm-up).

    python3 bench/python_train.py --threads 1 --epochs 4 \\
        --bnorm-python build/python-venv/bin/python \\
        --keras-python /path/venv-keras/bin/python --torch-python /path/venv-torch/bin/python

Prints a table and one JSON line; OPENBLAS_CORETYPE is removed from the children's environment
(this machine may set it; it slows OpenBLAS down), as scripts/main.sh does.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(python, script, args, threads):
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.update({"OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": "1",
                "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.path.join(HERE, "peers")})
    proc = subprocess.run([python, os.path.join(HERE, "peers", script), *args], env=env,
                          capture_output=True, text=True, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--bnorm-python", default=os.path.join(HERE, "..", "build", "python-venv",
                                                               "bin", "python"))
    parser.add_argument("--keras-python", default=os.environ.get("BNORM_PYTHON", "python3"))
    parser.add_argument("--torch-python", default=os.environ.get("BNORM_PYTHON", "python3"))
    args = parser.parse_args()
    common = ["--threads", str(args.threads), "--epochs", str(args.epochs)]
    results = {
        "bnorm (Python)": run(args.bnorm_python, "keras_train.py", common + ["--module", "bnorm"],
                              args.threads),
        "Keras 3": run(args.keras_python, "keras_train.py", common, args.threads),
        "PyTorch": run(args.torch_python, "torch_train.py", common, args.threads),
    }
    seconds = {}
    for name, r in results.items():
        if "epoch_seconds" in r:
            later = r["epoch_seconds"][1:] or r["epoch_seconds"]
            seconds[name] = statistics.median(later)
    print(f"seed model, Fashion-MNIST 60000 images, batch 32, {args.threads} thread(s), "
          f"median of epochs 2..{args.epochs}")
    base = seconds.get("bnorm (Python)")
    for name, r in results.items():
        if name in seconds:
            ratio = f"{seconds[name] / base:6.2f}x bnorm's time" if base else ""
            print(f"  {name:15s} {seconds[name]:8.3f} s/epoch  {ratio}  "
                  f"final loss {r['loss']:.4f}  {r.get('version', '')}")
        else:
            print(f"  {name:15s} {r}")
    print(json.dumps({"threads": args.threads, "seconds_per_epoch": seconds,
                      "results": results}))
    return 0 if base else 1


if __name__ == "__main__":
    sys.exit(main())
