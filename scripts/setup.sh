#!/usr/bin/env bash
# Installs everything bnorm needs on Debian 12 (idempotent) and configures + builds it.
# Usage: scripts/setup.sh [build-dir] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build pkg-config
          libopenblas-dev libhwy-dev libcli11-dev nlohmann-json3-dev zlib1g-dev libzip-dev
          libgtest-dev libgmock-dev googletest libprotobuf-dev protobuf-compiler
          libbenchmark-dev libdnnl-dev libdlib-dev libhdf5-dev libopenmpi-dev openmpi-bin
          python3-dev python3-venv
          dataset-fashion-mnist)
source scripts/apt_install.sh
apt_install setup "${packages[@]}"

build_dir=${1:-build}
shift || true
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
