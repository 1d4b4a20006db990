#!/usr/bin/env python3
"""Makes the small Keras files tests/io/keras_file_test.cpp reads: one valid legacy .h5 and
.keras written by real Keras 3, and hostile variants of them made with h5py (the attacks Keras's
own loader was given advisories for: soft/external links, external storage, virtual datasets,
declared sizes far above the stored bytes, Lambda layers, training=True baked into a call).

Run with the parity virtualenv (tests/parity/generate.sh creates it):
    ../venv-parity/bin/python tests/io/keras/make_files.py
"""
import io
import json
import os
import pathlib
import shutil
import zipfile

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent


def small_model():
    keras.utils.set_random_seed(7)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense"),
                          keras.layers.BatchNormalization(name="bn"),
                          keras.layers.Dense(2, activation="softmax", name="out")])
    rng = np.random.default_rng(7)
    m.set_weights([rng.normal(size=w.shape).astype("float32") if i not in (4, 5)
                   else (rng.normal(size=w.shape) if i == 4 else rng.uniform(0.5, 2, size=w.shape)).astype("float32")
                   for i, w in enumerate(m.get_weights())])
    return m


def copy_h5(src, dst, edit):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)


def main():
    out = HERE
    m = small_model()
    x = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
    np.save(out / "small_x.npy", x)
    np.save(out / "small_y.npy", m.predict(x, verbose=0))
    m.save(out / "small.h5")
    m.save(out / "small.keras")
    # Weights only: Keras 3's layout, and the legacy root layout keras.applications ships.
    m.save_weights(out / "small.weights.h5")
    from keras.src.legacy.saving import legacy_h5_format
    with h5py.File(out / "small_legacy_weights.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, m)
    h5 = out / "small.h5"
    with h5py.File(h5) as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["model_weights/dense"].attrs["weight_names"]]
        out_names = [n.decode() if isinstance(n, bytes) else n for n in f["model_weights/out"].attrs["weight_names"]]
    kernel = "model_weights/dense/" + names[0]
    other_kernel = "/model_weights/out/" + out_names[0]

    def soft(f):
        del f[kernel]
        f[kernel] = h5py.SoftLink(other_kernel)
    copy_h5(h5, out / "hostile_softlink.h5", soft)

    def external(f):
        del f[kernel]
        f[kernel] = h5py.ExternalLink("/etc/passwd", "/x")
    copy_h5(h5, out / "hostile_extlink.h5", external)

    def ext_storage(f):
        del f[kernel]
        f.create_dataset(kernel, shape=(4, 3), dtype="float32", external=[("/etc/hostname", 0, 48)])
    copy_h5(h5, out / "hostile_external_storage.h5", ext_storage)

    def virtual(f):
        del f[kernel]
        layout = h5py.VirtualLayout(shape=(4, 3), dtype="float32")
        layout[:] = h5py.VirtualSource("/etc/passwd", "x", shape=(4, 3))
        f.create_virtual_dataset(kernel, layout)
    copy_h5(h5, out / "hostile_virtual.h5", virtual)

    def bomb(f):
        # A Dense whose declared kernel is huge but compresses to almost nothing; the config
        # says units=3, so the shape check must refuse it before any allocation.
        del f[kernel]
        f.create_dataset(kernel, shape=(4, 3 << 26), dtype="float32", chunks=(1, 1 << 20),
                         compression="gzip", fillvalue=0.0)
    copy_h5(h5, out / "hostile_bomb.h5", bomb)

    def bomb_config(f):
        # The config itself asks for a huge layer (units 2^27: a 2 GiB kernel) and the dataset
        # declares exactly that shape, stored as a few compressed chunks: refused before the
        # model is built, so nothing is allocated for it.
        cfg = json.loads(f.attrs["model_config"])
        cfg["config"]["layers"][1]["config"]["units"] = 1 << 27
        f.attrs["model_config"] = json.dumps(cfg)
        del f[kernel]
        d = f.create_dataset(kernel, shape=(4, 1 << 27), dtype="float32", chunks=(1, 1 << 20),
                             compression="gzip")
        d[0, :16] = 1.0
    copy_h5(h5, out / "hostile_bomb_config.h5", bomb_config)

    def wrong_shape(f):
        del f[kernel]
        f.create_dataset(kernel, data=np.zeros((5, 3), "float32"))
    copy_h5(h5, out / "hostile_wrong_shape.h5", wrong_shape)

    def nan(f):
        f[kernel][0, 0] = np.nan
    copy_h5(h5, out / "hostile_nan.h5", nan)

    def split_names(f):
        # h5py/tf.keras split attributes above 64 KiB into layer_names0, layer_names1, ...
        names = list(f["model_weights"].attrs["layer_names"])
        del f["model_weights"].attrs["layer_names"]
        f["model_weights"].attrs["layer_names0"] = names[:1]
        f["model_weights"].attrs["layer_names1"] = names[1:]
    copy_h5(h5, out / "split_layer_names.h5", split_names)

    def lam(f):
        cfg = json.loads(f.attrs["model_config"])
        cfg["config"]["layers"].insert(2, {"class_name": "Lambda", "config": {
            "name": "evil", "function": {"class_name": "__lambda__", "config": {"code": "AAAA"}}}})
        f.attrs["model_config"] = json.dumps(cfg)
    copy_h5(h5, out / "hostile_lambda.h5", lam)

    # .keras variants: config.json edited inside the zip (weights unchanged).
    def edit_keras(name, edit):
        with zipfile.ZipFile(out / "small.keras") as z:
            members = {i.filename: z.read(i.filename) for i in z.infolist()}
        cfg = json.loads(members["config.json"])
        edit(cfg)
        members["config.json"] = json.dumps(cfg).encode()
        with zipfile.ZipFile(out / name, "w") as z:
            for k, v in members.items():
                z.writestr(k, v)

    def custom(cfg):
        layer = cfg["config"]["layers"][1]
        layer["module"] = "os"
        layer["class_name"] = "system"
    edit_keras("hostile_module.keras", custom)

    def quantized(cfg):
        cfg["config"]["layers"][1]["config"]["dtype"] = {
            "module": "keras", "class_name": "Int8DTypePolicy",
            "config": {"name": "int8_from_float32", "source_name": "float32"}, "registered_name": None}
    edit_keras("hostile_quantized.keras", quantized)

    # Keras 3.0-3.3 wrote a layer's dtype as a plain policy name; the same model in that form.
    def string_dtypes(cfg):
        for layer in cfg["config"]["layers"]:
            if isinstance(layer["config"].get("dtype"), dict):
                layer["config"]["dtype"] = "float32"
        cfg["config"]["dtype"] = "float32"
    edit_keras("dtype_strings.keras", string_dtypes)

    # Functional with training=True baked into the BN call.
    inp = keras.Input((4,))
    h = keras.layers.Dense(3)(inp)
    h = keras.layers.BatchNormalization()(h, training=True)
    keras.Model(inp, keras.layers.Dense(2)(h)).save(out / "training_true.keras")
    # Transfer learning's pattern: a frozen base called with training=False (accepted, exact),
    # and the same base left trainable (refused: Keras would still train gamma/beta while
    # normalizing with moving statistics).
    for frozen in (True, False):
        keras.utils.set_random_seed(3)
        base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5), keras.layers.BatchNormalization(),
                                 keras.layers.Dropout(0.5)], name="base")
        rng = np.random.default_rng(3)
        bn = base.layers[1]
        bn.set_weights([rng.uniform(0.5, 1.5, 5).astype("float32"), rng.normal(size=5).astype("float32"),
                        rng.normal(size=5).astype("float32"), rng.uniform(0.5, 2, 5).astype("float32")])
        base.trainable = not frozen
        inp = keras.Input((4,))
        model = keras.Model(inp, keras.layers.Dense(2, name="head")(base(inp, training=False)))
        name = "training_false_frozen" if frozen else "training_false_trainable"
        model.save(out / f"{name}.keras")
        if frozen:
            np.save(out / f"{name}_y.npy", model.predict(x, verbose=0))
    print("written to", out)


if __name__ == "__main__":
    main()
