#!/usr/bin/env python3
"""Generate golden Keras model files for bnorm's Keras loader (keras_files).

Every case builds a small model with the real Keras 3 (TensorFlow backend),
gives it random weights (not the initializers' values) and non-trivial
BatchNormalization moving statistics, and writes

  fixtures/keras_files/<case>/model.keras   Keras 3 `model.save` (zip)
  fixtures/keras_files/<case>/model.h5      Keras 3 legacy HDF5 save
  fixtures/keras_files/<case>/tf2.h5        tf.keras 2 (the `tf_keras`
                                            package) legacy HDF5 save of the
                                            same architecture and weights,
                                            where tf_keras can build it
  fixtures/keras_files/<case>/x.npy         one input batch (x0.npy, x1.npy
                                            for several inputs)
  fixtures/keras_files/<case>/y.npy         Keras 3 predictions,
                                            model(x, training=False)
                                            (y0.npy, y1.npy for several
                                            outputs)
  fixtures/keras_files/<case>/meta.json     what the case is and which files
                                            exist

Cases named refuse_* are files the loader must refuse: they have no x/y and
meta.json gives "expect_error_substring".

Conventions follow generate_fixtures.py: data drawn from
numpy.random.default_rng(crc32("keras_files/<case>")), Keras seeded from the
same number, TensorFlow single-threaded with op determinism on.  The .npy and
meta.json files are reproducible; the .keras/.h5 files carry save timestamps
(zip member times, metadata.json "date_saved"), so their bytes change on
every run even when their content does not.

Run through tests/parity/generate.sh (which also runs generate_fixtures.py)
or alone:  <venv>/bin/python tests/parity/generate_keras_files.py
           [--only CASE ...] [--skip-mobilenet]
See docs/parity-fixtures.md, section "keras_files".
"""

from __future__ import annotations

import os

# Must be set before TensorFlow / Keras are imported.
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402

from keras_check_util import rel_err  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.experimental.enable_op_determinism()
warnings.filterwarnings("ignore")

import keras  # noqa: E402

try:
    import tf_keras  # noqa: E402
except ImportError:  # tf.keras 2 files are then skipped (noted in meta.json)
    tf_keras = None

keras.config.set_floatx("float32")
keras.config.set_epsilon(1e-7)

HERE = pathlib.Path(__file__).resolve().parent
OUT_DIR = HERE / "fixtures" / "keras_files"
FAMILY = "keras_files"
GENERATOR = "tests/parity/generate_keras_files.py"

VERSIONS = {
    "python": platform.python_version(),
    "numpy": np.__version__,
    "tensorflow": tf.__version__,
    "keras": keras.__version__,
    "tf_keras": tf_keras.__version__ if tf_keras is not None else None,
}

# The saved files must reproduce y.npy when Keras itself reloads them; this
# is checked for every case before it is written (max |a-b| / max(1, |b|)).
RELOAD_TOL = 1e-6
# tf_keras and Keras 3 may differ in float rounding (different kernels for the
# same op); beyond this the difference is a semantic one and is recorded.
TF2_TOL = 1e-5


def case_seed(case: str) -> int:
    return zlib.crc32(f"{FAMILY}/{case}".encode())


def as_list(v):
    if isinstance(v, dict):
        return list(v.values())
    return list(v) if isinstance(v, (list, tuple)) else [v]


# --------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------


def var_kind(path: str) -> str:
    return path.rsplit("/", 1)[-1].split(":")[0]


def randomize(model, rng, scope: str = "all") -> None:
    """Random values for every float weight whose role we know.

    scope="all": kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.2),
    gamma ~ U(0.5, 1.5), beta ~ N(0, 0.5), moving_mean ~ N(0, 1),
    moving_variance ~ U(0.5, 2).  scope="bn_stats": only the moving
    statistics (moving_mean ~ N(0, 0.5)).  Normalization's adapted
    mean/variance/count are left as adapt() set them."""
    for v in model.weights:
        kind = var_kind(v.path)
        shape = tuple(v.shape)
        if scope == "bn_stats" and kind not in ("moving_mean",
                                                "moving_variance"):
            continue
        if kind in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            if kind == "depthwise_kernel":
                fan_in = int(np.prod(shape[:2]))
            val = rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), shape)
        elif kind == "bias":
            val = rng.normal(0.0, 0.2, shape)
        elif kind == "gamma":
            val = rng.uniform(0.5, 1.5, shape)
        elif kind == "beta":
            val = rng.normal(0.0, 0.5, shape)
        elif kind == "moving_mean":
            val = rng.normal(0.0, 0.5 if scope == "bn_stats" else 1.0, shape)
        elif kind == "moving_variance":
            val = rng.uniform(0.5, 2.0, shape)
        else:
            continue
        v.assign(val.astype(np.float32))


def copy_weights(src, dst) -> None:
    """Copy Keras 3 weights into the tf_keras twin layer by layer (nested
    models recursively), so the two weight orders never have to agree for
    whole models."""
    for ls, ld in zip(src.layers, dst.layers):
        if hasattr(ls, "layers") and hasattr(ld, "layers") and ls.layers:
            copy_weights(ls, ld)
            continue
        w = ls.get_weights()
        if w or ld.weights:
            ld.set_weights(w)


# --------------------------------------------------------------------------
# case builders: every builder takes the Keras module (keras or tf_keras) so
# the same architecture is built by both.
# --------------------------------------------------------------------------


def seq(K, input_shape, *layers, name=None):
    return K.Sequential([K.Input(shape=input_shape), *layers], name=name)


def act_only(act):
    return lambda K: seq(K, (8,), K.layers.Activation(act))


