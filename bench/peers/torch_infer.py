#!/usr/bin/env python3
"""PyTorch inference peer of `bnorm bench infer`: the same three variants as bnorm.

Builds a bnorm model spec in PyTorch (torch_train.build_model: the same layers, Keras's
initialization and BN settings), gives every BatchNorm random affine parameters and running
statistics, and times model(x) over the Fashion-MNIST test images in batches of --batch under
torch.inference_mode() in eval mode, for
  folded:   torch.fx.experimental.optimization.fuse(model): Conv2d/Linear + BatchNorm folded,
  unfolded: the model as it is,
  no_bn:    the --no-bn-spec model (the spec without its bn tokens),
interleaved, the order rotating per repeat, median of --repeats after --warmup rounds. A final
softmax is kept (predict returns probabilities, as bnorm's). --memory-format auto runs one
predict of the folded model in each memory format (contiguous NCHW, channels_last) and keeps the
faster for all variants.

ONNX Runtime, when it can be imported: the unfolded model is exported to ONNX (torch.onnx.export,
opset 17, NCHW input, a dynamic batch axis) and run by an InferenceSession with ORT's default
graph optimizations (which fold BatchNormalization into the Conv/Gemm before it),
intra_op_num_threads = --threads, one inter-op thread, over the same batches; median of
--repeats after --warmup rounds, timed after the PyTorch variants. Prints one JSON line:
  {"version": "...", "memory_format": "...", "results": {"folded": {"seconds": [...]}, ...},
   "max_abs_diff_folded_unfolded": x,
   "onnxruntime": {"version": "...", "seconds": [...], "max_abs_diff_vs_torch": x}
                  or {"error": "..."}}
or {"unsupported": "..."} (exit 4), {"error": "..."} (exit 3) when torch cannot be imported.
"""

import argparse
import json
import sys
import time

import bnorm_spec
import torch_train


def build(torch, spec, seed, memory_format):
    torch.manual_seed(seed)
    layers = bnorm_spec.parse(spec)
    model = torch_train.build_model(torch, [dict(layer) for layer in layers])
    if layers[-1].get("activation") == "softmax":  # build_model leaves it to the loss
        model.append(torch.nn.Softmax(dim=1))
    generator = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            c = module.num_features

            def uniform(low, high):
                return low + (high - low) * torch.rand(c, generator=generator)

            module.running_mean.copy_(uniform(-0.5, 0.5))
            module.running_var.copy_(uniform(0.25, 2.0))
            if module.affine:
                with torch.no_grad():
                    module.weight.copy_(uniform(0.5, 1.5))
                    module.bias.copy_(uniform(-0.5, 0.5))
    return model.eval().to(memory_format=memory_format)


def predict(torch, model, x, batch, memory_format):
    outputs = []
    with torch.inference_mode():
        for begin in range(0, x.shape[0], batch):
            xb = x[begin:begin + batch]
            if xb.dim() == 4:
                xb = xb.contiguous(memory_format=memory_format)
            outputs.append(model(xb))
    return torch.cat(outputs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--no-bn-spec", required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--test-limit", type=int, default=0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--memory-format", choices=("auto", "contiguous", "channels_last"),
                        default="auto")
    args = parser.parse_args()

    try:
        import torch
        from torch.fx.experimental.optimization import fuse
    except Exception as e:
        print(json.dumps({"error": "cannot import torch: %s" % e}), flush=True)
        return 3
    torch.set_num_threads(args.threads)
    formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    try:
        layers = bnorm_spec.annotate(bnorm_spec.parse(args.spec))
        if layers[-1].get("activation") != "softmax":
            raise bnorm_spec.Unsupported("the model must end in a softmax")
        unfolded = build(torch, args.spec, args.seed, torch.contiguous_format)
        no_bn = build(torch, args.no_bn_spec, args.seed, torch.contiguous_format)
    except bnorm_spec.Unsupported as e:
        print(json.dumps({"unsupported": str(e)}), flush=True)
        return 4
    folded = fuse(unfolded)  # a traced copy; `unfolded` keeps its BatchNorm modules

    x_np, _ = bnorm_spec.load_split(args.data, "t10k", args.test_limit)
    x = torch.from_numpy(x_np)
    image = len(layers[0]["in"]) == 3
    if image:
        x = x.view(x.shape[0], 1, 28, 28)
    choice = "contiguous"
    if image:
        choice = args.memory_format
        if choice == "auto":
            seconds = {}
            for name, memory_format in formats.items():
                folded.to(memory_format=memory_format)
                predict(torch, folded, x, args.batch, memory_format)  # warm
                start = time.perf_counter()
                predict(torch, folded, x, args.batch, memory_format)
                seconds[name] = time.perf_counter() - start
            choice = min(seconds, key=seconds.get)
    memory_format = formats[choice]
    variants = {"folded": folded, "unfolded": unfolded, "no_bn": no_bn}
    for model in variants.values():
        model.to(memory_format=memory_format)
    names = list(variants)
    outputs, seconds = {}, {name: [] for name in names}
    for _ in range(args.warmup):
        for name in names:
            outputs[name] = predict(torch, variants[name], x, args.batch, memory_format)
    for repeat in range(args.repeats):
        for k in range(len(names)):
            name = names[(k + repeat) % len(names)]
            start = time.perf_counter()
            outputs[name] = predict(torch, variants[name], x, args.batch, memory_format)
            seconds[name].append(time.perf_counter() - start)
    diff = float((outputs["folded"] - outputs["unfolded"]).abs().max())
    version = torch.__version__ + (" (%s)" % choice if image else "")
    unfolded.to(memory_format=torch.contiguous_format)
    ort = time_onnxruntime(torch, unfolded, x, args, outputs["unfolded"])
    print(json.dumps({"version": version, "memory_format": choice, "images": int(x.shape[0]),
                      "results": {name: {"seconds": seconds[name]} for name in names},
                      "max_abs_diff_folded_unfolded": diff, "onnxruntime": ort}), flush=True)
    return 0


def time_onnxruntime(torch, model, x, args, reference):
    """ONNX Runtime on `model` exported to ONNX: {"version", "seconds", ...} or {"error"}."""
    try:
        import numpy as np
        import onnxruntime as ort
    except Exception as e:
        return {"error": "cannot import onnxruntime: %s" % e}
    import os
    import tempfile
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            sample = x[:args.batch].contiguous()
            torch.onnx.export(model, (sample,), path, opset_version=17, dynamo=False,
                              input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:
        return {"error": "ONNX export or session failed: %s" % e}
    x_np = x.contiguous().numpy()
    batches = [x_np[i:i + args.batch] for i in range(0, x_np.shape[0], args.batch)]

    def predict():
        return np.concatenate([session.run(None, {"x": b})[0] for b in batches])

    for _ in range(args.warmup):
        out = predict()
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = predict()
        seconds.append(time.perf_counter() - start)
    diff = float(np.abs(out - reference.numpy()).max())
    return {"version": ort.__version__, "seconds": seconds, "max_abs_diff_vs_torch": diff}


if __name__ == "__main__":
    sys.exit(main())
