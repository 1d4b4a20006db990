#!/usr/bin/env python3
"""PyTorch training peer of `bnorm bench train`: the same model, data and settings as bnorm.

Trains a bnorm model spec (bnorm_spec.py: Dense, Conv2D, pooling, BatchNormalization, Dropout,
Flatten, activations), or with --preset resnet|resnet-nobn bnorm's residual network
(bnorm_spec.resnet_plan, built here as an nn.Module), on the Fashion-MNIST training images (no validation split) with Adam
(lr 1e-3; Keras's epsilon 1e-7), batch --batch, shuffled every epoch, Keras-like initialization
(Glorot-uniform kernels, zero biases) and Keras's BatchNormalization settings (momentum 0.99 ->
PyTorch momentum 0.01, epsilon 1e-3). A softmax at the end is fused into the cross-entropy, as
Keras does. Image models take N x 1 x 28 x 28 input; 'same' padding is TensorFlow's (the extra
row/column of an odd total goes after). Flatten flattens PyTorch's C, H, W order where Keras
flattens H, W, C: the next Dense kernel is a permutation of Keras's, which costs the same.

--memory-format auto (the default) times a few training steps of a conv model in each of
PyTorch's memory formats (contiguous NCHW and channels_last) on a fresh copy, then trains a fresh
model in the faster one. Prints one JSON line:
  {"epoch_seconds": [...], "loss": x, "accuracy": x, "version": "...", "images": n,
   "memory_format": "...", "probe_ms_per_step": {...}}
or {"unsupported": "..."} (exit 4) for a spec it cannot build, {"error": "..."} (exit 3) when
torch cannot be imported. Peak memory is measured by the parent (wait4's ru_maxrss).
"""

import argparse
import json
import sys
import time

import bnorm_spec

Unsupported = bnorm_spec.Unsupported


def _same(layer, height, width):
    """(left, right, top, bottom) zero padding of a 'same' window, TensorFlow's split."""
    dilation = layer.get("dilation_rate", (1, 1))
    window = layer["kernel_size"] if layer["kind"] == "conv" else layer["pool_size"]
    top, bottom = bnorm_spec.same_pads(height, window[0], layer["strides"][0], dilation[0])
    left, right = bnorm_spec.same_pads(width, window[1], layer["strides"][1], dilation[1])
    return left, right, top, bottom


