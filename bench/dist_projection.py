#!/usr/bin/env python3
"""Projected data-parallel scaling of bnorm's distributed training on a cluster (paper only).

Cost model of one training step on P ranks (no overlap of communication with compute: bnorm
exchanges gradients after the whole backward), alpha-beta model per message:
  gradients  rank-ordered all-reduce of a large buffer = all-to-all (P-1 messages of S/P bytes)
             + all-gather of the reduced blocks (P-1 messages of S/P): 2 (P-1) alpha +
             2 (P-1)/P * S / B
  small sums (metrics: 2 float64; SyncBN backward: 2C float64) go through rank 0: a tree gather
             and a tree broadcast, 2 log2(P) alpha + ((P-1) + log2(P)) * m / B
  SyncBN     per BN layer with C channels, forward: all-gather of (count, mean[C], M2[C]) float64
             (recursive doubling), log2(P) alpha + (P-1) (1 + 2C) 8 / B
  compute    weak scaling, 64 samples per rank per step, one rank per core at the per-image time
             measured here on one thread (bench/dist_scaling.sh: 1 x 1 rows)
Efficiency = compute / (compute + communication). The second table gives the gradients' all-reduce
the 2 log2(P) alpha latency of tree / recursive-halving algorithms too (MPI_Allreduce's), i.e.
what giving up the rank-ordered gradient sum would buy. Usage: bench/dist_projection.py
"""
import math

MODELS = {
    # name: (trainable parameters, BN channels per layer, measured seconds per image, 1 thread)
    "seed": (51_018, [64], 1 / 341_416),
    "cnn": (422_090, [32, 64, 128], 1 / 2_542),
    "resnet": (77_754, [16, 16, 16, 32, 32, 32, 64, 64, 64], 1 / 1_526),
}
NETWORKS = {
    # name: (bytes per second, latency per message in seconds)
    "10 Gbit/s (TCP, 20 us)": (10e9 / 8, 20e-6),
    "100 Gbit/s (RDMA, 3 us)": (100e9 / 8, 3e-6),
}
SAMPLES_PER_RANK = 64


def gradient_all_reduce(p, nbytes, bandwidth, latency, tree):
    hops = 2 * math.log2(p) if tree else 2 * (p - 1)
    return hops * latency + 2 * (p - 1) / p * nbytes / bandwidth


def small_sum(p, nbytes, bandwidth, latency):
    return 2 * math.log2(p) * latency + ((p - 1) + math.log2(p)) * nbytes / bandwidth


def step_communication(p, params, bn_channels, bandwidth, latency, tree):
    t = gradient_all_reduce(p, 4 * params, bandwidth, latency, tree)  # float32 gradients
    t += small_sum(p, 16, bandwidth, latency)  # metrics
    for c in bn_channels:
        t += math.log2(p) * latency + (p - 1) * (1 + 2 * c) * 8 / bandwidth
        t += small_sum(p, 16 * c, bandwidth, latency)
    return t


def main():
    for tree in (False, True):
        print("bnorm today (rank-ordered gradient sum by blocks, small sums through rank 0):"
              if not tree else "\nWith a log2(P)-latency gradient all-reduce as well:")
        print("| model | gradient bytes / step | SyncBN bytes / step / rank (P=8) | network | "
              "8 ranks | 64 ranks | 512 ranks |")
        print("|---|---:|---:|---|---:|---:|---:|")
        for name, (params, bn, per_image) in MODELS.items():
            compute = SAMPLES_PER_RANK * per_image
            syncbn = sum(7 * (1 + 2 * c) * 8 + 16 * c for c in bn)
            for net, (bandwidth, latency) in NETWORKS.items():
                cells = []
                for p in (8, 64, 512):
                    comm = step_communication(p, params, bn, bandwidth, latency, tree)
                    cells.append(f"{100 * compute / (compute + comm):.0f}% ({1e3 * comm:.2f} ms)")
                print(f"| {name} | {4 * params / 1024:.0f} KiB | {syncbn / 1024:.1f} KiB | {net} | "
                      + " | ".join(cells) + " |")
    print()
    for name, (params, bn, per_image) in MODELS.items():
        print(f"{name}: compute per step {1e3 * SAMPLES_PER_RANK * per_image:.2f} ms "
              f"({SAMPLES_PER_RANK} samples, one core); {len(bn)} BN layers, "
              f"{sum(bn)} channels; collectives per step: {2 + 2 + 3 * len(bn)} MPI calls")


if __name__ == "__main__":
    main()
