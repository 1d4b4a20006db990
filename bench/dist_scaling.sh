#!/usr/bin/env bash
# Data-parallel scaling of bnorm train on this machine: one process against 2 MPI ranks (and 4,
# oversubscribed), same global batch, each rank on its share of the cores; the time of rank 0
# split into compute and communication (time inside collectives, waiting for the other ranks
# included), with synchronized BN and with BN statistics per rank. Prints a Markdown table
# (docs/performance.md, "Distributed training").
#   bench/dist_scaling.sh [BNORM] [runs per configuration (default 2, the faster is kept)]
set -euo pipefail
bnorm=${1:-build/tools/cli/bnorm}
repeats=${2:-2}
unset OPENBLAS_CORETYPE
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
cores=$(nproc)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# model, training images, epochs
configs=("seed 54000 2" "cnn 6400 1" "resnet 1600 1")
echo "| model | images | processes x threads | s/epoch | images/s | vs 1 process | communication |"
echo "|---|---:|---|---:|---:|---:|---:|"
for config in "${configs[@]}"; do
  read -r model images epochs <<<"$config"
  base=""
  half=$((cores / 2 > 0 ? cores / 2 : 1))
  for setup in "1 $cores sync" "1 1 sync" "2 $half sync" "2 $half local" "4 1 sync"; do
    read -r np threads bn <<<"$setup"
    best=""
    for ((i = 0; i < repeats; i++)); do
      args=(train --model "$model" --epochs "$epochs" --train-limit "$images" --test-limit 100
            --validation-split 0 --batch-size 64 --quiet --threads "$threads" --out "$tmp/run")
      rm -rf "$tmp/run"
      if [ "$np" = 1 ]; then
        "$bnorm" "${args[@]}" >/dev/null
      else
        sync=(--sync-bn)
        [ "$bn" = local ] && sync=()
        mpirun -np "$np" --oversubscribe "$bnorm" "${args[@]}" --distributed "${sync[@]}" >/dev/null
      fi
      line=$(python3 - "$tmp/run/summary.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["models"][0]
fit = m.get("fit_seconds") or sum(e["seconds"] for e in m["epochs"])
comm = m.get("communication_seconds") or 0.0
print(m["seconds_per_epoch"], fit, comm)
PY
)
      read -r epoch fit comm <<<"$line"
      if [ -z "$best" ] || awk -v a="$epoch" -v b="${best%% *}" 'BEGIN { exit !(a < b) }'; then
        best="$epoch $fit $comm"
      fi
    done
    read -r epoch fit comm <<<"$best"
    [ -z "$base" ] && base=$epoch
    label="$np x $threads"
    [ "$np" -gt 1 ] && [ "$bn" = sync ] && label="$label, --sync-bn"
    [ "$np" -gt 1 ] && [ "$bn" = local ] && label="$label, BN per rank"
    [ "$np" -gt 1 ] && [ $((np * threads)) -gt "$cores" ] && label="$label (oversubscribed)"
    awk -v m="$model" -v n="$images" -v l="$label" -v e="$epoch" -v f="$fit" -v c="$comm" \
        -v b="$base" -v np="$np" 'BEGIN {
      share = np > 1 ? sprintf("%.0f%%", 100 * c / f) : "-"
      printf "| %s | %d | %s | %.2f | %.0f | %.2fx | %s |\n", m, n, l, e, n / e, b / e, share }'
  done
done
