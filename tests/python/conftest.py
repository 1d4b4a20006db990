"""Shared fixtures for the Python tests (run by scripts/test.sh after `pip install .`)."""

import numpy as np
import pytest


@pytest.fixture
def blobs():
    """A small separable 3-class problem: (x_train, y_train, x_test, y_test), float32 / int."""
    rng = np.random.default_rng(7)
    centers = rng.normal(0.0, 3.0, size=(3, 20)).astype(np.float32)

    def draw(n):
        y = rng.integers(0, 3, size=n)
        x = centers[y] + rng.normal(0.0, 1.0, size=(n, 20)).astype(np.float32)
        return x.astype(np.float32), y

    x, y = draw(600)
    xt, yt = draw(200)
    return x, y, xt, yt


def seed_model(bnorm, features=20, classes=3):
    """Keras's canonical example: Dense(64, relu) -> BatchNormalization -> Dense(softmax)."""
    model = bnorm.Sequential([
        bnorm.Input(shape=(features,)),
        bnorm.layers.Dense(64, activation="relu"),
        bnorm.layers.BatchNormalization(),
        bnorm.layers.Dense(classes, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