def build_model(torch, layers, classes=10):
    nn = torch.nn
    if not layers:
        raise Unsupported("empty model")
    bnorm_spec.annotate(layers)
    last = layers[-1]
    if last["kind"] == "activation" and last["activation"] == "softmax":
        layers = layers[:-1]
    elif last["kind"] == "dense" and last["activation"] == "softmax":
        layers = layers[:-1] + [dict(last, activation="linear")]
    else:
        raise Unsupported("the model must end in a softmax (cross-entropy on logits)")
    if last["out"] != (classes,):
        raise Unsupported("the model outputs %s per image; Fashion-MNIST needs (%d,)"
                          % (last["out"], classes))
    formats = {layer["data_format"] for layer in layers if "data_format" in layer}
    if len(formats) > 1:
        raise Unsupported("image layers with different data_format values")
    first = formats == {"channels_first"}
    activations = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "linear": nn.Identity}

    def activation(layer, name):
        if name == "softmax":
            if len(layer["out"]) != 1:
                raise Unsupported("'%s': softmax over an image tensor" % layer["token"])
            return nn.Softmax(dim=1)
        return activations[name]()

    def channels_hw(shape):
        return (shape[0], shape[1], shape[2]) if first else (shape[2], shape[0], shape[1])

    modules = []
    for layer in layers:
        kind, shape = layer["kind"], layer["in"]
        if kind == "dense":
            if len(shape) != 1:
                raise Unsupported("'%s': Dense over an image tensor (flatten first)"
                                  % layer["token"])
            linear = nn.Linear(shape[0], layer["units"], bias=layer["use_bias"])
            nn.init.xavier_uniform_(linear.weight)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
            modules.append(linear)
            if layer["activation"] != "linear":
                modules.append(activation(layer, layer["activation"]))
        elif kind == "conv":
            channels, height, width = channels_hw(shape)
            padding = 0
            if layer["padding"] == "same":
                left, right, top, bottom = _same(layer, height, width)
                if (left, top) == (right, bottom):
                    padding = (top, left)
                else:
                    modules.append(nn.ZeroPad2d((left, right, top, bottom)))
            conv = nn.Conv2d(channels, layer["filters"], layer["kernel_size"],
                             stride=layer["strides"], padding=padding,
                             dilation=layer["dilation_rate"], bias=layer["use_bias"])
            nn.init.xavier_uniform_(conv.weight)  # fans kh*kw*cin and kh*kw*cout, as Keras
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            modules.append(conv)
            if layer["activation"] != "linear":
                modules.append(activation(layer, layer["activation"]))
        elif kind in ("maxpool", "avgpool"):
            _, height, width = channels_hw(shape)
            padding = 0
            if layer["padding"] == "same":
                left, right, top, bottom = _same(layer, height, width)
                if (left, top) == (right, bottom):
                    padding = (top, left)
                elif kind == "maxpool":
                    modules.append(nn.ConstantPad2d((left, right, top, bottom), float("-inf")))
                else:
                    raise Unsupported("'%s': uneven 'same' padding of an average pool"
                                      % layer["token"])
            if kind == "maxpool":
                modules.append(nn.MaxPool2d(layer["pool_size"], layer["strides"], padding))
            else:
                # TensorFlow averages over the window's valid positions only.
                modules.append(nn.AvgPool2d(layer["pool_size"], layer["strides"], padding,
                                            count_include_pad=False))
        elif kind == "gap":
            modules.append(nn.AdaptiveAvgPool2d(1))
            if not layer["keepdims"]:
                modules.append(nn.Flatten())
        elif kind == "bn":
            if layer["center"] != layer["scale"]:
                raise Unsupported("PyTorch BatchNorm has gamma and beta together")
            rank = len(shape)
            channel_axes = {1: (-1, 1)}.get(rank) or ((1, -3) if first else (-1, 3))
            if layer["axis"] not in channel_axes:
                raise Unsupported("'%s': only the channel axis can be normalized" % layer["token"])
            features = shape[0] if rank == 1 else channels_hw(shape)[0]
            norm = nn.BatchNorm1d if rank == 1 else nn.BatchNorm2d
            modules.append(norm(features, eps=layer["epsilon"], momentum=1.0 - layer["momentum"],
                                affine=layer["scale"]))
        elif kind == "dropout":
            modules.append(nn.Dropout(layer["rate"]))
        elif kind == "flatten":
            modules.append(nn.Flatten())
        elif kind == "activation":
            modules.append(activation(layer, layer["activation"]))
    return nn.Sequential(*modules)


