"""bnorm model specs ("conv32-3x3-same,bn,relu,maxpool2,flatten,dense10-softmax") for the peers.

Mirrors the grammar of include/bnorm/model/spec.hpp (src/model/spec.cpp is the reference):
layers separated by commas, each a token optionally followed by ":key=value" options.
  dense<units>[-<activation>]                       options use_bias, activation
  bn | batchnorm | batch_normalization              options axis, momentum, epsilon, center, scale
  conv<filters>-<k>[x<k>][-same|-valid][-<act>]     options strides, padding, dilation_rate,
                                                    data_format, use_bias, activation
  maxpool<k>[x<k>][-same|-valid], avgpool...        options strides, padding, data_format
  gap | global_average_pooling2d                    options data_format, keepdims
  dropout<rate>, flatten, relu, sigmoid, tanh, softmax, linear
parse() returns plain dicts that torch_train.py and keras_train.py turn into their own layers;
annotate() adds each layer's per-sample input/output shapes (Keras order, as bnorm builds them on
Fashion-MNIST); Unsupported is raised for anything the peers cannot build.

The functional presets of bnorm (include/bnorm/model/presets.hpp) have no spec: resnet_plan()
lists their blocks, from which each peer builds its own layers (the one Python description of the
network; the peers only translate it).
"""

import math

ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax", "linear")
PADDINGS = ("same", "valid")
DATA_FORMATS = ("channels_last", "channels_first")
IMAGE_KINDS = ("conv", "maxpool", "avgpool", "gap")


class Unsupported(Exception):
    """A spec (or an option in it) that the peers cannot build."""


def _bool(token, text):
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise Unsupported("'%s': '%s' is not 0/1/true/false" % (token, text))


def _number(token, text):
    try:
        value = float(text)
    except ValueError:
        raise Unsupported("'%s': '%s' is not a number" % (token, text)) from None
    if math.isnan(value) or math.isinf(value):
        raise Unsupported("'%s': '%s' is not a number" % (token, text))
    return value


def _count(token, text, what):
    value = _number(token, text) if text else None
    if value is None or value < 1 or value != math.floor(value) or value > 1e9:
        raise Unsupported("'%s': %s must be a positive integer" % (token, what))
    return int(value)


def _pair(token, text, what):
    """"3" -> (3, 3), "3x5" -> (3, 5) (height x width)."""
    height, x, width = text.partition("x")
    if not x:
        value = _count(token, text, what)
        return (value, value)
    return (_count(token, height, what), _count(token, width, what))


def _activation(token, name):
    if name not in ACTIVATIONS:
        raise Unsupported("'%s': unknown activation '%s'" % (token, name))
    return name


def _choice(token, text, choices, what):
    if text not in choices:
        raise Unsupported("'%s': unknown %s '%s' (%s)" % (token, what, text, ", ".join(choices)))
    return text


