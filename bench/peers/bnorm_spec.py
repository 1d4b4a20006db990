"""bnorm model specs ("dense64-relu,bn,dense10-softmax") for the Python training peers.

Mirrors the grammar of include/bnorm/model/spec.hpp: layers separated by commas, each a token
optionally followed by ":key=value" options. Returns plain dicts that torch_train.py and
keras_train.py turn into their own layers; raises Unsupported for anything else.
"""

ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax", "linear")


class Unsupported(Exception):
    """A spec (or an option in it) that the peers cannot build."""


def _bool(text):
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise Unsupported("'%s' is not 0/1/true/false" % text)


def parse(spec):
    layers = []
    for token in spec.replace(" ", "").replace("\t", "").split(","):
        if not token:
            raise Unsupported("empty layer entry in '%s'" % spec)
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
            if not units_text.isdigit() or int(units_text) < 1:
                raise Unsupported("'%s': units must be a positive integer" % token)
            layer = {"kind": "dense", "units": int(units_text),
                     "activation": take("activation", activation or "linear"),
                     "use_bias": _bool(take("use_bias", "1"))}
            if layer["activation"] not in ACTIVATIONS:
                raise Unsupported("'%s': unknown activation" % token)
        elif head in ("bn", "batchnorm", "batch_normalization"):
            axis = int(float(take("axis", "-1")))
            if axis not in (-1, 1):
                raise Unsupported("'%s': only axis -1 (the features of a Dense output)" % token)
            layer = {"kind": "bn", "momentum": float(take("momentum", "0.99")),
                     "epsilon": float(take("epsilon", "0.001")),
                     "center": _bool(take("center", "1")), "scale": _bool(take("scale", "1"))}
        elif head.startswith("dropout"):
            layer = {"kind": "dropout", "rate": float(head[7:])}
        elif head == "flatten":
            layer = {"kind": "flatten"}
        elif head in ACTIVATIONS:
            layer = {"kind": "activation", "activation": head}
        else:
            raise Unsupported("unknown layer '%s'" % token)
        if options:
            raise Unsupported("'%s': unknown option '%s'" % (token, next(iter(options))))
        layers.append(layer)
    return layers


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


def load_train_set(directory, limit):
    """Fashion-MNIST training images as float32 (N, 784) in [0, 1] and int64 labels (N,)."""
    import os
    import numpy as np

    def find(name):
        for candidate in (name + ".gz", name):
            path = os.path.join(directory, candidate)
            if os.path.exists(path):
                return path
        raise FileNotFoundError("Fashion-MNIST not found in %s (missing %s.gz)" % (directory, name))

    images = read_idx(find("train-images-idx3-ubyte"), 0x803)
    labels = read_idx(find("train-labels-idx1-ubyte"), 0x801)
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    return x, labels.astype(np.int64)
