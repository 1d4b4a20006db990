#!/usr/bin/env bash
# Sets up, builds and runs the main job: the seed model with and without BN on Fashion-MNIST.
# Extra arguments go to `bnorm train` (e.g. --epochs 3 --out runs/quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build
# OpenBLAS chooses the best kernels for this CPU by itself; an inherited OPENBLAS_CORETYPE (some
# environments set Haswell, AVX2 only) would hold Dense and Conv2D to older, slower ones.
unset OPENBLAS_CORETYPE
exec ./build/tools/cli/bnorm train "$@"