def _layer(token):
    head, *pairs = token.split(":")
    options = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise Unsupported("option '%s' is not key=value" % pair)
        options[key] = value

    def take(key, default=None):
        return options.pop(key, default)

    if head.startswith("dense"):
        units_text, _, activation = head[5:].partition("-")
        layer = {"kind": "dense", "units": _count(token, units_text, "units"),
                 "activation": _activation(token, take("activation", activation or "linear")),
                 "use_bias": _bool(token, take("use_bias", "1"))}
    elif head in ("bn", "batchnorm", "batch_normalization"):
        layer = {"kind": "bn", "axis": int(_number(token, take("axis", "-1"))),
                 "momentum": _number(token, take("momentum", "0.99")),
                 "epsilon": _number(token, take("epsilon", "0.001")),
                 "center": _bool(token, take("center", "1")),
                 "scale": _bool(token, take("scale", "1"))}
    elif head.startswith("conv"):
        parts = head[4:].split("-")
        if len(parts) < 2:
            raise Unsupported("'%s': expected conv<filters>-<kernel size>" % token)
        layer = {"kind": "conv", "filters": _count(token, parts[0], "filters"),
                 "kernel_size": _pair(token, parts[1], "kernel_size"), "strides": (1, 1),
                 "padding": "valid", "dilation_rate": (1, 1), "data_format": "channels_last",
                 "use_bias": True, "activation": "linear"}
        for i, part in enumerate(parts[2:], start=2):
            if part in PADDINGS:
                layer["padding"] = part
            elif i + 1 == len(parts):
                layer["activation"] = _activation(token, part)
            else:
                raise Unsupported("'%s': '%s' is not a padding (same, valid)" % (token, part))
        if "strides" in options:
            layer["strides"] = _pair(token, take("strides"), "strides")
        layer["padding"] = _choice(token, take("padding", layer["padding"]), PADDINGS, "padding")
        if "dilation_rate" in options:
            layer["dilation_rate"] = _pair(token, take("dilation_rate"), "dilation_rate")
        layer["data_format"] = _choice(token, take("data_format", "channels_last"), DATA_FORMATS,
                                       "data_format")
        layer["use_bias"] = _bool(token, take("use_bias", "1"))
        layer["activation"] = _activation(token, take("activation", layer["activation"]))
        if layer["strides"] != (1, 1) and layer["dilation_rate"] != (1, 1):
            raise Unsupported("'%s': strides and dilation_rate cannot both be > 1" % token)
    elif head.startswith("maxpool") or head.startswith("avgpool"):
        parts = head[7:].split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[1] not in PADDINGS):
            raise Unsupported("'%s': expected %s<k>[x<k>][-same|-valid]" % (token, head[:7]))
        pool_size = _pair(token, parts[0], "pool_size")
        layer = {"kind": head[:7], "pool_size": pool_size,
                 "padding": parts[1] if len(parts) == 2 else "valid"}
        layer["strides"] = _pair(token, take("strides"), "strides") if "strides" in options \
            else pool_size
        layer["padding"] = _choice(token, take("padding", layer["padding"]), PADDINGS, "padding")
        layer["data_format"] = _choice(token, take("data_format", "channels_last"), DATA_FORMATS,
                                       "data_format")
    elif head in ("gap", "global_average_pooling2d"):
        layer = {"kind": "gap",
                 "data_format": _choice(token, take("data_format", "channels_last"),
                                        DATA_FORMATS, "data_format"),
                 "keepdims": _bool(token, take("keepdims", "0"))}
    elif head.startswith("dropout"):
        rate = _number(token, head[7:]) if head[7:] else None
        if rate is None or not 0.0 <= rate < 1.0:
            raise Unsupported("'%s': rate must be in [0, 1)" % token)
        layer = {"kind": "dropout", "rate": rate}
    elif head == "flatten":
        layer = {"kind": "flatten"}
    elif head in ACTIVATIONS:
        layer = {"kind": "activation", "activation": head}
    else:
        raise Unsupported("unknown layer '%s'" % token)
    if options:
        raise Unsupported("'%s': unknown option '%s'" % (token, next(iter(options))))
    layer["token"] = token
    return layer


def parse(spec):
    layers = []
    for token in spec.replace(" ", "").replace("\t", "").split(","):
        if not token:
            raise Unsupported("empty layer entry in '%s'" % spec)
        layers.append(_layer(token))
    return layers


def input_shape(layers, side=28):
    """Per-sample input shape as bnorm's CLI gives it: (28, 28, 1) (or (1, 28, 28) for
    channels_first) when the first layer is an image layer, else the flattened (784,)."""
    if layers and layers[0]["kind"] in IMAGE_KINDS:
        if layers[0]["data_format"] == "channels_first":
            return (1, side, side)
        return (side, side, 1)
    return (side * side,)


