"""Keras scripts run twice: once by real Keras 3, once by bnorm.

Every case below is one short Keras training script written once, against
the Keras API only, with the module as a parameter:

    results = seed_model(keras, data)   # tests/python/generate_keras_equivalence.py
    results = seed_model(bnorm, data)   # tests/python/test_keras_equivalence.py

`data` holds the case's inputs (numpy arrays: x, y, x_eval, y_eval) and
`data["weights"]`, the model's initial weights in `model.get_weights()` order,
recorded from Keras's own initializers by the generator. A case builds and
compiles its model, sets those weights, trains, and returns a flat dict of
numpy arrays: what the script would print or keep.

Nothing here is random: the inputs and the initial weights come from the
fixture, and no case uses Dropout in training, random augmentation or
shuffling, so the same script gives the same numbers in both modules up to
float32 rounding. Use only what a Keras user writes (no backend calls, no
keras.utils.set_random_seed), so that running a case with bnorm is running a
Keras script with bnorm.

The fixture format (one .npz per case) is defined here too, by pack() and
unpack(), so the generator and the test cannot disagree about it.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, List, Tuple

import numpy as np

BATCH = 32  # batch size of the train_on_batch cases and of fit
STEPS = 20  # train_on_batch steps per case

Results = Dict[str, np.ndarray]


# --------------------------------------------------------------------------
# Shared pieces of the scripts
# --------------------------------------------------------------------------


def seed_architecture(keras, features: int, classes: int = 10):
    """Keras's canonical example: Dense(64, relu) -> BatchNormalization -> Dense(softmax)."""
    return keras.Sequential([
        keras.Input(shape=(features,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Dense(classes, activation="softmax"),
    ])


def compile_adam(keras, model) -> None:
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def numbered(prefix: str, arrays) -> Results:
    """{"<prefix>0": arrays[0], "<prefix>1": arrays[1], ...} as float32/int arrays."""
    return {f"{prefix}{i}": np.asarray(a) for i, a in enumerate(arrays)}


def train_steps(model, data) -> Results:
    """STEPS train_on_batch calls on consecutive batches of BATCH rows (wrapping around
    x), then predict and evaluate on the held-out rows. Keras 3 resets the metrics in
    every train_on_batch, so each step's loss and accuracy are that batch's alone."""
    x, y = data["x"], data["y"]
    batches = len(x) // BATCH
    losses, accuracies = [], []
    for step in range(STEPS):
        start = (step % batches) * BATCH
        loss, accuracy = model.train_on_batch(x[start:start + BATCH], y[start:start + BATCH])
        losses.append(loss)
        accuracies.append(accuracy)
    eval_loss, eval_accuracy = model.evaluate(data["x_eval"], data["y_eval"], verbose=0)
    return {
        "train_on_batch_loss": np.array(losses, np.float64),
        "train_on_batch_accuracy": np.array(accuracies, np.float64),
        "predict": np.asarray(model.predict(data["x_eval"], verbose=0)),
        "evaluate_loss": np.array(eval_loss, np.float64),
        "evaluate_accuracy": np.array(eval_accuracy, np.float64),
        **numbered("final_w", model.get_weights()),
    }


# --------------------------------------------------------------------------
# Builders: the model a case trains, compiled, with the initializers' weights.
# The generator calls these (after keras.utils.set_random_seed) to record the
# initial weights; the cases call them and then set the recorded weights.
# --------------------------------------------------------------------------


def build_seed_model(keras, data):
    model = seed_architecture(keras, data["x"].shape[1])
    compile_adam(keras, model)
    return model


def build_frozen_bn(keras, data):
    model = seed_architecture(keras, data["x"].shape[1])
    # Frozen before compile, as when fine-tuning: Keras then runs this layer in
    # inference mode inside fit/train_on_batch and never updates its four weights.
    model.layers[1].trainable = False
    compile_adam(keras, model)
    return model


def build_residual_cnn(keras, data):
    # use_bias=False as in ResNet: a bias straight before BatchNormalization has a zero
    # gradient in exact arithmetic, so Adam (which divides by the gradient's own size)
    # would move it by rounding noise alone, ~1e-4 in 20 steps, differently in every
    # implementation. SGD moves it by the noise itself (~1e-8): sgd_conv_bn keeps it.
    inputs = keras.Input(shape=data["x"].shape[1:])
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    shortcut = keras.layers.Activation("relu")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(shortcut)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Add()([x, shortcut])
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    compile_adam(keras, model)
    return model


def build_sgd_conv_bn(keras, data):
    model = keras.Sequential([
        keras.Input(shape=data["x"].shape[1:]),
        keras.layers.Conv2D(6, 3),
        keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, center=False),
        keras.layers.Activation("relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


# --------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------


def seed_model(keras, data) -> Results:
    """The seed model on 784 features: 20 Adam steps with train_on_batch."""
    model = build_seed_model(keras, data)
    model.set_weights(data["weights"])
    return train_steps(model, data)


def frozen_bn(keras, data) -> Results:
    """The seed model with its BatchNormalization frozen (trainable=False before
    compile) and non-trivial statistics: 20 Adam steps with train_on_batch."""
    model = build_frozen_bn(keras, data)
    model.set_weights(data["weights"])
    return train_steps(model, data)


def residual_cnn(keras, data) -> Results:
    """A functional residual block (Conv2D/BN/relu twice, Add, MaxPooling2D,
    GlobalAveragePooling2D, Dense): 20 Adam steps with train_on_batch."""
    model = build_residual_cnn(keras, data)
    model.set_weights(data["weights"])
    return train_steps(model, data)


def sgd_conv_bn(keras, data) -> Results:
    """Conv2D -> BatchNormalization(momentum=0.9, epsilon=1e-5, center=False) ->
    relu -> MaxPooling2D -> Flatten -> Dense, trained by SGD with momentum 0.9."""
    model = build_sgd_conv_bn(keras, data)
    model.set_weights(data["weights"])
    return train_steps(model, data)


def fit_epochs(keras, data) -> Results:
    """The seed model trained by fit: 2 epochs, batch 32, no shuffling, the last
    quarter of the rows held out by validation_split (150 train rows: four batches
    of 32 and a partial one of 22; 50 validation rows)."""
    model = build_seed_model(keras, data)
    model.set_weights(data["weights"])
    history = model.fit(data["x"], data["y"], batch_size=BATCH, epochs=2, shuffle=False,
                        validation_split=0.25, verbose=0)
    results = {"history_keys": np.array(list(history.history.keys()))}
    for key, values in history.history.items():
        results[f"history_{key}"] = np.array(values, np.float64)
    results.update(numbered("final_w", model.get_weights()))
    return results


# name -> (the case, the builder whose weights the generator records)
CASES: Dict[str, Tuple[Callable[..., Results], Callable]] = {
    "seed_model": (seed_model, build_seed_model),
    "residual_cnn": (residual_cnn, build_residual_cnn),
    "frozen_bn": (frozen_bn, build_frozen_bn),
    "fit_epochs": (fit_epochs, build_seed_model),
    "sgd_conv_bn": (sgd_conv_bn, build_sgd_conv_bn),
}


# --------------------------------------------------------------------------
# Fixture format: tests/python/fixtures/keras_equivalence/<case>.npz
#
#   x, y, x_eval, y_eval   the inputs (float32 features, int64 labels); the
#                          fit case has no x_eval/y_eval
#   w0 .. wN               the initial weights, model.get_weights() order
#   out_<name>             what the case returned when Keras ran it
#   versions               "package=version" strings of the Keras run
#   generated_by           how the file was made
# --------------------------------------------------------------------------

INPUT_KEYS = ("x", "y", "x_eval", "y_eval")
_WEIGHT = re.compile(r"w(\d+)")


def pack(inputs: Dict[str, np.ndarray], weights: List[np.ndarray], results: Results,
         versions: List[str], generated_by: str) -> Dict[str, np.ndarray]:
    arrays = {k: np.asarray(v) for k, v in inputs.items()}
    arrays.update(numbered("w", weights))
    arrays.update({f"out_{k}": np.asarray(v) for k, v in results.items()})
    arrays["versions"] = np.array(versions)
    arrays["generated_by"] = np.array(generated_by)
    return arrays


def unpack(npz) -> Tuple[dict, Results, Dict[str, str]]:
    """(data for a case, the Keras results, metadata) from a loaded .npz."""
    data = {k: npz[k] for k in INPUT_KEYS if k in npz.files}
    indices = sorted(int(m.group(1)) for k in npz.files if (m := _WEIGHT.fullmatch(k)))
    if indices != list(range(len(indices))):
        raise ValueError(f"initial weights are not w0..wN: {indices}")
    data["weights"] = [npz[f"w{i}"] for i in indices]
    expected = {k[len("out_"):]: npz[k] for k in npz.files if k.startswith("out_")}
    meta = {"versions": " ".join(str(v) for v in npz["versions"]),
            "generated_by": str(npz["generated_by"])}
    return data, expected, meta