def build_resnet(torch, plan):
    """bnorm's resnet preset (bnorm_spec.resnet_plan) as an nn.Module on N x 1 x 28 x 28 input."""
    nn = torch.nn
    bn = plan["batch_norm"]

    def conv_bn(conv):
        """Conv2d ('same' padding, TensorFlow's split; bias only without BN) and BatchNorm2d."""
        top, bottom = bnorm_spec.same_pads(conv["in_hw"][0], conv["kernel"], conv["stride"])
        left, right = bnorm_spec.same_pads(conv["in_hw"][1], conv["kernel"], conv["stride"])
        modules = []
        padding = (top, left)
        if (left, top) != (right, bottom):
            modules.append(nn.ZeroPad2d((left, right, top, bottom)))
            padding = 0
        layer = nn.Conv2d(conv["in"], conv["filters"], conv["kernel"], stride=conv["stride"],
                          padding=padding, bias=not bn)
        nn.init.xavier_uniform_(layer.weight)  # Keras's glorot_uniform (same fans)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
        modules.append(layer)
        if bn:
            modules.append(nn.BatchNorm2d(conv["filters"], eps=1e-3, momentum=0.01))
        return nn.Sequential(*modules)

    class Block(nn.Module):
        def __init__(self, block):
            super().__init__()
            self.main = nn.Sequential(conv_bn(block["conv1"]), nn.ReLU(),
                                      conv_bn(block["conv2"]))
            projection = block["projection"]
            self.shortcut = conv_bn(projection) if projection else nn.Identity()

        def forward(self, x):
            return torch.relu(self.main(x) + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(conv_bn(plan["stem"]), nn.ReLU())
            self.blocks = nn.Sequential(*[Block(b) for b in plan["blocks"]])
            self.head = nn.Linear(plan["blocks"][-1]["conv2"]["filters"], plan["classes"])
            nn.init.xavier_uniform_(self.head.weight)
            nn.init.zeros_(self.head.bias)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.head(x.mean(dim=(2, 3)))  # GlobalAveragePooling2D; softmax in the loss

    return ResNet()


def train_step(torch, model, optimizer, xb, yb):
    logits = model(xb)
    loss = torch.nn.functional.cross_entropy(logits, yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return logits, loss


def build(torch, args):
    """The model --preset or --spec names."""
    if args.preset:
        return build_resnet(torch, bnorm_spec.resnet_plan(args.preset))
    return build_model(torch, bnorm_spec.parse(args.spec))


def make(torch, args, memory_format):
    torch.manual_seed(args.seed)
    model = build(torch, args).to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    return model, optimizer


def probe(torch, args, memory_format, x, y, batch, steps=24, skip=4):
    """Median milliseconds per training step of a fresh model on the first batches."""
    model, optimizer = make(torch, args, memory_format)
    model.train()
    n = x.shape[0]
    times = []
    for step in range(steps):
        begin = (step * batch) % max(n - batch + 1, 1)
        xb = x[begin:begin + batch].contiguous(memory_format=memory_format)
        yb = y[begin:begin + batch]
        start = time.perf_counter()
        train_step(torch, model, optimizer, xb, yb)
        if step >= skip:
            times.append(time.perf_counter() - start)
    times.sort()
    return 1e3 * times[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="dense64-relu,bn,dense10-softmax")
    parser.add_argument("--preset", choices=bnorm_spec.PRESETS,
                        help="one of bnorm's functional presets instead of --spec")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--train-limit", type=int, default=0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--memory-format", choices=("auto", "contiguous", "channels_last"),
                        default="auto")
    args = parser.parse_args()

    try:
        import torch
    except Exception as e:
        print(json.dumps({"error": "cannot import torch: %s" % e}), flush=True)
        return 3
    torch.set_num_threads(args.threads)
    try:
        if args.preset:
            image = True
        else:
            image = len(bnorm_spec.annotate(bnorm_spec.parse(args.spec))[0]["in"]) == 3
        make(torch, args, torch.contiguous_format)
    except Unsupported as e:
        print(json.dumps({"unsupported": str(e)}), flush=True)
        return 4

    x_np, y_np = bnorm_spec.load_train_set(args.data, args.train_limit)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    del x_np
    n = x.shape[0]
    if image:
        x = x.view(n, 1, 28, 28)  # N x C x H x W whatever the Keras data_format
    formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    choice, probe_ms = args.memory_format, {}
    if not image:
        choice = "contiguous"  # 2-D tensors have one layout
    elif choice == "auto":
        for name, memory_format in formats.items():
            probe_ms[name] = probe(torch, args, memory_format, x, y, args.batch)
        choice = min(probe_ms, key=probe_ms.get)
    memory_format = formats[choice]

    model, optimizer = make(torch, args, memory_format)
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
            if image:
                xb = xb.contiguous(memory_format=memory_format)
            logits, loss = train_step(torch, model, optimizer, xb, yb)
            with torch.no_grad():
                loss_sum += loss.detach() * len(index)
                correct += (logits.argmax(dim=1) == yb).sum()
        epoch_seconds.append(time.perf_counter() - start)
        loss_mean = float(loss_sum) / n
        accuracy = float(correct) / n
    result = {"epoch_seconds": epoch_seconds, "loss": loss_mean, "accuracy": accuracy,
              "version": torch.__version__, "images": n}
    if image:
        result["version"] += " (%s)" % choice
        result["memory_format"] = choice
        result["probe_ms_per_step"] = probe_ms
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