def _window_out(size, window, stride, dilation, padding):
    effective = (window - 1) * dilation + 1
    if padding == "same":
        return -(-size // stride)
    return (size - effective) // stride + 1 if size >= effective else 0


def same_pads(size, window, stride, dilation=1):
    """TensorFlow/Keras 'same' padding of one spatial axis: (before, after), after >= before."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (window - 1) * dilation + 1 - size, 0)
    return (total // 2, total - total // 2)


def annotate(layers, side=28):
    """Adds "in" and "out" per-sample shapes (Keras order) to every layer; Unsupported for a
    layer that does not fit the shape it receives."""
    shape = input_shape(layers, side)
    for layer in layers:
        kind = layer["kind"]
        layer["in"] = shape
        if kind in IMAGE_KINDS:
            if len(shape) != 3:
                raise Unsupported("'%s' needs an image input; it receives %s"
                                  % (layer["token"], shape))
            first = layer["data_format"] == "channels_first"
            channels, height, width = (shape[0], shape[1], shape[2]) if first \
                else (shape[2], shape[0], shape[1])
            if kind == "gap":
                out_hw, channels_out = (1, 1), channels
            else:
                window = layer["kernel_size"] if kind == "conv" else layer["pool_size"]
                dilation = layer.get("dilation_rate", (1, 1))
                out_hw = tuple(_window_out(s, window[i], layer["strides"][i], dilation[i],
                                           layer["padding"])
                               for i, s in enumerate((height, width)))
                channels_out = layer["filters"] if kind == "conv" else channels
                if min(out_hw) < 1:
                    raise Unsupported("'%s': the output of %s would be empty"
                                      % (layer["token"], shape))
            if kind == "gap" and not layer["keepdims"]:
                shape = (channels_out,)
            elif first:
                shape = (channels_out,) + out_hw
            else:
                shape = out_hw + (channels_out,)
        elif kind == "dense":
            shape = shape[:-1] + (layer["units"],)
        elif kind == "flatten":
            shape = (math.prod(shape),)
        layer["out"] = shape
    return layers


PRESETS = ("resnet", "resnet-nobn")


def resnet_plan(preset, side=28):
    """bnorm::resnet with its default ResNetOptions (src/model/presets.cpp) as plain data.

    Returns {"batch_norm": bool, "input": (side, side, 1), "stem": conv, "blocks": [...],
    "classes": 10}, where a conv is {"in": channels, "filters", "kernel", "stride",
    "in_hw": (h, w), "out_hw": (h, w)} (always padding 'same', no bias with BN, a bias without)
    and a block is {"conv1": conv, "conv2": conv, "projection": conv or None}:
      stem: Conv2D(16, 3) -> BN -> ReLU
      block: y = BN(conv1) -> ReLU -> BN(conv2); shortcut = BN(projection) (a 1x1 conv with
      conv1's stride) where the shape changes, else the identity; out = ReLU(y + shortcut)
      head: GlobalAveragePooling2D -> Dense(classes, softmax)
    Stages have 16, 32, 64 filters, one block each; stages after the first start with stride 2.
    With "resnet-nobn" every BatchNormalization is left out.
    """
    if preset not in PRESETS:
        raise Unsupported("unknown preset '%s' (%s)" % (preset, ", ".join(PRESETS)))
    filters, blocks_per_stage = (16, 32, 64), 1

    def conv(channels, out, kernel, stride, in_hw):
        out_hw = tuple(-(-size // stride) for size in in_hw)  # 'same': ceil(size / stride)
        return {"in": channels, "filters": out, "kernel": kernel, "stride": stride,
                "in_hw": in_hw, "out_hw": out_hw}

    stem = conv(1, filters[0], 3, 1, (side, side))
    channels, hw = filters[0], stem["out_hw"]
    blocks = []
    for stage, f in enumerate(filters):
        for b in range(blocks_per_stage):
            stride = 2 if stage > 0 and b == 0 else 1
            conv1 = conv(channels, f, 3, stride, hw)
            conv2 = conv(f, f, 3, 1, conv1["out_hw"])
            projection = None
            if stride != 1 or channels != f:
                projection = conv(channels, f, 1, stride, hw)
            blocks.append({"conv1": conv1, "conv2": conv2, "projection": projection})
            channels, hw = f, conv2["out_hw"]
    return {"batch_norm": preset == "resnet", "input": (side, side, 1), "stem": stem,
            "blocks": blocks, "classes": 10}


def read_idx(path, magic):
    """An IDX file (gzip or raw) as a numpy uint8 array of its dimensions."""
    import gzip
    import numpy as np
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    got = int.from_bytes(data[0:4], "big")
    if got != magic:
        raise ValueError("%s: magic %#x, expected %#x" % (path, got, magic))
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(directory, split, limit):
    """Fashion-MNIST images of a split ("train" or "t10k") as float32 (N, 784) in [0, 1] and
    int64 labels (N,)."""
    import os
    import numpy as np

    def find(name):
        for candidate in (name + ".gz", name):
            path = os.path.join(directory, candidate)
            if os.path.exists(path):
                return path
        raise FileNotFoundError("Fashion-MNIST not found in %s (missing %s.gz)" % (directory, name))

    images = read_idx(find(split + "-images-idx3-ubyte"), 0x803)
    labels = read_idx(find(split + "-labels-idx1-ubyte"), 0x801)
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    return x, labels.astype(np.int64)


def load_train_set(directory, limit):
    """Fashion-MNIST training images as float32 (N, 784) in [0, 1] and int64 labels (N,)."""
    return load_split(directory, "train", limit)
