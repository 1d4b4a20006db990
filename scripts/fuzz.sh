#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/, clang with ASan + UBSan) and runs each one for the given
# number of seconds (default 30), starting from its seed corpus in fuzz/corpus/<name>/. Fails when
# any harness finds a crash, a leak, a timeout or an allocation over the limits below; the input
# that did it is left in <build-dir>/artifacts/. New inputs go to <build-dir>/corpus/<name>/ (the
# seeds in the repository are not touched).
#
# Usage: scripts/fuzz.sh [seconds-per-harness] [harness...]
#   BNORM_FUZZ_BUILD  build directory (default build-fuzz)
#   BNORM_FUZZ_JOBS   parallel compile jobs (default: all cores)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
shift || true
build=${BNORM_FUZZ_BUILD:-build-fuzz}
jobs=${BNORM_FUZZ_JOBS:-$(nproc)}

# clang and its runtime libraries (libFuzzer, the sanitizers), as setup.sh installs the rest.
packages=(clang libclang-rt-14-dev libomp-dev)
source scripts/apt_install.sh
apt_install fuzz "${packages[@]}"

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DBNORM_FUZZ=ON -DBNORM_BUILD_TESTS=OFF -DBNORM_BUILD_CLI=OFF -DBNORM_BUILD_BENCH=OFF \
  "${launcher[@]}" >/dev/null
cmake --build "$build" --target bnorm_fuzzers -j"$jobs"

if [ $# -gt 0 ]; then
  names=("$@")
else
  mapfile -t names < <(grep -v '^$' "$build/fuzz/fuzzers.txt")
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# Leaks inside Debian's HDF5 on its own error paths (see tests/lsan.supp) are not bnorm's.
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp}
failed=()
mkdir -p "$build/artifacts"
for name in "${names[@]}"; do
  corpus="$build/corpus/$name"
  mkdir -p "$corpus"
  seeds=()
  [ -d "fuzz/corpus/$name" ] && seeds=("fuzz/corpus/$name")
  log="$build/fuzz-$name.log"
  echo "fuzz: $name for ${seconds}s (log: $log)"
  if "$build/fuzz/fuzz_$name" -max_total_time="$seconds" -rss_limit_mb=2048 \
       -malloc_limit_mb=1024 -timeout=25 -print_final_stats=1 \
       -artifact_prefix="$build/artifacts/$name-" "$corpus" "${seeds[@]}" >"$log" 2>&1; then
    runs=$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    echo "fuzz: $name ok (${runs:-?} executions)"
  else
    echo "fuzz: $name FAILED; the last lines of $log:"
    tail -n 30 "$log"
    failed+=("$name")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failures in ${failed[*]} (inputs in $build/artifacts/)"
  exit 1
fi
echo "fuzz: every harness ran ${seconds}s without a failure"