def conv_model(**kw):
    shape = kw.pop("input_shape", (9, 9, 3))
    return lambda K: seq(K, shape, K.layers.Conv2D(**kw))


def image_seq(shape, make):
    return lambda K: seq(K, shape, *make(K))


def residual_block(K):
    inp = K.Input(shape=(8, 8, 4), name="image")
    x = K.layers.Conv2D(4, 3, padding="same", use_bias=False)(inp)
    x = K.layers.BatchNormalization()(x)
    x = K.layers.ReLU()(x)
    x = K.layers.Conv2D(4, 3, padding="same", use_bias=False)(x)
    x = K.layers.BatchNormalization()(x)
    x = K.layers.Add()([inp, x])
    x = K.layers.Activation("relu")(x)
    x = K.layers.GlobalAveragePooling2D()(x)
    out = K.layers.Dense(5, activation="softmax")(x)
    return K.Model(inp, out, name="residual")


def two_in_two_out(K):
    a = K.Input(shape=(6,), name="features")
    b = K.Input(shape=(4, 4, 2), name="image")
    fa = K.layers.Dense(8, activation="relu")(a)
    fa = K.layers.BatchNormalization()(fa)
    fb = K.layers.Conv2D(3, 3, padding="valid")(b)
    fb = K.layers.Flatten()(fb)
    fb = K.layers.Dense(8)(fb)
    m = K.layers.Concatenate()([fa, fb])
    out1 = K.layers.Dense(3, activation="softmax", name="class_probs")(m)
    out2 = K.layers.Dense(1, name="score")(fa)
    return K.Model([a, b], [out1, out2], name="two_heads")


def nested_sequential(K):
    # BN between two Dense layers: tf.keras 2 stores a nested model's weights
    # trainable-first (gamma, beta, kernel_1, bias_1, then moving stats), so
    # positional order differs from layer order there.
    inner = K.Sequential([K.Input(shape=(6,)),
                          K.layers.Dense(8, activation="relu"),
                          K.layers.BatchNormalization(),
                          K.layers.Dense(8, activation="relu")],
                         name="inner_block")
    inp = K.Input(shape=(6,))
    x = inner(inp)
    out = K.layers.Dense(4, activation="softmax")(x)
    return K.Model(inp, out, name="outer")


def nested_functional(K):
    i = K.Input(shape=(5, 5, 3))
    h = K.layers.Conv2D(4, 3, padding="same")(i)
    h = K.layers.BatchNormalization()(h)
    h = K.layers.Activation("relu")(h)
    inner = K.Model(i, h, name="inner_cnn")
    inp = K.Input(shape=(5, 5, 3))
    x = K.layers.BatchNormalization()(inp)
    x = inner(x)
    x = K.layers.GlobalMaxPooling2D()(x)
    out = K.layers.Dense(3)(x)
    return K.Model(inp, out, name="outer_functional")


def shared_layer(K):
    inp = K.Input(shape=(6,))
    shared = K.layers.Dense(6, activation="tanh", name="shared_dense")
    h1 = shared(inp)
    h2 = shared(h1)
    out = K.layers.Add()([h1, h2])
    out = K.layers.Dense(3)(out)
    return K.Model(inp, out, name="shared")


def merge_model(kind, **kw):
    def build(K):
        a = K.Input(shape=(4, 4, 3))
        b = K.Input(shape=(4, 4, 3))
        pa = K.layers.Conv2D(3, 1)(a)
        pb = K.layers.BatchNormalization()(b)
        m = getattr(K.layers, kind)(**kw)([pa, pb])
        m = K.layers.Flatten()(m)
        return K.Model([a, b], K.layers.Dense(2)(m), name=kind.lower())
    return build


def concat_three(K):
    a = K.Input(shape=(5,))
    x1 = K.layers.Dense(3)(a)
    x2 = K.layers.Dense(4)(a)
    x3 = K.layers.BatchNormalization()(a)
    m = K.layers.Concatenate(axis=-1)([x1, x2, x3])
    return K.Model(a, K.layers.Dense(2)(m), name="concat3")


def concat_axis1(K):
    a = K.Input(shape=(4, 4, 2))
    x1 = K.layers.Conv2D(2, 3, padding="same")(a)
    m = K.layers.Concatenate(axis=1)([a, x1])        # along height
    m = K.layers.Flatten()(m)
    return K.Model(a, K.layers.Dense(3)(m), name="concat_axis1")


def named_layers(K):
    # Names sort in the opposite order to the layers, so an HDF5 reader that
    # walks groups alphabetically, or maps by name guesses, loads wrongly.
    return seq(K, (7,),
               K.layers.Dense(6, activation="relu", name="zeta_dense"),
               K.layers.BatchNormalization(name="mid_bn"),
               K.layers.Dense(5, activation="relu", name="alpha_dense"),
               K.layers.Dense(3, name="logits"),
               name="named")


def canonical(K):
    return seq(K, (784,),
               K.layers.Dense(64, activation="relu"),
               K.layers.BatchNormalization(),
               K.layers.Dense(10, activation="softmax"))


def small_cnn(K):
    return seq(K, (10, 10, 3),
               K.layers.Conv2D(6, 3, padding="same", use_bias=False),
               K.layers.BatchNormalization(),
               K.layers.ReLU(),
               K.layers.MaxPooling2D(),
               K.layers.Conv2D(8, 3, padding="valid"),
               K.layers.BatchNormalization(),
               K.layers.Activation("relu"),
               K.layers.GlobalAveragePooling2D(),
               K.layers.Dropout(0.25),
               K.layers.Dense(4, activation="softmax"))


