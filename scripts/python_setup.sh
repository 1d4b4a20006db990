#!/usr/bin/env bash
# Creates a virtual environment with the Python build tools and installs bnorm's Python module
# into it with `pip install .`. Usage: scripts/python_setup.sh VENV [BUILD_DIR]
#   BUILD_DIR given: pip builds in that (already configured) CMake build directory, so only the
#   module itself compiles (scripts/test.sh passes its Release build); otherwise pip builds from
#   scratch in build/python/, as a user's `pip install .` does.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/apt_install.sh
# python3-venv and python3-dev for Debian's interpreter; a python3 of its own (pyenv) has both.
apt_install python python3-venv python3-dev

venv=$1
build_dir=${2:-}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  "nanobind>=2.0" "scikit-build-core>=0.10" numpy pytest
args=(--no-build-isolation -q --disable-pip-version-check)
if [ -n "$build_dir" ]; then
  args+=(-Cbuild-dir="$build_dir")
fi
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$venv/bin/python" -m pip install "${args[@]}" .
