"""Writes the .npy/.npz golden files under tests/io/data/ with real NumPy, and values.json with
what each holds (dtype, shape, values flattened in C order), which tests/io/data_test.cpp compares
against. Run: /work/venv-parity/bin/python tests/io/data/make_data_fixtures.py (NumPy 1.x or 2.x).
"""
import io
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(11)
record = {}


def save(name, array, version=None):
    path = os.path.join(HERE, name)
    if version is None:
        np.save(path, array)
    else:
        with open(path, "wb") as f:
            np.lib.format.write_array(f, array, version=version)
    a = np.asarray(array)
    record[name] = {
        "dtype": a.dtype.name,
        "shape": list(a.shape),
        "values": [v.item() if a.dtype != np.bool_ else int(v) for v in np.ascontiguousarray(a).ravel()],
        "fortran": bool(a.flags.f_contiguous and not a.flags.c_contiguous),
    }


# One file per supported dtype (little-endian, C order).
save("f4.npy", rng.standard_normal((2, 3)).astype("<f4"))
save("f8.npy", rng.standard_normal((3, 2)).astype("<f8"))
save("u1.npy", rng.integers(0, 256, (2, 3, 4)).astype("|u1"))  # rank 3, an image stack
save("i1.npy", np.array([-128, -1, 0, 1, 127], dtype="|i1"))
save("i2.npy", np.array([-32768, -5, 0, 7, 32767], dtype="<i2"))
save("i4.npy", np.array([[-2147483648, 3], [0, 2147483647]], dtype="<i4"))
save("i8.npy", np.array([-(2**40), -1, 0, 9, 2**40], dtype="<i8"))
save("u2.npy", np.array([0, 1, 65535], dtype="<u2"))
save("u4.npy", np.array([0, 7, 4294967295], dtype="<u4"))
save("u8.npy", np.array([0, 3, 2**40], dtype="<u8"))
save("b1.npy", np.array([[True, False], [False, True]], dtype="|b1"))
# Fortran order (transposed to C order on load) and big-endian (byte-swapped on load).
save("fortran_f4.npy", np.asfortranarray(rng.standard_normal((3, 4, 2)).astype("<f4")))
save("fortran_i2.npy", np.asfortranarray(np.arange(6, dtype="<i2").reshape(2, 3)))
save("big_f4.npy", rng.standard_normal((2, 2)).astype(">f4"))
save("big_f8.npy", rng.standard_normal(3).astype(">f8"))
save("big_i4.npy", np.array([1, -2, 300000], dtype=">i4"))
# Rank 0, an empty array, and the 2.0 and 3.0 header formats.
save("scalar.npy", np.array(2.5, dtype="<f8"))
save("empty.npy", np.zeros((0, 3), dtype="<f4"))
save("v2.npy", np.arange(4, dtype="<f4").reshape(2, 2), version=(2, 0))
save("v3.npy", np.arange(3, dtype="<i8"), version=(3, 0))

# Data sets as keras.datasets returns them: uint8 images, integer labels; stored and deflated.
x_train = rng.integers(0, 256, (6, 4, 4)).astype(np.uint8)
y_train = np.array([0, 1, 2, 1, 0, 2], dtype=np.uint8)
x_test = rng.integers(0, 256, (3, 4, 4)).astype(np.uint8)
y_test = np.array([2, 0, 1], dtype=np.int64)
np.savez(os.path.join(HERE, "dataset.npz"), x_train=x_train, y_train=y_train, x_test=x_test,
         y_test=y_test)
np.savez_compressed(os.path.join(HERE, "dataset_compressed.npz"), x_train=x_train,
                    y_train=y_train, x_test=x_test, y_test=y_test)
# Float features and (n, 1) labels, with an extra array that the loader skips.
np.savez(os.path.join(HERE, "dataset_float.npz"), x_train=x_train.astype(np.float32) / 10,
         y_train=y_train.reshape(-1, 1).astype(np.int32), x_test=x_test.astype(np.float64),
         y_test=y_test.astype(np.float32).reshape(-1, 1), class_names=np.arange(3))
for name, a in [("x_train", x_train), ("y_train", y_train), ("x_test", x_test),
                ("y_test", y_test)]:
    record["dataset." + name] = {"dtype": a.dtype.name, "shape": list(a.shape),
                                 "values": [v.item() for v in a.ravel()], "fortran": False}

with open(os.path.join(HERE, "values.json"), "w") as f:
    json.dump({"numpy": np.__version__, "arrays": record}, f, indent=1)
    f.write("\n")
print("numpy", np.__version__, "wrote", len(record), "records")
