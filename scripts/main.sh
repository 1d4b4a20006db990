#!/usr/bin/env bash
# Sets up, builds and runs the main job: the seed model with and without BN on Fashion-MNIST.
# Extra arguments go to `bnorm train` (e.g. --epochs 3 --out runs/quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build
exec ./build/tools/cli/bnorm train "$@"