def init_variety(K):
    I = K.initializers
    return seq(K, (6,),
               K.layers.Dense(5, kernel_initializer=I.RandomUniform(-0.1, 0.1),
                              bias_initializer=I.Constant(0.3)),
               K.layers.BatchNormalization(gamma_initializer=I.Constant(2.0),
                                           beta_initializer=I.Ones(),
                                           moving_mean_initializer=I.Zeros(),
                                           moving_variance_initializer=I.Ones()),
               K.layers.Dense(4, kernel_initializer=I.RandomNormal(0.0, 0.05),
                              bias_initializer=I.Zeros()),
               K.layers.Dense(3, kernel_initializer=I.GlorotUniform(seed=3)))


def efficientnet_style(K):
    # EfficientNet's stem/SE pattern: Rescaling, Normalization, Reshape,
    # Multiply, swish/sigmoid, Dropout with a noise_shape.
    inp = K.Input(shape=(6, 6, 3))
    x = K.layers.Rescaling(1.0 / 255.0)(inp)
    x = K.layers.Normalization(axis=-1, mean=[0.485, 0.456, 0.406],
                               variance=[0.052, 0.050, 0.051])(x)
    x = K.layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = K.layers.BatchNormalization()(x)
    x = K.layers.Activation("swish")(x)
    se = K.layers.GlobalAveragePooling2D()(x)
    se = K.layers.Reshape((1, 1, 8))(se)
    se = K.layers.Conv2D(2, 1, activation="swish")(se)
    se = K.layers.Conv2D(8, 1, activation="sigmoid")(se)
    x = K.layers.Multiply()([x, se])
    x = K.layers.Dropout(0.2, noise_shape=(None, 1, 1, 1))(x)
    x = K.layers.GlobalAveragePooling2D()(x)
    return K.Model(inp, K.layers.Dense(3, activation="softmax")(x),
                   name="effnet_style")


def training_true(K):
    inp = K.Input(shape=(4,))
    x = K.layers.Dense(4)(inp)
    x = K.layers.BatchNormalization()(x, training=True)
    return K.Model(inp, K.layers.Dense(2)(x), name="bn_training_true")


def lambda_model(K):
    return seq(K, (4,), K.layers.Dense(3), K.layers.Lambda(lambda t: t * 2.0))


_CUSTOM = {}


