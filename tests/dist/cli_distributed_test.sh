#!/usr/bin/env bash
# mpirun -np 2 bnorm train --distributed --sync-bn trains the seed model and the CNN like one
# process with the whole batch: the per-epoch history agrees (seed model, 2 epochs of Adam: loss
# within 1e-5 relative, accuracy within one sample in 1000; CNN, 10 steps of SGD: loss within 1e-3,
# as its max-pooling and ReLU masks flip on rounding-level differences, which then grow: each step
# alone agrees within 4e-7, tests/dist/dist_test.cpp), and summary.json says how it ran.
#   cli_distributed_test.sh BNORM MPIEXEC
set -euo pipefail
bnorm=$1 mpiexec=$2
data=/usr/share/datasets/fashion-mnist
if [ ! -e "$data/train-images-idx3-ubyte.gz" ] && [ ! -e "$data/train-images-idx3-ubyte" ]; then
  echo "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): skipped"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for model in seed cnn; do
  if [ "$model" = seed ]; then
    args=(train --model seed --epochs 2 --train-limit 3000) tolerance=1e-5
  else
    args=(train --model cnn --epochs 1 --train-limit 704 --optimizer sgd --lr 0.05) tolerance=1e-3
  fi
  args+=(--test-limit 300 --batch-size 64 --quiet --threads 1)
  "$bnorm" "${args[@]}" --out "$tmp/one-$model" >/dev/null
  "$mpiexec" -np 2 --oversubscribe --timeout 200 "$bnorm" "${args[@]}" --distributed --sync-bn \
    --check-replicas 1 --out "$tmp/two-$model" >"$tmp/two-$model.log"
  # Rows: epoch,accuracy,loss,val_accuracy,val_loss
  paste -d, "$tmp/one-$model/history_$model.csv" "$tmp/two-$model/history_$model.csv" | tail -n +2 |
    awk -F, -v model="$model" -v tol="$tolerance" '
      function rel(a, b) { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; return d / m }
      {
        printf "%s epoch %d: loss %.9f vs %.9f (%.1e), accuracy %.6f vs %.6f\n", model, $1 + 1,
               $3, $8, rel($8, $3), $2, $7
        if (rel($8, $3) > tol || rel($10, $5) > tol) bad = 1
        if ($2 - $7 > tol || $7 - $2 > tol || $4 - $9 > tol || $9 - $4 > tol) bad = 1
      }
      END { exit bad }'
  grep -q '"processes": 2' "$tmp/two-$model/summary.json"
  grep -q '"sync_bn": true' "$tmp/two-$model/summary.json"
done
echo "distributed runs match one process"
