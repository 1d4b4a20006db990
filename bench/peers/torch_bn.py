#!/usr/bin/env python3
"""PyTorch batch normalization timings for `bnorm bench bn` (a peer, run as a child process).

Times, with the method bnorm's bench uses (warm-up, samples of k back-to-back calls, median
per call over at least --min-time seconds):
  train     torch.nn.functional.batch_norm(training=True)   (batch moments + normalize)
  infer     torch.nn.functional.batch_norm(training=False)  (given running statistics)
  backward  torch.ops.aten.native_batch_norm_backward(train=True, all three outputs)
Layouts: nhwc = (N, C, H, W) in torch.channels_last memory format (shape given as NxHxWxC);
nchw = contiguous (N, C, H, W); nc = contiguous (N, C).

Two ways to run it:
  torch_bn.py --serve [--threads T]   one JSON request per stdin line, e.g.
      {"shape": [64, 56, 56, 64], "layout": "nhwc", "mode": "train", "min_time": 0.5}
    answered by one JSON line {"us": ...} or {"error": "..."}; the first line printed is
    {"ready": true, "torch": "<version>", "threads": T} (or {"error": ...} and exit status 3
    when torch cannot be imported).
  torch_bn.py --shape 64x56x56x64 --layout nhwc --mode train [--min-time S] [--threads T]
    one case, one JSON line.
Run it with OMP_NUM_THREADS=T and GLIBC_TUNABLES=glibc.malloc.mmap_max=0:
glibc.malloc.trim_threshold=4294967296 (bnorm bench sets both), or PyTorch's per-call output
allocations above glibc's mmap threshold get fresh zeroed pages on every call.
"""

import argparse
import json
import statistics
import sys
import time

EPSILON = 1e-3  # Keras's default, as in bnorm's bench
MOMENTUM = 0.01  # PyTorch's convention: Keras momentum 0.99


def median_seconds_per_call(call, min_time):
    """Warm-up, then samples of k calls (each sample >= max(10 us, min_time/200)) until
    min_time seconds were spent timing; the median sample divided by k."""
    clock = time.perf_counter
    warm_up = min(0.1, min_time / 5.0)
    start = clock()
    calls = 0
    while calls < 2 or clock() - start < warm_up:
        call()
        calls += 1
    per_call = (clock() - start) / calls
    k = max(1, int(max(1e-5, min_time / 200.0) / per_call))
    samples = []
    start = clock()
    while len(samples) < 5 or clock() - start < min_time:
        t0 = clock()
        for _ in range(k):
            call()
        samples.append((clock() - t0) / k)
    return statistics.median(samples)


def make_call(torch, shape, layout, mode):
    """The timed callable for one case; its inputs are created (and touched) here."""
    F = torch.nn.functional
    gen = torch.Generator().manual_seed(42)
    if layout == "nhwc":
        n, h, w, c = shape
        dims = (n, c, h, w)
        fmt = torch.channels_last
    elif layout == "nchw":
        n, c, h, w = shape
        dims = (n, c, h, w)
        fmt = torch.contiguous_format
    elif layout == "nc":
        n, c = shape
        dims = (n, c)
        fmt = torch.contiguous_format
    else:
        raise ValueError("unknown layout %r" % layout)
    x = (torch.randn(dims, generator=gen) * 2.0 + 0.5).contiguous(memory_format=fmt)
    weight = torch.rand(c, generator=gen) + 0.5
    bias = torch.rand(c, generator=gen) - 0.5
    running_mean = torch.zeros(c)
    running_var = torch.ones(c)
    if mode == "train":
        return lambda: F.batch_norm(x, running_mean, running_var, weight, bias, True, MOMENTUM,
                                    EPSILON)
    # Batch statistics of x, for inference and for the backward pass.
    _, save_mean, save_invstd = torch.ops.aten.native_batch_norm(
        x, weight, bias, running_mean, running_var, True, MOMENTUM, EPSILON)
    if mode == "infer":
        reduce_dims = [d for d in range(x.dim()) if d != 1]
        batch_var, batch_mean = torch.var_mean(x, dim=reduce_dims, correction=0)
        return lambda: F.batch_norm(x, batch_mean, batch_var, weight, bias, False, MOMENTUM,
                                    EPSILON)
    if mode == "backward":
        dy = torch.randn(dims, generator=gen).contiguous(memory_format=fmt)
        backward = torch.ops.aten.native_batch_norm_backward
        return lambda: backward(dy, x, weight, running_mean, running_var, save_mean, save_invstd,
                                True, EPSILON, [True, True, True])
    raise ValueError("unknown mode %r" % mode)


def run_case(torch, request):
    shape = [int(d) for d in request["shape"]]
    call = make_call(torch, shape, request["layout"], request["mode"])
    with torch.no_grad():
        seconds = median_seconds_per_call(call, float(request.get("min_time", 0.5)))
    return {"us": seconds * 1e6}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help="answer JSON requests on stdin")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: keep)")
    parser.add_argument("--shape", help="e.g. 64x56x56x64, in the layout's order")
    parser.add_argument("--layout", default="nhwc", choices=["nhwc", "nchw", "nc"])
    parser.add_argument("--mode", default="train", choices=["train", "infer", "backward"])
    parser.add_argument("--min-time", type=float, default=0.5)
    args = parser.parse_args()
    if not args.serve and not args.shape:
        parser.error("give --serve or --shape")

    return run_peer(args.threads, None if args.serve else {
        "shape": args.shape.split("x"), "layout": args.layout, "mode": args.mode,
        "min_time": args.min_time}, run_case)


def run_peer(threads, request, run_case):
    """Imports torch (printing {"error": ...} and returning 3 when it cannot), sets its thread
    count (threads > 0), then answers `request` with one JSON line, or, when request is None,
    serves: prints {"ready": true, "torch": ..., "threads": ...} and answers one JSON request
    per stdin line with run_case(torch, request), an error per request as {"error": ...}."""
    try:
        import torch
    except Exception as e:  # ImportError, or a broken installation
        print(json.dumps({"error": "cannot import torch: %s" % e}), flush=True)
        return 3
    if threads > 0:
        torch.set_num_threads(threads)

    if request is not None:
        print(json.dumps(run_case(torch, request)), flush=True)
        return 0

    print(json.dumps({"ready": True, "torch": torch.__version__,
                      "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = run_case(torch, json.loads(line))
        except Exception as e:  # report per case and keep serving
            reply = {"error": "%s: %s" % (type(e).__name__, e)}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