def custom_layer_class(K):
    if id(K) in _CUSTOM:
        return _CUSTOM[id(K)]

    @K.saving.register_keras_serializable(package="bnorm_test")
    class BnormTestScale(K.layers.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    _CUSTOM[id(K)] = BnormTestScale
    return BnormTestScale


def custom_model(K):
    return seq(K, (4,), K.layers.Dense(3), custom_layer_class(K)(3.0))


# name, description, builder, options
#   x: "normal" (default) | "image255" | "uniform"
#   n: batch size (default 3)
#   tf2_differs: tf.keras 2 is known to compute something else (y_tf2.npy)
#   compile/fit: see run_case
#   adapt: Normalization layers adapted on random data
#   refuse: substring the loader's error must mention
CASES = []


def case(name, desc, build, **opt):
    CASES.append(dict(name=name, desc=desc, build=build, **opt))


L = lambda K: K.layers  # noqa: E731

# --- Dense / BatchNormalization -------------------------------------------
case("canonical_mlp_compiled",
     "Sequential Dense(64,relu) BN Dense(10,softmax) on 784 inputs, compiled "
     "with Adam + sparse_categorical_crossentropy + accuracy (compile_config "
     "/ training_config present, no optimizer state)", canonical,
     compile="adam")
case("bn_dense", "Dense then BatchNormalization with defaults",
     lambda K: seq(K, (5,), L(K).Dense(6), L(K).BatchNormalization()))
case("bn_center_false", "BN center=False (no beta)",
     lambda K: seq(K, (5,), L(K).Dense(6), L(K).BatchNormalization(center=False)))
case("bn_scale_false", "BN scale=False (no gamma)",
     lambda K: seq(K, (5,), L(K).Dense(6), L(K).BatchNormalization(scale=False)))
case("bn_center_scale_false", "BN center=False scale=False (moving stats only)",
     lambda K: seq(K, (5,), L(K).Dense(6),
                   L(K).BatchNormalization(center=False, scale=False)))
case("bn_eps_momentum", "BN epsilon=1e-5 momentum=0.9 after Conv2D",
     image_seq((5, 5, 3), lambda K: [L(K).Conv2D(4, 3),
                                     L(K).BatchNormalization(epsilon=1e-5,
                                                             momentum=0.9)]))
case("bn_axis_1_channels_first",
     "Conv2D channels_first then BN(axis=1) on (N, C, H, W)",
     image_seq((3, 6, 7), lambda K: [
         L(K).Conv2D(4, 3, data_format="channels_first"),
         L(K).BatchNormalization(axis=1)]))
case("bn_axis_list",
     "BN axis=3 on an NHWC input; the tf.keras 2 twin is built with axis=[3] "
     "(tf.keras writes a one-element list axis in its config)",
     image_seq((4, 4, 3), lambda K: [L(K).BatchNormalization(
         axis=[3] if K is tf_keras else 3)]))
case("bn_rank3", "BN on a rank-3 (N, L, C) input after Dense",
     lambda K: seq(K, (5, 4), L(K).Dense(3), L(K).BatchNormalization()))
case("dense_l2_regularizer", "Dense with L2 kernel and bias regularizers "
     "(accepted: inference ignores them)",
     lambda K: seq(K, (5,), L(K).Dense(4, kernel_regularizer=K.regularizers.L2(0.01),
                                       bias_regularizer=K.regularizers.L2(0.001)),
                   L(K).BatchNormalization(gamma_regularizer=K.regularizers.L2(1e-4))))
case("dense_no_bias_act", "Dense use_bias=False activation=tanh in the layer",
     lambda K: seq(K, (5,), L(K).Dense(4, use_bias=False, activation="tanh")))
case("init_variety", "Constant, Ones, Zeros, RandomUniform, RandomNormal, "
     "GlorotUniform(seed) initializers in the config (weights random)",
     init_variety)
case("named_layers", "Layers named zeta_dense, mid_bn, alpha_dense, logits: "
     "names sort opposite to layer order; weights map by position",
     named_layers)

# --- Conv family ------------------------------------------------------------
case("conv_valid_relu", "Conv2D 3x3 valid, bias, activation=relu",
     conv_model(filters=4, kernel_size=3, activation="relu"))
case("conv_same_strided", "Conv2D 3x3 same strides 2 on an even input "
     "(TF pads bottom/right more)",
     conv_model(filters=4, kernel_size=3, strides=2, padding="same",
                input_shape=(8, 8, 3)))
case("conv_same_strided_odd", "Conv2D 4x4 same strides (2,3) on 9x10",
     conv_model(filters=3, kernel_size=(4, 4), strides=(2, 3), padding="same",
                input_shape=(9, 10, 2)))
case("conv_dilated", "Conv2D 3x3 dilation_rate 2 same",
     conv_model(filters=3, kernel_size=3, dilation_rate=2, padding="same"))
case("conv_channels_first", "Conv2D channels_first 3x3 valid strides 2",
     conv_model(filters=4, kernel_size=3, strides=2,
                data_format="channels_first", input_shape=(3, 9, 11)))
case("conv_no_bias_bn", "Conv2D use_bias=False then BN then Activation relu",
     image_seq((6, 6, 3), lambda K: [L(K).Conv2D(5, 3, use_bias=False),
                                     L(K).BatchNormalization(),
                                     L(K).Activation("relu")]))
case("depthwise_dm2", "DepthwiseConv2D 3x3 depth_multiplier 2 same",
     image_seq((6, 6, 3), lambda K: [L(K).DepthwiseConv2D(3, depth_multiplier=2,
                                                          padding="same")]))
case("depthwise_strided_valid", "DepthwiseConv2D 3x3 strides 2 valid, no bias",
     image_seq((7, 7, 4), lambda K: [L(K).DepthwiseConv2D(3, strides=2,
                                                          use_bias=False)]))
case("separable", "SeparableConv2D 3x3 same, 5 filters, bias",
     image_seq((6, 6, 3), lambda K: [L(K).SeparableConv2D(5, 3, padding="same")]))
case("separable_dm2_strided", "SeparableConv2D depth_multiplier 2 strides 2 "
     "valid, activation relu",
     image_seq((7, 7, 3), lambda K: [L(K).SeparableConv2D(
         4, 3, strides=2, depth_multiplier=2, activation="relu")]))

# --- pooling / padding / flatten ---------------------------------------------
case("maxpool_valid", "MaxPooling2D pool 2 (strides default = pool)",
     image_seq((6, 6, 2), lambda K: [L(K).MaxPooling2D(2)]))
case("maxpool_same_strided", "MaxPooling2D pool 3 strides 2 same",
     image_seq((7, 8, 2), lambda K: [L(K).MaxPooling2D(3, strides=2,
                                                       padding="same")]))
case("avgpool_valid", "AveragePooling2D pool (2,3) strides 1 valid",
     image_seq((5, 6, 2), lambda K: [L(K).AveragePooling2D((2, 3), strides=1)]))
case("avgpool_same_strided", "AveragePooling2D pool 3 strides 2 same "
     "(edge windows average only the real cells)",
     image_seq((7, 8, 2), lambda K: [L(K).AveragePooling2D(3, strides=2,
                                                           padding="same")]))
case("maxpool_channels_first", "MaxPooling2D pool 2 channels_first",
     image_seq((2, 6, 6), lambda K: [L(K).MaxPooling2D(
         2, data_format="channels_first")]))
case("gap", "GlobalAveragePooling2D",
     image_seq((4, 5, 3), lambda K: [L(K).GlobalAveragePooling2D()]))
case("gap_keepdims", "GlobalAveragePooling2D keepdims=True then Conv2D 1x1",
     image_seq((4, 5, 3), lambda K: [L(K).GlobalAveragePooling2D(keepdims=True),
                                     L(K).Conv2D(2, 1)]))
case("gmp", "GlobalMaxPooling2D",
     image_seq((4, 5, 3), lambda K: [L(K).GlobalMaxPooling2D()]))
case("gmp_channels_first", "GlobalMaxPooling2D channels_first keepdims=True",
     image_seq((3, 4, 5), lambda K: [L(K).GlobalMaxPooling2D(
         data_format="channels_first", keepdims=True)]))
case("zero_padding_symmetric", "ZeroPadding2D(1)",
     image_seq((3, 4, 2), lambda K: [L(K).ZeroPadding2D(1)]))
case("zero_padding_asymmetric", "ZeroPadding2D(((1, 2), (0, 3)))",
     image_seq((3, 4, 2), lambda K: [L(K).ZeroPadding2D(((1, 2), (0, 3)))]))
case("flatten", "Flatten then Dense (channels_last)",
     image_seq((2, 3, 4), lambda K: [L(K).Flatten(), L(K).Dense(3)]))
case("flatten_channels_first", "Flatten(data_format=channels_first) on a "
     "rank-4 input: flattens in (C, H, W) order, then Dense",
     image_seq((2, 3, 4), lambda K: [L(K).Flatten(data_format="channels_first"),
                                     L(K).Dense(3)]))

# --- activations ---------------------------------------------------------------
# Activations tf.keras 2 also has, as the branches of one model (one output
# each, the output layer named after its activation, so a mismatch in y<i>
# names the activation); the others get a case of their own.
SHARED_ACTS = ["linear", "relu", "sigmoid", "tanh", "softmax", "silu", "swish",
               "gelu", "elu", "leaky_relu", "relu6"]


def activations_all(K):
    inp = K.Input(shape=(8,))
    outs = [K.layers.Activation(a, name=f"act_{a}")(inp) for a in SHARED_ACTS]
    return K.Model(inp, outs, name="activations")


case("activations_all", "Activation(a) for a in " + ", ".join(SHARED_ACTS) +
     ": one branch per activation on the same input, output i = "
     "SHARED_ACTS[i] (y0..y10, output layer act_<name>), x ~ N(0, 3)",
     activations_all, x="wide")
case("activation_hard_sigmoid", "Activation('hard_sigmoid') on (N, 8), "
     "x ~ N(0, 3); Keras 3 computes relu6(x + 3) / 6, tf.keras 2 "
     "clip(0.2 x + 0.5, 0, 1): y_tf2.npy holds tf.keras 2's answer for tf2.h5",
     act_only("hard_sigmoid"), x="wide", tf2_differs=True)
for _act in ["hard_silu", "hard_swish"]:
    case(f"activation_{_act}", f"Activation('{_act}') on (N, 8), x ~ N(0, 3)",
         act_only(_act), x="wide")
case("relu_max6", "ReLU(max_value=6.0) layer (MobileNetV2)",
     lambda K: seq(K, (8,), L(K).Dense(8), L(K).ReLU(6.0)), x="wide")
case("relu_slope_threshold", "ReLU(max_value=4, negative_slope=0.1, "
     "threshold=0.5)",
     lambda K: seq(K, (8,), L(K).Dense(8),
                   L(K).ReLU(max_value=4.0, negative_slope=0.1, threshold=0.5)),
     x="wide")

# --- preprocessing / shape layers ---------------------------------------------
case("rescaling_scalar", "Rescaling(1/255, offset=-0.5)",
     image_seq((3, 3, 3), lambda K: [L(K).Rescaling(1.0 / 255.0, offset=-0.5)]),
     x="image255")
case("rescaling_per_channel", "Rescaling with per-channel scale and offset "
     "lists",
     image_seq((3, 3, 3), lambda K: [L(K).Rescaling(
         [1.0 / 58.4, 1.0 / 57.1, 1.0 / 57.4], offset=[-2.1, -2.0, -1.8])]),
     x="image255")
case("normalization_given", "Normalization(axis=-1) with mean/variance given "
     "(in the config, not weights)",
     lambda K: seq(K, (4,), L(K).Normalization(
         axis=-1, mean=[1.0, -2.0, 0.5, 3.0], variance=[4.0, 0.25, 1.0, 9.0])))
case("normalization_adapted", "Normalization(axis=-1) adapted on random data "
     "(mean, variance, count weights)",
     image_seq((3, 3, 2), lambda K: [L(K).Normalization(axis=-1)]),
     adapt=True)
case("normalization_adapted_axis1", "Normalization(axis=1) adapted on a "
     "(N, 3, 4) input",
     lambda K: seq(K, (3, 4), L(K).Normalization(axis=1)), adapt=True)
case("dropout", "Dropout(0.3) between Dense layers (identity at inference)",
     lambda K: seq(K, (5,), L(K).Dense(6), L(K).Dropout(0.3), L(K).Dense(2)))
case("dropout_noise_shape_seed", "Dropout(0.5, noise_shape=(None,1,1,3), "
     "seed=7) on an image",
     image_seq((3, 3, 3), lambda K: [L(K).Dropout(0.5, noise_shape=(None, 1, 1, 3),
                                                  seed=7),
                                     L(K).Conv2D(2, 1)]))
case("reshape", "Dense(12) then Reshape((3, 4))",
     lambda K: seq(K, (5,), L(K).Dense(12), L(K).Reshape((3, 4))))
case("reshape_minus1", "Reshape((-1, 2)) of an image",
     image_seq((2, 3, 2), lambda K: [L(K).Reshape((-1, 2)), L(K).Dense(3)]))
case("identity", "Identity layer between Dense layers",
     lambda K: seq(K, (5,), L(K).Dense(4), L(K).Identity(), L(K).Dense(2)))

# --- graphs ---------------------------------------------------------------------
case("functional_residual", "Functional residual block: Conv-BN-ReLU-Conv-BN, "
     "Add with the input, ReLU, GAP, Dense softmax", residual_block)
case("functional_two_in_two_out", "Functional with inputs 'features' (6,) and "
     "'image' (4,4,2), outputs 'class_probs' and 'score'", two_in_two_out)
case("nested_sequential", "A Sequential used as a layer inside a Functional",
     nested_sequential)
case("nested_functional", "A Functional used as a layer inside a Functional "
     "(keras_history node index shifts)", nested_functional)
case("shared_layer", "One Dense layer called twice (node index 1)",
     shared_layer)
case("concatenate", "Concatenate of three branches along the last axis",
     concat_three)
case("concatenate_axis1", "Concatenate(axis=1) of two image tensors",
     concat_axis1)
case("merge_add", "Add of two branches", merge_model("Add"))
case("merge_subtract", "Subtract of two branches", merge_model("Subtract"))
case("merge_multiply", "Multiply of two branches", merge_model("Multiply"))
case("merge_average", "Average of two branches", merge_model("Average"))
case("small_cnn", "Sequential Conv-BN-ReLU-MaxPool-Conv-BN-relu-GAP-Dropout-"
     "Dense", small_cnn)
case("efficientnet_style", "Rescaling, Normalization(given), Conv, BN, swish, "
     "squeeze-excite (GAP, Reshape, Conv swish/sigmoid, Multiply), Dropout "
     "noise_shape", efficientnet_style, x="image255")

# --- trained a little (optimizer state in the files) -------------------------------
case("trained_mlp_adam", "Dense-BN-Dense fitted 1 epoch with Adam (optimizer "
     "variables saved)",
     lambda K: seq(K, (6,), L(K).Dense(8, activation="relu"),
                   L(K).BatchNormalization(), L(K).Dense(3, activation="softmax")),
     compile="adam", fit=True)
case("trained_cnn_sgd", "Conv-BN-ReLU-GAP-Dense fitted 1 epoch with SGD "
     "momentum 0.9",
     lambda K: seq(K, (6, 6, 2), L(K).Conv2D(4, 3, use_bias=False),
                   L(K).BatchNormalization(), L(K).ReLU(),
                   L(K).GlobalAveragePooling2D(),
                   L(K).Dense(3, activation="softmax")),
     compile="sgd", fit=True)
case("trained_residual_rmsprop", "The functional residual block fitted 1 "
     "epoch with RMSprop", residual_block, compile="rmsprop", fit=True)

# --- refuse -------------------------------------------------------------------------
case("refuse_lambda", "Lambda layer (Python bytecode in the file)",
     lambda_model, refuse="Lambda")
case("refuse_custom_layer", "A registered custom layer class "
     "bnorm_test>BnormTestScale", custom_model, refuse="BnormTestScale")
case("refuse_unknown_layer", "LayerNormalization: a real Keras layer bnorm "
     "does not implement",
     lambda K: seq(K, (5,), L(K).Dense(4), L(K).LayerNormalization()),
     refuse="LayerNormalization")
case("refuse_training_true", "BatchNormalization called with training=True "
     "baked into the functional graph", training_true, refuse="training")
case("refuse_regularizer_l1", "Dense with an L1 kernel regularizer",
     lambda K: seq(K, (5,), L(K).Dense(4, kernel_regularizer=K.regularizers.L1(0.01))),
     refuse="L1")


# --------------------------------------------------------------------------
# running a case
# --------------------------------------------------------------------------


def make_inputs(model, rng, kind: str, n: int) -> list[np.ndarray]:
    xs = []
    for t in model.inputs:
        shape = (n,) + tuple(int(d) for d in t.shape[1:])
        if kind == "image255":
            x = rng.uniform(0.0, 255.0, shape)
        elif kind == "wide":
            x = rng.normal(0.0, 3.0, shape)
        elif kind == "uniform":
            x = rng.uniform(-1.0, 1.0, shape)
        else:
            x = rng.normal(0.0, 1.0, shape)
        xs.append(x.astype(np.float32))
    return xs


def predict(model, xs) -> list[np.ndarray]:
    y = model(xs if len(xs) > 1 else xs[0], training=False)
    return [keras.ops.convert_to_numpy(t).astype(np.float32) for t in as_list(y)]


def predict_tf2(model, xs) -> list[np.ndarray]:
    y = model(xs if len(xs) > 1 else xs[0], training=False)
    return [np.asarray(t, dtype=np.float32) for t in as_list(y)]


def compile_model(K, model, opt: str) -> None:
    optimizer = {"adam": lambda: K.optimizers.Adam(1e-3),
                 "sgd": lambda: K.optimizers.SGD(0.01, momentum=0.9),
                 "rmsprop": lambda: K.optimizers.RMSprop(1e-3)}[opt]()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])


