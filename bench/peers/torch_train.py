#!/usr/bin/env python3
"""PyTorch training peer of `bnorm bench train`: the same model, data and settings as bnorm.

Trains a bnorm model spec (bnorm_spec.py) on the Fashion-MNIST training images (no validation
split) with Adam (lr 1e-3; Keras's epsilon 1e-7), batch --batch, shuffled every epoch, Keras-like
initialization (Glorot-uniform kernels, zero biases) and Keras's BatchNormalization settings
(momentum 0.99 -> PyTorch momentum 0.01, epsilon 1e-3). A softmax at the end is fused into the
cross-entropy, as Keras does. Prints one JSON line:
  {"epoch_seconds": [...], "loss": x, "accuracy": x, "version": "...", "images": n}
or {"unsupported": "..."} (exit 4) for a spec it cannot build, {"error": "..."} (exit 3) when
torch cannot be imported. Peak memory is measured by the parent (wait4's ru_maxrss).
"""

import argparse
import json
import sys
import time

import bnorm_spec


def build_model(torch, layers, inputs=784, classes=10):
    nn = torch.nn
    if not layers:
        raise bnorm_spec.Unsupported("empty model")
    last = layers[-1]
    if last["kind"] == "activation" and last["activation"] == "softmax":
        layers = layers[:-1]
    elif last["kind"] == "dense" and last["activation"] == "softmax":
        layers = layers[:-1] + [dict(last, activation="linear")]
    else:
        raise bnorm_spec.Unsupported("the model must end in a softmax (cross-entropy on logits)")
    activations = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
                   "softmax": lambda: nn.Softmax(dim=1), "linear": nn.Identity}
    modules, features = [], inputs
    for layer in layers:
        kind = layer["kind"]
        if kind == "dense":
            linear = nn.Linear(features, layer["units"], bias=layer["use_bias"])
            nn.init.xavier_uniform_(linear.weight)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
            modules.append(linear)
            features = layer["units"]
            if layer["activation"] != "linear":
                modules.append(activations[layer["activation"]]())
        elif kind == "bn":
            if layer["center"] != layer["scale"]:
                raise bnorm_spec.Unsupported("PyTorch BatchNorm1d has gamma and beta together")
            modules.append(nn.BatchNorm1d(features, eps=layer["epsilon"],
                                          momentum=1.0 - layer["momentum"],
                                          affine=layer["scale"]))
        elif kind == "dropout":
            modules.append(nn.Dropout(layer["rate"]))
        elif kind == "flatten":
            modules.append(nn.Flatten())
        elif kind == "activation":
            modules.append(activations[layer["activation"]]())
    if features != classes:
        raise bnorm_spec.Unsupported("the model outputs %d values; Fashion-MNIST needs %d"
                                     % (features, classes))
    return nn.Sequential(*modules)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="dense64-relu,bn,dense10-softmax")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--train-limit", type=int, default=0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:
        print(json.dumps({"error": "cannot import torch: %s" % e}), flush=True)
        return 3
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        model = build_model(torch, bnorm_spec.parse(args.spec))
    except bnorm_spec.Unsupported as e:
        print(json.dumps({"unsupported": str(e)}), flush=True)
        return 4

    x_np, y_np = bnorm_spec.load_train_set(args.data, args.train_limit)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    del x_np
    n = x.shape[0]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    generator = torch.Generator().manual_seed(args.seed)
    epoch_seconds = []
    loss_mean = accuracy = 0.0
    for _ in range(args.epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=generator)
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.int64)
        for begin in range(0, n, args.batch):
            index = order[begin:begin + args.batch]
            xb, yb = x[index], y[index]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum += loss.detach() * len(index)
                correct += (logits.argmax(dim=1) == yb).sum()
        epoch_seconds.append(time.perf_counter() - start)
        loss_mean = float(loss_sum) / n
        accuracy = float(correct) / n
    print(json.dumps({"epoch_seconds": epoch_seconds, "loss": loss_mean, "accuracy": accuracy,
                      "version": torch.__version__, "images": n}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
