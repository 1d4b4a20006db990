#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite: a Release build and its tests, the Python module
# (pip install . into build/python-venv) and its pytest suite, then the C++ suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer, then a short libFuzzer smoke of every file loader
# (scripts/fuzz.sh; BNORM_FUZZ_SECONDS per harness, default 20; BNORM_SKIP_FUZZ=1 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

bash scripts/setup.sh build
(cd build && ctest --output-on-failure -j"$jobs")

# The Python module: `pip install .` into a venv, built in the Release build above (only the
# module compiles), then the pytest suite against the installed package.
if [ "${BNORM_SKIP_PYTHON:-0}" != "1" ]; then
  bash scripts/python_setup.sh build/python-venv build
  build/python-venv/bin/python -m pytest -q tests/python
fi

if [ "${BNORM_SKIP_SANITIZE:-0}" != "1" ]; then
  bash scripts/setup.sh build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBNORM_SANITIZE=ON
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp"
  (cd build-asan && ctest --output-on-failure -j"$jobs" -LE consumer)
fi

if [ "${BNORM_SKIP_FUZZ:-0}" != "1" ]; then
  bash scripts/fuzz.sh "${BNORM_FUZZ_SECONDS:-20}"
fi