def fit_data(model, rng):
    n = 32
    xs = [rng.normal(0.0, 1.0, (n,) + tuple(int(d) for d in t.shape[1:]))
          .astype(np.float32) for t in model.inputs]
    classes = int(as_list(model.outputs)[0].shape[-1])
    y = rng.integers(0, classes, n).astype(np.int64)
    return xs, y


def adapt_data(model, rng):
    for layer in model.layers:
        if type(layer).__name__ == "Normalization":
            shape = (64,) + tuple(int(d) for d in model.inputs[0].shape[1:])
            data = rng.normal(0.0, 1.0, shape) * rng.uniform(0.5, 3.0, shape[-1]) \
                + rng.uniform(-2.0, 4.0, shape[-1])
            return data.astype(np.float32)
    return None


def io_names(model) -> tuple[list, list]:
    """Names of the layers that own the model's input and output tensors
    (InputLayer names; the last layer's name for each output)."""
    def owner(t):
        return t._keras_history.operation.name  # noqa: SLF001
    return ([owner(t) for t in model.inputs],
            [owner(t) for t in as_list(model.outputs)])


def build_tf2(spec, model3, fit_xy, adapt, note) -> object | None:
    """The tf.keras 2 twin with the Keras 3 weights, or None (note says why)."""
    if tf_keras is None:
        note.append("tf_keras not installed")
        return None
    tf_keras.backend.clear_session()
    tf_keras.utils.set_random_seed(case_seed(spec["name"]) % (2**31))
    try:
        m2 = spec["build"](tf_keras)
    except Exception as e:  # noqa: BLE001 - the reason goes into meta.json
        note.append(f"tf_keras cannot build it: {type(e).__name__}: "
                    f"{str(e).splitlines()[0][:200]}")
        return None
    if adapt is not None:
        for layer in m2.layers:
            if type(layer).__name__ == "Normalization":
                layer.adapt(adapt, batch_size=64)
    if spec.get("compile"):
        compile_model(tf_keras, m2, spec["compile"])
        if spec.get("fit"):
            # Creates tf.keras's optimizer slots; the weights are then
            # overwritten with the Keras 3 ones (the slots are from this fit).
            m2.fit(fit_xy[0] if len(fit_xy[0]) > 1 else fit_xy[0][0], fit_xy[1],
                   batch_size=8, epochs=1, shuffle=False, verbose=0)
    try:
        copy_weights(model3, m2)
    except Exception as e:  # noqa: BLE001
        note.append(f"weights do not transfer to tf_keras: {type(e).__name__}: "
                    f"{str(e).splitlines()[0][:200]}")
        return None
    return m2


