#!/usr/bin/env python3
"""PyTorch convolution timings for `bnorm bench conv` (a peer, run as a child process).

Times, with the method bnorm's bench uses (warm-up, samples of k back-to-back calls, median
per call over at least --min-time seconds), one pass of a 2-D convolution with bias on an
(N, C, H, W) input in torch.channels_last memory format (NHWC in memory, as bnorm's):
  forward           torch.nn.functional.conv2d
  backward-data     aten.convolution_backward with output_mask [True, False, False] (dx)
  backward-weights  aten.convolution_backward with output_mask [False, True, True]
                    (dkernel and dbias)
aten.convolution_backward is what autograd runs for conv2d's backward. A depthwise case is a
grouped convolution with groups = channels. Padding is symmetric, kernel // 2 on each side:
the same output size as Keras's "same" (whose extra row/column after, for even totals, PyTorch
cannot express), so the same work.

Two ways to run it:
  torch_conv.py --serve [--threads T]   one JSON request per stdin line, e.g.
      {"batch": 64, "h": 28, "w": 28, "c": 16, "filters": 32, "kernel": 3, "stride": 2,
       "depthwise": false, "pass": "forward", "min_time": 0.5}
    answered by one JSON line {"us": ...} or {"error": "..."}; the first line printed is
    {"ready": true, "torch": "<version>", "threads": T} (or {"error": ...} and exit status 3
    when torch cannot be imported).
  torch_conv.py --conv 64x28x28x16:32:3:2 --pass forward [--min-time S] [--threads T]
    one case (NxHxWxC:filters:kernel:stride, filters "dw" for depthwise), one JSON line.
"""

import argparse
import sys

from torch_bn import median_seconds_per_call, run_peer

PASSES = ("forward", "backward-data", "backward-weights")


def make_call(torch, request):
    """The timed callable for one case; its inputs are created (and touched) here."""
    n, h, w, c = (int(request[k]) for k in ("batch", "h", "w", "c"))
    kernel, stride = int(request["kernel"]), int(request["stride"])
    depthwise = bool(request.get("depthwise", False))
    filters = c if depthwise else int(request["filters"])
    groups = c if depthwise else 1
    padding = kernel // 2
    gen = torch.Generator().manual_seed(42)
    cl = torch.channels_last
    x = torch.randn((n, c, h, w), generator=gen).contiguous(memory_format=cl)
    weight = (torch.rand((filters, c // groups, kernel, kernel), generator=gen) - 0.5) * 0.1
    weight = weight.contiguous(memory_format=cl)
    bias = torch.rand(filters, generator=gen) - 0.5
    conv = torch.nn.functional.conv2d
    mode = request["pass"]
    if mode == "forward":
        return lambda: conv(x, weight, bias, stride, padding, 1, groups)
    if mode not in PASSES:
        raise ValueError("unknown pass %r (choose %s)" % (mode, ", ".join(PASSES)))
    y = conv(x, weight, bias, stride, padding, 1, groups)
    dy = torch.randn(y.shape, generator=gen).contiguous(memory_format=cl)
    mask = [True, False, False] if mode == "backward-data" else [False, True, True]
    backward = torch.ops.aten.convolution_backward
    return lambda: backward(dy, x, weight, [filters], [stride, stride], [padding, padding],
                            [1, 1], False, [0, 0], groups, mask)


def run_case(torch, request):
    call = make_call(torch, request)
    with torch.no_grad():
        seconds = median_seconds_per_call(call, float(request.get("min_time", 0.5)))
    return {"us": seconds * 1e6}


def parse_conv(text):
    shape, filters, kernel, stride = text.split(":")
    n, h, w, c = (int(d) for d in shape.split("x"))
    return {"batch": n, "h": h, "w": w, "c": c, "depthwise": filters == "dw",
            "filters": c if filters == "dw" else int(filters), "kernel": int(kernel),
            "stride": int(stride)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help="answer JSON requests on stdin")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: keep)")
    parser.add_argument("--conv", help="NxHxWxC:filters:kernel:stride, e.g. 64x28x28x16:32:3:2")
    parser.add_argument("--pass", dest="pass_", default="forward", choices=PASSES)
    parser.add_argument("--min-time", type=float, default=0.5)
    args = parser.parse_args()
    if not args.serve and not args.conv:
        parser.error("give --serve or --conv")

    request = None
    if not args.serve:
        request = dict(parse_conv(args.conv), **{"pass": args.pass_, "min_time": args.min_time})
    return run_peer(args.threads, request, run_case)


if __name__ == "__main__":
    sys.exit(main())
