#!/usr/bin/env python3
"""Keras training peer of `bnorm bench train`: the same model, data and settings as bnorm.

Builds a bnorm model spec (bnorm_spec.py) as a keras.Sequential on the input bnorm gives it
(Input(784), or (28, 28, 1) when the first layer is an image layer), or with
--preset resnet|resnet-nobn bnorm's residual network (bnorm_spec.resnet_plan) in the functional
API on (28, 28, 1); compiles it with
Adam (lr 1e-3), sparse categorical cross-entropy and accuracy, and fits it on the Fashion-MNIST
training images (no validation split, shuffled, verbose 0) with TensorFlow limited to --threads
intra-op threads and one inter-op thread. Prints one JSON line:
  {"epoch_seconds": [...], "loss": x, "accuracy": x, "version": "...", "images": n}
or {"unsupported": "..."} (exit 4), or {"error": "..."} (exit 3) when Keras/TensorFlow cannot be
imported. Peak memory is measured by the parent (wait4's ru_maxrss).

--module bnorm runs the same script on bnorm's Python module (`import bnorm as keras`): the
Keras code above, unchanged, on bnorm (bench/python_train.py compares the three).
"""

import argparse
import json
import os
import sys
import time

import bnorm_spec


def build_model(keras, layers):
    bnorm_spec.annotate(layers)
    model = keras.Sequential([keras.Input(shape=bnorm_spec.input_shape(layers))])
    for layer in layers:
        kind = layer["kind"]
        if kind == "dense":
            model.add(keras.layers.Dense(layer["units"], activation=layer["activation"],
                                         use_bias=layer["use_bias"]))
        elif kind == "conv":
            model.add(keras.layers.Conv2D(layer["filters"], layer["kernel_size"],
                                          strides=layer["strides"], padding=layer["padding"],
                                          data_format=layer["data_format"],
                                          dilation_rate=layer["dilation_rate"],
                                          activation=layer["activation"],
                                          use_bias=layer["use_bias"]))
        elif kind in ("maxpool", "avgpool"):
            pool = keras.layers.MaxPooling2D if kind == "maxpool" else keras.layers.AveragePooling2D
            model.add(pool(layer["pool_size"], strides=layer["strides"], padding=layer["padding"],
                           data_format=layer["data_format"]))
        elif kind == "gap":
            model.add(keras.layers.GlobalAveragePooling2D(data_format=layer["data_format"],
                                                          keepdims=layer["keepdims"]))
        elif kind == "bn":
            model.add(keras.layers.BatchNormalization(axis=layer["axis"],
                                                      momentum=layer["momentum"],
                                                      epsilon=layer["epsilon"],
                                                      center=layer["center"],
                                                      scale=layer["scale"]))
        elif kind == "dropout":
            model.add(keras.layers.Dropout(layer["rate"]))
        elif kind == "flatten":
            model.add(keras.layers.Flatten())
        elif kind == "activation":
            model.add(keras.layers.Activation(layer["activation"]))
    if tuple(model.output_shape[1:]) != (10,):
        raise bnorm_spec.Unsupported("the model outputs %s per image; Fashion-MNIST needs (10,)"
                                     % (tuple(model.output_shape[1:]),))
    return model


def build_resnet(keras, plan):
    """bnorm's resnet preset (bnorm_spec.resnet_plan) in the functional API on (28, 28, 1)."""
    layers = keras.layers
    bn = plan["batch_norm"]

    def conv_bn(x, conv):
        x = layers.Conv2D(conv["filters"], conv["kernel"], strides=conv["stride"], padding="same",
                          use_bias=not bn)(x)
        return layers.BatchNormalization(momentum=0.99, epsilon=1e-3)(x) if bn else x

    inputs = keras.Input(shape=plan["input"])
    h = layers.Activation("relu")(conv_bn(inputs, plan["stem"]))
    for block in plan["blocks"]:
        y = layers.Activation("relu")(conv_bn(h, block["conv1"]))
        y = conv_bn(y, block["conv2"])
        shortcut = conv_bn(h, block["projection"]) if block["projection"] else h
        h = layers.Activation("relu")(layers.Add()([y, shortcut]))
    h = layers.GlobalAveragePooling2D()(h)
    outputs = layers.Dense(plan["classes"], activation="softmax")(h)
    return keras.Model(inputs, outputs, name="resnet")


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
    parser.add_argument("--module", choices=("keras", "bnorm"), default="keras",
                        help="run on Keras 3 (TensorFlow backend) or on bnorm's Python module")
    args = parser.parse_args()

    if args.module == "bnorm":
        try:
            import bnorm as keras
        except Exception as e:
            print(json.dumps({"error": "cannot import bnorm: %s" % e}), flush=True)
            return 3
        keras.set_num_threads(args.threads)
        version = "bnorm %s (Python)" % keras.__version__
    else:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import tensorflow as tf
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
            import keras
        except Exception as e:
            print(json.dumps({"error": "cannot import keras/tensorflow: %s" % e}), flush=True)
            return 3
        version = "%s (TensorFlow %s)" % (keras.__version__, tf.__version__)
    keras.utils.set_random_seed(args.seed)
    try:
        if args.preset:
            plan = bnorm_spec.resnet_plan(args.preset)
            model, input_shape = build_resnet(keras, plan), plan["input"]
        else:
            layers = bnorm_spec.parse(args.spec)
            model = build_model(keras, layers)
            input_shape = bnorm_spec.input_shape(layers)
    except bnorm_spec.Unsupported as e:
        print(json.dumps({"unsupported": str(e)}), flush=True)
        return 4
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    x, y = bnorm_spec.load_train_set(args.data, args.train_limit)
    x = x.reshape((len(x),) + tuple(input_shape))
    timer = EpochTimer()
    history = model.fit(x, y, batch_size=args.batch, epochs=args.epochs, shuffle=True, verbose=0,
                        callbacks=[timer])
    print(json.dumps({"epoch_seconds": timer.seconds, "loss": history.history["loss"][-1],
                      "accuracy": history.history["accuracy"][-1],
                      "version": version,
                      "images": len(x)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