def write_json(path: pathlib.Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def run_case(spec) -> dict:
    name = spec["name"]
    d = OUT_DIR / name
    d.mkdir(parents=True)
    seed = case_seed(name)
    rng = np.random.default_rng(seed)
    keras.backend.clear_session()  # auto names (dense, dense_1, ...) per case
    keras.utils.set_random_seed(seed % (2**31))
    refuse = spec.get("refuse")

    model = spec["build"](keras)
    adapt = adapt_data(model, rng) if spec.get("adapt") else None
    if adapt is not None:
        for layer in model.layers:
            if type(layer).__name__ == "Normalization":
                layer.adapt(adapt)
    randomize(model, rng)
    fit_xy = None
    if spec.get("compile"):
        compile_model(keras, model, spec["compile"])
        if spec.get("fit"):
            fit_xy = fit_data(model, rng)
            model.fit(fit_xy[0] if len(fit_xy[0]) > 1 else fit_xy[0][0],
                      fit_xy[1], batch_size=8, epochs=1, shuffle=False,
                      verbose=0)

    files = []
    model.save(d / "model.keras")
    files.append("model.keras")
    model.save(d / "model.h5")
    files.append("model.h5")

    tf2_note: list[str] = []
    m2 = build_tf2(spec, model, fit_xy, adapt, tf2_note)

    meta = {
        "family": FAMILY,
        "case": name,
        "generator": GENERATOR,
        "versions": VERSIONS,
        "description": spec["desc"],
        "model_class": type(model).__name__,
        "compiled": bool(spec.get("compile")),
        "optimizer": spec.get("compile"),
        "trained_epochs": 1 if spec.get("fit") else 0,
    }
    ins, outs = io_names(model)
    meta["input_names"] = ins
    meta["output_names"] = outs
    meta["input_shapes"] = [[None if s is None else int(s) for s in t.shape]
                            for t in model.inputs]
    meta["output_shapes"] = [[None if s is None else int(s) for s in t.shape]
                             for t in as_list(model.outputs)]

    if refuse:
        if m2 is not None:
            m2.save(d / "tf2.h5")
            files.append("tf2.h5")
        meta["expect_refuse"] = True
        meta["expect_error_substring"] = refuse
    else:
        xs = make_inputs(model, rng, spec.get("x", "normal"), spec.get("n", 3))
        ys = predict(model, xs)
        for y in ys:
            if not np.all(np.isfinite(y)):
                raise RuntimeError(f"{name}: non-finite prediction")
        # The files must reproduce the predictions when Keras reloads them.
        reload = {}
        for f in ("model.keras", "model.h5"):
            m = keras.saving.load_model(d / f, safe_mode=True, compile=False)
            reload[f] = rel_err(np.concatenate([a.ravel() for a in predict(m, xs)]),
                                np.concatenate([a.ravel() for a in ys]))
            if reload[f] > RELOAD_TOL:
                raise RuntimeError(f"{name}: {f} reloaded differs: {reload[f]}")
        if m2 is not None:
            y2 = predict_tf2(m2, xs)
            e2 = rel_err(np.concatenate([a.ravel() for a in y2]),
                         np.concatenate([a.ravel() for a in ys]))
            m2.save(d / "tf2.h5")
            files.append("tf2.h5")
            m2r = tf_keras.models.load_model(d / "tf2.h5", compile=False)
            e2r = rel_err(np.concatenate([a.ravel() for a in predict_tf2(m2r, xs)]),
                          np.concatenate([a.ravel() for a in y2]))
            if e2r > RELOAD_TOL:
                raise RuntimeError(f"{name}: tf2.h5 reloaded differs: {e2r}")
            reload["tf2.h5_vs_tf_keras_model"] = e2r
            # What Keras 3's own legacy loader makes of the tf.keras 2 file
            # (recorded, not required: Keras 3 refuses some tf.keras 2 files).
            try:
                m3 = keras.saving.load_model(d / "tf2.h5", safe_mode=True,
                                             compile=False)
                meta["keras3_reads_tf2_h5"] = {
                    "loads": True, "error": None,
                    "max_rel_err_vs_y": rel_err(
                        np.concatenate([a.ravel() for a in predict(m3, xs)]),
                        np.concatenate([a.ravel() for a in ys]))}
            except Exception as e:  # noqa: BLE001
                lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                meta["keras3_reads_tf2_h5"] = {
                    "loads": False, "max_rel_err_vs_y": None,
                    "error": f"{type(e).__name__}: {lines[-1][:300] if lines else ''}"}
            meta["tf2_vs_keras3_max_rel_err"] = e2
            if e2 > TF2_TOL and not spec.get("tf2_differs"):
                raise RuntimeError(
                    f"{name}: tf.keras 2 and Keras 3 disagree ({e2:.3g}); "
                    f"mark the case tf2_differs=True if that is expected")
            if e2 > TF2_TOL:
                # tf.keras 2 computes something else for this config: keep
                # its own predictions so a loader can be checked against both.
                for i, y in enumerate(y2):
                    np.save(d / (f"y_tf2{i}.npy" if len(y2) > 1 else "y_tf2.npy"),
                            y, allow_pickle=False)
                    files.append(f"y_tf2{i}.npy" if len(y2) > 1 else "y_tf2.npy")
                tf2_note.append(
                    f"tf.keras 2 predicts differently from Keras 3 for this "
                    f"config (max rel err {e2:.3g}); its predictions are in "
                    f"y_tf2*.npy")
        meta["reload_max_rel_err"] = reload
        for i, x in enumerate(xs):
            fn = f"x{i}.npy" if len(xs) > 1 else "x.npy"
            np.save(d / fn, x, allow_pickle=False)
            files.append(fn)
        for i, y in enumerate(ys):
            fn = f"y{i}.npy" if len(ys) > 1 else "y.npy"
            np.save(d / fn, y, allow_pickle=False)
            files.append(fn)
        meta["expect_refuse"] = False
    meta["tf2_note"] = "; ".join(tf2_note) if tf2_note else None
    meta["files"] = sorted(files)
    write_json(d / "meta.json", meta)
    size = sum(p.stat().st_size for p in d.iterdir())
    print(f"  {name}: {', '.join(sorted(files))}  ({size // 1024} KiB)"
          + (f"  [tf2: {meta['tf2_note']}]" if tf2_note else ""))
    return meta


def run_mobilenet() -> dict:
    name = "mobilenet_v2"
    d = OUT_DIR / name
    d.mkdir(parents=True)
    seed = case_seed(name)
    rng = np.random.default_rng(seed)
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed % (2**31))
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3),
                                           weights=None, classes=10)
    randomize(model, rng, scope="bn_stats")
    x = rng.uniform(-1.0, 1.0, (2, 96, 96, 3)).astype(np.float32)
    y = predict(model, [x])[0]
    files = ["model.keras"]
    model.save(d / "model.keras")
    reload = {}
    m = keras.saving.load_model(d / "model.keras", safe_mode=True, compile=False)
    reload["model.keras"] = rel_err(predict(m, [x])[0], y)
    with tempfile.TemporaryDirectory() as tmp:
        h5 = pathlib.Path(tmp) / "model.h5"
        model.save(h5)
        h5_size = h5.stat().st_size
        if h5_size <= 3 * 1024 * 1024:
            shutil.copy(h5, d / "model.h5")
            files.append("model.h5")
            m = keras.saving.load_model(d / "model.h5", safe_mode=True,
                                        compile=False)
            reload["model.h5"] = rel_err(predict(m, [x])[0], y)
    for f, e in reload.items():
        if e > RELOAD_TOL:
            raise RuntimeError(f"{name}: {f} reloaded differs: {e}")
    np.save(d / "x.npy", x, allow_pickle=False)
    np.save(d / "y.npy", y, allow_pickle=False)
    files += ["x.npy", "y.npy"]
    ins, outs = io_names(model)
    meta = {
        "family": FAMILY, "case": name, "generator": GENERATOR,
        "versions": VERSIONS,
        "description": "keras.applications.MobileNetV2(alpha=0.35, "
                       "input_shape=(96,96,3), weights=None, classes=10); "
                       "weights at their initializer values (seeded), BN "
                       "moving_mean ~ N(0,0.5), moving_variance ~ U(0.5,2); "
                       "x ~ U(-1,1)",
        "model_class": type(model).__name__, "compiled": False,
        "optimizer": None, "trained_epochs": 0,
        "input_names": ins, "output_names": outs,
        "input_shapes": [[None if s is None else int(s) for s in t.shape]
                         for t in model.inputs],
        "output_shapes": [[None if s is None else int(s) for s in t.shape]
                          for t in as_list(model.outputs)],
        "layers": len(model.layers),
        "params": int(model.count_params()),
        "legacy_h5_bytes": h5_size,
        "expect_refuse": False,
        "reload_max_rel_err": reload,
        "tf2_note": "not written: the architecture comes from "
                    "keras.applications (Keras 3)",
        "files": sorted(files),
    }
    write_json(d / "meta.json", meta)
    size = sum(p.stat().st_size for p in d.iterdir())
    print(f"  {name}: {', '.join(sorted(files))}  ({size // 1024} KiB), "
          f"y max {float(y.max()):.3f}")
    return meta


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", metavar="CASE",
                    help="generate only these cases (others are kept)")
    ap.add_argument("--skip-mobilenet", action="store_true",
                    help="do not (re)generate mobilenet_v2")
    ap.add_argument("--list", action="store_true", help="list the cases")
    args = ap.parse_args()
    names = [c["name"] for c in CASES] + ["mobilenet_v2"]
    if args.list:
        print("\n".join(names))
        return 0
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("Keras must run on the TensorFlow backend")
    if args.only:
        bad = sorted(set(args.only) - set(names))
        if bad:
            ap.error(f"unknown case(s): {', '.join(bad)}")
    print("versions:", json.dumps(VERSIONS))
    wanted = set(args.only) if args.only else set(names)
    if args.skip_mobilenet:
        wanted.discard("mobilenet_v2")
    if not args.only and not args.skip_mobilenet and OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for c in CASES:
        if c["name"] in wanted:
            if (OUT_DIR / c["name"]).exists():
                shutil.rmtree(OUT_DIR / c["name"])
            run_case(c)
    if "mobilenet_v2" in wanted:
        if (OUT_DIR / "mobilenet_v2").exists():
            shutil.rmtree(OUT_DIR / "mobilenet_v2")
        run_mobilenet()
    index = sorted(p.name for p in OUT_DIR.iterdir() if p.is_dir())
    write_json(OUT_DIR / "index.json", {"generator": GENERATOR,
                                        "versions": VERSIONS,
                                        "cases": index})
    return 0


if __name__ == "__main__":
    sys.exit(main())
