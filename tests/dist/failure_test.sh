#!/usr/bin/env bash
# A rank that fails ends the whole MPI job with a non-zero status, quickly, never a hang:
#   failure_test.sh MPIEXEC NP PROGRAM SCENARIO [expected stderr text]
# Runs PROGRAM SCENARIO under MPIEXEC -np NP (with mpirun's own --timeout as a backstop) and
# checks the exit status, the time it took (at most 30 s) and, when given, the one-line error.
set -u
mpiexec=$1 np=$2 program=$3 scenario=$4 expected=${5:-}
err=$(mktemp)
trap 'rm -f "$err"' EXIT
start=$(date +%s%N)
"$mpiexec" -np "$np" --oversubscribe --timeout 60 "$program" "$scenario" >/dev/null 2>"$err"
status=$?
ms=$((($(date +%s%N) - start) / 1000000))
echo "scenario $scenario on $np ranks: exit status $status after $ms ms"
if [ "$status" -eq 0 ]; then echo "FAIL: the job succeeded"; cat "$err"; exit 1; fi
if [ "$status" -eq 110 ] || [ "$ms" -gt 30000 ]; then
  echo "FAIL: the job did not end by itself within 30 s"; cat "$err"; exit 1
fi
if [ -n "$expected" ] && ! grep -qF "$expected" "$err"; then
  echo "FAIL: stderr lacks '$expected':"; cat "$err"; exit 1
fi
exit 0
