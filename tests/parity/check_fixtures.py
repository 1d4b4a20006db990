#!/usr/bin/env python3
"""Independent float64 numpy check of the parity fixtures.

Recomputes, from the stored inputs only and with plain numpy in float64,
what each family's reference framework produced, and prints the largest
error per family and per array.  It imports neither TensorFlow, Keras nor
PyTorch; for the `onnx` family it uses the `onnx` package only to parse the
TensorProto files.

Error measures, per array (got = fixture value, ref = float64 recomputation):
  max_abs   max |got - ref|
  rel_norm  max |got - ref| / max |ref|                (normwise); for dx
            the denominator is max |dy * gamma / sqrt(var + eps)|, the size
            of the terms that cancel in the BN backward formula (for N=2
            the exact dx is ~0 and max |ref| would be meaningless)
  rel_elem  max |got - ref| / max(|ref|, 1e-3 * max |ref|)   (elementwise,
            denominators floored at 1e-3 of the array's largest magnitude)

Exits non-zero if any rel_norm exceeds the family's limit (LIMITS below).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES_DIR = HERE / "fixtures"
ONNX_DIR = HERE / "onnx"

# rel_norm limits.  The BN families are single float32 evaluations; the model
# families are whole float32 training runs compared with a float64 replica.
LIMITS = {
    "keras_bn": 1e-5,
    "torch_bn": 1e-5,
    "keras_frozen": 1e-4,
    "keras_seed": 1e-3,
    "onnx": 1e-5,
    # Image layers: one float32 evaluation each; keras_cnn is the inference
    # forward of the stored weights (before and after training).
    "keras_conv": 1e-5,
    "keras_pool": 1e-5,
    "keras_flatten": 0.0,
    "keras_cnn": 1e-5,
    # Data with |mean| ~ 1e4 and std ~ 1: float32 itself (x has ulp ~1e-3)
    # and TF's `x*inv + (beta - mean*inv)` lose ~3 digits; reported apart.
    "keras_bn[large_mean]": 1e-2,
}
FAMILIES = ["keras_bn", "keras_bn[large_mean]", "torch_bn", "keras_frozen",
            "keras_seed", "keras_conv", "keras_pool", "keras_flatten",
            "keras_cnn", "onnx"]


class Report:
    def __init__(self):
        self.rows = []  # (family, case, array, max_abs, rel_norm, rel_elem)

    def add(self, family, case, name, got, ref, scale=None):
        got = np.asarray(got, np.float64)
        ref = np.asarray(ref, np.float64)
        if got.shape != ref.shape:
            raise AssertionError(
                f"{family}/{case}/{name}: shape {got.shape} != {ref.shape}")
        d = np.abs(got - ref)
        if scale is None:
            scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        max_abs = float(d.max()) if d.size else 0.0
        rel_norm = max_abs / scale if scale > 0 else max_abs
        floor = 1e-3 * scale if scale > 0 else 1e-30
        rel_elem = float(np.max(d / np.maximum(np.abs(ref), floor))) \
            if d.size else 0.0
        self.rows.append((family, case, name, max_abs, rel_norm, rel_elem))


def load_case(d: pathlib.Path):
    meta = json.loads((d / "meta.json").read_text())
    arrays = {}
    for name in meta["arrays"]:
        a = np.load(d / f"{name}.npy", allow_pickle=False)
        arrays[name] = a
    return meta, arrays


def cases(family):
    root = FIXTURES_DIR / family
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if (p / "meta.json").exists())


def f64(a):
    return np.asarray(a, dtype=np.float64)


# --------------------------------------------------------------------------
# batch normalization in float64
# --------------------------------------------------------------------------


def bcast(v, ndim, axis):
    s = [1] * ndim
    s[axis] = -1
    return f64(v).reshape(s)


def reduce_axes(ndim, axis):
    return tuple(i for i in range(ndim) if i != axis)


def batch_moments(x, axis):
    x = f64(x)
    red = reduce_axes(x.ndim, axis)
    mean = x.mean(axis=red)
    var = ((x - bcast(mean, x.ndim, axis)) ** 2).mean(axis=red)
    count = x.size // x.shape[axis]
    return mean, var, count


def bn_apply(x, axis, mean, var, gamma, beta, eps):
    x = f64(x)
    nd = x.ndim
    return ((x - bcast(mean, nd, axis)) / np.sqrt(bcast(var, nd, axis) + eps)
            * bcast(gamma, nd, axis) + bcast(beta, nd, axis))


def dx_scale(x, dy, axis, gamma, eps):
    _, var, _ = batch_moments(x, axis)
    t = f64(dy) * bcast(f64(gamma) / np.sqrt(var + eps), f64(x).ndim, axis)
    return float(np.max(np.abs(t)))


def bn_backward(x, dy, axis, gamma, eps):
    """Gradients of sum(y * dy) for training-mode BN (batch statistics)."""
    x, dy = f64(x), f64(dy)
    nd = x.ndim
    red = reduce_axes(nd, axis)
    mean, var, m = batch_moments(x, axis)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (x - bcast(mean, nd, axis)) * bcast(inv, nd, axis)
    dbeta = dy.sum(axis=red)
    dgamma = (dy * xhat).sum(axis=red)
    dxhat = dy * bcast(gamma, nd, axis)
    s1 = bcast(dxhat.sum(axis=red), nd, axis)
    s2 = bcast((dxhat * xhat).sum(axis=red), nd, axis)
    dx = bcast(inv, nd, axis) / m * (m * dxhat - s1 - xhat * s2)
    return dx, dgamma, dbeta


# --------------------------------------------------------------------------
# keras_bn
# --------------------------------------------------------------------------


def check_keras_bn(rep: Report):
    for d in cases("keras_bn"):
        meta, a = load_case(d)
        cfg = meta["config"]
        axis, eps, mom = cfg["axis_normalized"], cfg["epsilon"], cfg["momentum"]
        c = cfg["channels"]
        gamma = a.get("gamma", np.ones(c))
        beta = a.get("beta", np.zeros(c))
        x = a["x"]
        case = meta["case"]
        fam = "keras_bn[large_mean]" if cfg["data"] == "large_mean" \
            else "keras_bn"

        mean, var, _ = batch_moments(x, axis)
        rep.add(fam, case, "y_training", a["y_training"],
                bn_apply(x, axis, mean, var, gamma, beta, eps))
        rep.add(fam, case, "y_inference", a["y_inference"],
                bn_apply(x, axis, a["moving_mean"], a["moving_variance"],
                         gamma, beta, eps))
        dx, dgamma, dbeta = bn_backward(x, a["dy"], axis, gamma, eps)
        rep.add(fam, case, "dx", a["dx"], dx,
                scale=dx_scale(x, a["dy"], axis, gamma, eps))
        if "dgamma" in a:
            rep.add(fam, case, "dgamma", a["dgamma"], dgamma)
        if "dbeta" in a:
            rep.add(fam, case, "dbeta", a["dbeta"], dbeta)

        mm, mv = f64(a["moving_mean"]), f64(a["moving_variance"])
        for xs in a["x_steps"]:
            bm, bv, _ = batch_moments(xs, axis)
            mm = mm * mom + bm * (1.0 - mom)
            mv = mv * mom + bv * (1.0 - mom)   # biased batch variance
        rep.add(fam, case, "moving_mean_after", a["moving_mean_after"],
                mm)
        rep.add(fam, case, "moving_variance_after",
                a["moving_variance_after"], mv)
        rep.add(fam, case, "y_inference_after", a["y_inference_after"],
                bn_apply(x, axis, mm, mv, gamma, beta, eps))


def keras_f32_moments(x, axis):
    """float32 batch moments summed sequentially in the order TF's CPU
    reduction used for these (small) fixtures: for each channel, the inner
    index (axes after `axis`) is the slow loop and the outer index (axes
    before `axis`) the fast one; mean = sum / n, var = sum((x - mean)^2) / n.
    """
    x = np.asarray(x, np.float32)
    c = x.shape[axis]
    outer = int(np.prod(x.shape[:axis]))
    inner = int(np.prod(x.shape[axis + 1:]))
    rows = np.transpose(x.reshape(outer, c, inner), (2, 0, 1)).reshape(-1, c)
    n = np.float32(rows.shape[0])
    acc = np.zeros(c, np.float32)
    for r in rows:
        acc = acc + r
    mean = acc / n
    acc = np.zeros(c, np.float32)
    for r in rows:
        acc = acc + (r - mean) * (r - mean)
    return mean, acc / n


def keras_f32_apply(x, axis, mean, var, gamma, beta, eps):
    """tf.nn.batch_normalization in float32:
    inv = rsqrt(var + eps) * gamma; y = x * inv + (beta - mean * inv)."""
    nd = x.ndim
    s = [1] * nd
    s[axis] = -1
    inv = np.float32(1) / np.sqrt(np.float32(var) + np.float32(eps))
    if gamma is not None:
        inv = inv * gamma
    inv = inv.reshape(s)
    mean = np.asarray(mean, np.float32).reshape(s)
    off = (beta.reshape(s) - mean * inv) if beta is not None else -(mean * inv)
    return x * inv + off


def keras_bn_emulation(observations: dict):
    """Which keras_bn arrays a float32 emulation reproduces bit for bit."""
    counts = {}
    for d in cases("keras_bn"):
        meta, a = load_case(d)
        cfg = meta["config"]
        axis, eps, mom = cfg["axis_normalized"], cfg["epsilon"], cfg["momentum"]
        g, b, x = a.get("gamma"), a.get("beta"), a["x"]
        mean, var = keras_f32_moments(x, axis)
        got = {
            "y_training": keras_f32_apply(x, axis, mean, var, g, b, eps),
            "y_inference": keras_f32_apply(x, axis, a["moving_mean"],
                                           a["moving_variance"], g, b, eps),
        }
        # Keras: moving * momentum + batch * (1.0 - momentum), with momentum
        # and (1.0 - momentum) Python doubles each rounded to float32 once.
        m32, om32 = np.float32(mom), np.float32(1.0 - mom)
        mm, mv = a["moving_mean"], a["moving_variance"]
        for xs in a["x_steps"]:
            bm, bv = keras_f32_moments(xs, axis)
            mm = mm * m32 + bm * om32
            mv = mv * m32 + bv * om32
        got["moving_mean_after"], got["moving_variance_after"] = mm, mv
        got["y_inference_after"] = keras_f32_apply(
            x, axis, a["moving_mean_after"], a["moving_variance_after"], g, b,
            eps)
        for k, v in got.items():
            same = np.array_equal(np.asarray(v, np.float32), a[k])
            n_ok, n_all = counts.get(k, (0, 0))
            counts[k] = (n_ok + int(same), n_all + 1)
    for k, (n_ok, n_all) in counts.items():
        observations[f"keras_bn float32 emulation bit-exact: {k}"] = \
            f"{n_ok}/{n_all} cases"


# --------------------------------------------------------------------------
# torch_bn
# --------------------------------------------------------------------------


def check_torch_bn(rep: Report):
    for d in cases("torch_bn"):
        meta, a = load_case(d)
        cfg = meta["config"]
        eps, mom = cfg["eps"], cfg["momentum"]
        c = cfg["num_features"]
        track = cfg["track_running_stats"]
        w = a.get("weight", np.ones(c))
        b = a.get("bias", np.zeros(c))
        x = a["x"]
        case = meta["case"]
        axis = 1

        mean, var, _ = batch_moments(x, axis)
        y_batch = bn_apply(x, axis, mean, var, w, b, eps)
        rep.add("torch_bn", case, "y_training", a["y_training"], y_batch)
        if track:
            rep.add("torch_bn", case, "y_inference", a["y_inference"],
                    bn_apply(x, axis, a["running_mean"], a["running_var"], w,
                             b, eps))
        else:
            rep.add("torch_bn", case, "y_inference", a["y_inference"], y_batch)
        dx, dw, db = bn_backward(x, a["dy"], axis, w, eps)
        rep.add("torch_bn", case, "dx", a["dx"], dx,
                scale=dx_scale(x, a["dy"], axis, w, eps))
        if "dweight" in a:
            rep.add("torch_bn", case, "dweight", a["dweight"], dw)
            rep.add("torch_bn", case, "dbias", a["dbias"], db)

        if track:
            rm, rv = f64(a["running_mean"]), f64(a["running_var"])
            nbt = cfg["num_batches_tracked_initial"]
            for xs in a["x_steps"]:
                bm, bv, n = batch_moments(xs, axis)
                nbt += 1
                f = (1.0 / nbt) if mom is None else mom
                rm = (1.0 - f) * rm + f * bm
                rv = (1.0 - f) * rv + f * bv * n / (n - 1)  # Bessel
            rep.add("torch_bn", case, "running_mean_after",
                    a["running_mean_after"], rm)
            rep.add("torch_bn", case, "running_var_after",
                    a["running_var_after"], rv)
            got_nbt = int(a["num_batches_tracked_after"])
            if got_nbt != nbt or a["num_batches_tracked_after"].dtype != np.int64:
                raise AssertionError(f"torch_bn/{case}: num_batches_tracked "
                                     f"{got_nbt} != {nbt}")
            rep.add("torch_bn", case, "y_inference_after",
                    a["y_inference_after"], bn_apply(x, axis, rm, rv, w, b,
                                                     eps))
        else:
            rep.add("torch_bn", case, "y_inference_after",
                    a["y_inference_after"], y_batch)


# --------------------------------------------------------------------------
# Keras models: float64 replica of Dense -> BN -> Dense(softmax) training
# --------------------------------------------------------------------------

WEIGHTS = ["dense_kernel", "dense_bias", "bn_gamma", "bn_beta",
           "bn_moving_mean", "bn_moving_variance", "dense_1_kernel",
           "dense_1_bias"]


def mlp_forward(p, x, relu, bn_batch_stats, eps):
    x = f64(x)
    h = x @ p["dense_kernel"] + p["dense_bias"]
    act = np.maximum(h, 0.0) if relu else h
    if bn_batch_stats:
        mu = act.mean(axis=0)
        var = ((act - mu) ** 2).mean(axis=0)
    else:
        mu, var = p["bn_moving_mean"], p["bn_moving_variance"]
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (act - mu) * inv
    z = xhat * p["bn_gamma"] + p["bn_beta"]
    logits = z @ p["dense_1_kernel"] + p["dense_1_bias"]
    return dict(x=x, h=h, act=act, mu=mu, var=var, inv=inv, xhat=xhat, z=z,
                logits=logits)


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sparse_ce(logits, y):
    m = logits.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - logits[np.arange(len(y)), y]))


def mlp_grads(p, c, y, relu, bn_batch_stats):
    n = c["x"].shape[0]
    prob = softmax(c["logits"])
    dlogits = prob.copy()
    dlogits[np.arange(n), y] -= 1.0
    dlogits /= n
    g = {"dense_1_kernel": c["z"].T @ dlogits, "dense_1_bias": dlogits.sum(0)}
    dz = dlogits @ p["dense_1_kernel"].T
    g["bn_gamma"] = (dz * c["xhat"]).sum(0)
    g["bn_beta"] = dz.sum(0)
    dxhat = dz * p["bn_gamma"]
    if bn_batch_stats:
        dact = c["inv"] / n * (n * dxhat - dxhat.sum(0)
                               - c["xhat"] * (dxhat * c["xhat"]).sum(0))
    else:
        dact = dxhat * c["inv"]
    dh = dact * (c["h"] > 0) if relu else dact
    g["dense_kernel"] = c["x"].T @ dh
    g["dense_bias"] = dh.sum(0)
    return g


class SGD:
    def __init__(self, lr, momentum=0.0):
        self.lr, self.momentum, self.v = lr, momentum, {}

    def step(self, p, g):
        for k, gk in g.items():
            if self.momentum:
                v = self.v.get(k, np.zeros_like(gk))
                v = self.momentum * v - self.lr * gk
                self.v[k] = v
                p[k] = p[k] + v
            else:
                p[k] = p[k] - self.lr * gk


class Adam:
    def __init__(self, lr, beta_1, beta_2, epsilon):
        self.lr, self.b1, self.b2, self.eps = lr, beta_1, beta_2, epsilon
        self.t, self.m, self.v = 0, {}, {}

    def step(self, p, g):
        self.t += 1
        alpha = self.lr * np.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t)
        for k, gk in g.items():
            m = self.m.get(k, np.zeros_like(gk))
            v = self.v.get(k, np.zeros_like(gk))
            m = m + (gk - m) * (1 - self.b1)
            v = v + (gk * gk - v) * (1 - self.b2)
            self.m[k], self.v[k] = m, v
            p[k] = p[k] - alpha * m / (np.sqrt(v) + self.eps)


def make_optimizer(cfg):
    oc = cfg["optimizer_config"]
    if cfg["optimizer"] == "SGD":
        if oc.get("nesterov"):
            raise NotImplementedError("nesterov")
        return SGD(oc["learning_rate"], oc.get("momentum", 0.0))
    if cfg["optimizer"] == "Adam":
        if oc.get("amsgrad"):
            raise NotImplementedError("amsgrad")
        return Adam(oc["learning_rate"], oc["beta_1"], oc["beta_2"],
                    oc["epsilon"])
    raise NotImplementedError(cfg["optimizer"])


def train_replica(p, batches, cfg, relu, bn_trainable):
    """Keras train_step in float64; returns the per-step reported losses."""
    eps, mom = cfg["bn_epsilon"], cfg["bn_momentum"]
    opt = make_optimizer(cfg)
    losses = []
    for xb, yb in batches:
        c = mlp_forward(p, xb, relu, bn_batch_stats=bn_trainable, eps=eps)
        losses.append(sparse_ce(c["logits"], yb))   # before the update
        if bn_trainable:  # moving statistics are assigned in the forward pass
            p["bn_moving_mean"] = p["bn_moving_mean"] * mom + c["mu"] * (1 - mom)
            p["bn_moving_variance"] = (p["bn_moving_variance"] * mom
                                       + c["var"] * (1 - mom))
        g = mlp_grads(p, c, yb, relu, bn_batch_stats=bn_trainable)
        if not bn_trainable:
            del g["bn_gamma"], g["bn_beta"]
        opt.step(p, g)
    return losses


def check_keras_models(rep: Report, observations: dict):
    for d in cases("keras_frozen"):
        meta, a = load_case(d)
        cfg, case = meta["config"], meta["case"]
        p = {k: f64(a[k]) for k in WEIGHTS}
        bs, n = cfg["batch_size"], a["x"].shape[0]
        batches = [(a["x"][i:i + bs], a["y"][i:i + bs])
                   for _ in range(cfg["epochs"]) for i in range(0, n, bs)]
        train_replica(p, batches, cfg, relu=False,
                      bn_trainable=cfg["bn_trainable"])
        for k in WEIGHTS:
            rep.add("keras_frozen", case, k + "_after", a[k + "_after"], p[k])
        c = mlp_forward(p, a["x"], False, False, cfg["bn_epsilon"])
        rep.add("keras_frozen", case, "predictions_after",
                a["predictions_after"], softmax(c["logits"]))
        # Inference alone, from Keras' own final weights.
        pk = {k: f64(a[k + "_after"]) for k in WEIGHTS}
        c = mlp_forward(pk, a["x"], False, False, cfg["bn_epsilon"])
        rep.add("keras_frozen", case, "predictions_after[from stored weights]",
                a["predictions_after"], softmax(c["logits"]))
        if not cfg["bn_trainable"]:
            for k in ["bn_gamma", "bn_beta", "bn_moving_mean",
                      "bn_moving_variance"]:
                if not np.array_equal(a[k], a[k + "_after"]):
                    raise AssertionError(f"keras_frozen/{case}: frozen {k} "
                                         "changed during fit")
            observations["keras_frozen: frozen BN weights bit-identical "
                         "after fit"] = True

    for d in cases("keras_seed"):
        meta, a = load_case(d)
        cfg, case = meta["config"], meta["case"]
        p = {k: f64(a[k]) for k in WEIGHTS}
        batches = list(zip(a["x_batches"], a["y_batches"]))
        losses = train_replica(p, batches, cfg, relu=True, bn_trainable=True)
        rep.add("keras_seed", case, "losses", a["losses"], losses)
        for k in WEIGHTS:
            rep.add("keras_seed", case, k + "_after", a[k + "_after"], p[k])
        c = mlp_forward(p, a["x_eval"], True, False, cfg["bn_epsilon"])
        rep.add("keras_seed", case, "predictions_after",
                a["predictions_after"], softmax(c["logits"]))
        pk = {k: f64(a[k + "_after"]) for k in WEIGHTS}
        c = mlp_forward(pk, a["x_eval"], True, False, cfg["bn_epsilon"])
        rep.add("keras_seed", case, "predictions_after[from stored weights]",
                a["predictions_after"], softmax(c["logits"]))
        # Semantics of the reported loss: pre-update (above) vs. post-update.
        # Post-update alternative, computed along the replica's trajectory.
        post = []
        p3 = {k: f64(a[k]) for k in WEIGHTS}
        opt = make_optimizer(cfg)
        eps, mom = cfg["bn_epsilon"], cfg["bn_momentum"]
        for xb, yb in batches:
            c = mlp_forward(p3, xb, True, True, eps)
            p3["bn_moving_mean"] = p3["bn_moving_mean"] * mom + c["mu"] * (1 - mom)
            p3["bn_moving_variance"] = (p3["bn_moving_variance"] * mom
                                        + c["var"] * (1 - mom))
            opt.step(p3, mlp_grads(p3, c, yb, True, True))
            c2 = mlp_forward(p3, xb, True, True, eps)
            post.append(sparse_ce(c2["logits"], yb))
        observations[f"keras_seed/{case}: max |losses - pre-update loss|"] = \
            float(np.max(np.abs(f64(a["losses"]) - losses)))
        observations[f"keras_seed/{case}: max |losses - post-update loss|"] = \
            float(np.max(np.abs(f64(a["losses"]) - post)))


# --------------------------------------------------------------------------
# image layers in float64: keras_conv, keras_pool, keras_flatten, keras_cnn
# --------------------------------------------------------------------------


def to_nhwc(a, fmt):
    return f64(a) if fmt == "channels_last" else \
        np.transpose(f64(a), (0, 2, 3, 1))


def from_nhwc(a, fmt):
    return a if fmt == "channels_last" else np.transpose(a, (0, 3, 1, 2))


def axis_geometry(size, k, s, d, padding):
    """(out, pad_before, pad_after) of one axis, as TensorFlow."""
    span = (k - 1) * d + 1
    if padding == "valid":
        return (size - span) // s + 1, 0, 0
    out = -(-size // s)
    total = max((out - 1) * s + span - size, 0)
    return out, total // 2, total - total // 2


def conv_geometry(x, kernel_size, strides, dilation, padding):
    _, h, w, _ = x.shape
    gh = axis_geometry(h, kernel_size[0], strides[0], dilation[0], padding)
    gw = axis_geometry(w, kernel_size[1], strides[1], dilation[1], padding)
    return gh, gw


def conv2d_f64(x, kernel, bias, strides, dilation, padding):
    """NHWC cross-correlation with TF padding; also returns the padded x."""
    kh, kw, _, f = kernel.shape
    (oh, pt, pb), (ow, pl, pr) = conv_geometry(x, (kh, kw), strides, dilation,
                                               padding)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    y = np.zeros((x.shape[0], oh, ow, f))
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilation[0], j * dilation[1]
            patch = xp[:, r0:r0 + (oh - 1) * strides[0] + 1:strides[0],
                       c0:c0 + (ow - 1) * strides[1] + 1:strides[1], :]
            y += patch @ kernel[i, j]
    if bias is not None:
        y += bias
    return y, xp, (pt, pl)


def conv2d_backward_f64(x, kernel, dz, strides, dilation, padding):
    kh, kw, _, _ = kernel.shape
    _, xp, (pt, pl) = conv2d_f64(x, kernel, None, strides, dilation, padding)
    oh, ow = dz.shape[1:3]
    dxp = np.zeros_like(xp)
    dk = np.zeros_like(kernel)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilation[0], j * dilation[1]
            rs = slice(r0, r0 + (oh - 1) * strides[0] + 1, strides[0])
            cs = slice(c0, c0 + (ow - 1) * strides[1] + 1, strides[1])
            dk[i, j] = np.einsum("nhwc,nhwf->cf", xp[:, rs, cs, :], dz)
            dxp[:, rs, cs, :] += dz @ kernel[i, j].T
    h, w = x.shape[1:3]
    return dxp[:, pt:pt + h, pl:pl + w, :], dk, dz.sum(axis=(0, 1, 2))


def activation_f64(name, z):
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    if name == "linear":
        return z
    if name == "softmax":
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise NotImplementedError(name)


def activation_grad_f64(name, z, dy):
    if name == "relu":
        return dy * (z > 0)
    if name == "tanh":
        return dy * (1.0 - np.tanh(z) ** 2)
    if name == "linear":
        return dy
    raise NotImplementedError(name)


def check_keras_conv(rep: Report):
    for d in cases("keras_conv"):
        meta, a = load_case(d)
        cfg, case = meta["config"], meta["case"]
        fmt = cfg["data_format"]
        x = to_nhwc(a["x"], fmt)
        kernel = f64(a["kernel"])
        bias = f64(a["bias"]) if "bias" in a else None
        args = (cfg["strides"], cfg["dilation_rate"], cfg["padding"])
        z, _, _ = conv2d_f64(x, kernel, bias, *args)
        act = cfg["activation"]
        rep.add("keras_conv", case, "y", a["y"],
                from_nhwc(activation_f64(act, z), fmt))
        dz = activation_grad_f64(act, z, to_nhwc(a["dy"], fmt))
        dx, dk, db = conv2d_backward_f64(x, kernel, dz, *args)
        rep.add("keras_conv", case, "dx", a["dx"], from_nhwc(dx, fmt))
        rep.add("keras_conv", case, "dkernel", a["dkernel"], dk)
        if "dbias" in a:
            rep.add("keras_conv", case, "dbias", a["dbias"], db)


def pool_windows(shape, pool, strides, padding):
    """Yields (oh, ow, rows, cols): each window clipped to the input."""
    _, h, w, _ = shape
    oh, pt, _ = axis_geometry(h, pool[0], strides[0], 1, padding)
    ow, pl, _ = axis_geometry(w, pool[1], strides[1], 1, padding)
    for i in range(oh):
        r0 = i * strides[0] - pt
        rows = slice(max(r0, 0), min(r0 + pool[0], h))
        for j in range(ow):
            c0 = j * strides[1] - pl
            yield i, j, rows, slice(max(c0, 0), min(c0 + pool[1], w))


def pool_f64(kind, x, dy, pool, strides, padding):
    """Forward and dx; max routes each window's gradient to its first
    maximum in row-major order."""
    n, _, _, c = x.shape
    wins = list(pool_windows(x.shape, pool, strides, padding))
    oh = max(wn[0] for wn in wins) + 1
    ow = max(wn[1] for wn in wins) + 1
    y = np.zeros((n, oh, ow, c))
    dx = np.zeros_like(x)
    for i, j, rs, cs in wins:
        win = x[:, rs, cs, :]
        hh, ww = win.shape[1:3]
        if kind == "max":
            flat = win.reshape(n, hh * ww, c)
            arg = flat.argmax(axis=1)          # first maximum
            y[:, i, j, :] = flat.max(axis=1)
            for b in range(n):
                for ch in range(c):
                    r, q = divmod(arg[b, ch], ww)
                    dx[b, rs.start + r, cs.start + q, ch] += dy[b, i, j, ch]
        else:
            y[:, i, j, :] = win.mean(axis=(1, 2))
            dx[:, rs, cs, :] += dy[:, i, j, None, None, :] / (hh * ww)
    return y, dx


def check_keras_pool(rep: Report, observations: dict):
    tie_cases = 0
    for d in cases("keras_pool"):
        meta, a = load_case(d)
        cfg, case = meta["config"], meta["case"]
        fmt = cfg["data_format"]
        x = to_nhwc(a["x"], fmt)
        if cfg["layer"].endswith("GlobalAveragePooling2D"):
            dy = f64(a["dy"]).reshape(x.shape[0], -1)
            y = x.mean(axis=(1, 2))
            dx = np.broadcast_to(dy[:, None, None, :] / (x.shape[1] * x.shape[2]),
                                 x.shape)
            rep.add("keras_pool", case, "y", a["y"].reshape(y.shape), y)
            rep.add("keras_pool", case, "dx", a["dx"], from_nhwc(dx, fmt))
            continue
        kind = "max" if cfg["layer"].endswith("MaxPooling2D") else "avg"
        strides = cfg["strides"] or cfg["pool_size"]
        y, dx = pool_f64(kind, x, to_nhwc(a["dy"], fmt), cfg["pool_size"],
                         strides, cfg["padding"])
        rep.add("keras_pool", case, "y", a["y"], from_nhwc(y, fmt))
        rep.add("keras_pool", case, "dx", a["dx"], from_nhwc(dx, fmt))
        if cfg["data"] == "ties":
            tie_cases += 1
    observations["keras_pool: max-pool tie cases checked against the "
                 "first-maximum rule"] = tie_cases


def flatten_f64(x, fmt):
    x = f64(x)
    if fmt == "channels_first" and x.ndim > 2:
        x = np.moveaxis(x, 1, -1)
    return x.reshape(x.shape[0], -1)


def check_keras_flatten(rep: Report):
    for d in cases("keras_flatten"):
        meta, a = load_case(d)
        cfg, case = meta["config"], meta["case"]
        fmt = cfg["data_format"]
        rep.add("keras_flatten", case, "y", a["y"], flatten_f64(a["x"], fmt))
        # dx is the inverse permutation of dy.
        idx = flatten_f64(np.arange(a["x"].size).reshape(a["x"].shape), fmt)
        dx = np.zeros(a["x"].size)
        dx[idx.astype(np.int64).ravel()] = f64(a["dy"]).ravel()
        rep.add("keras_flatten", case, "dx", a["dx"], dx.reshape(a["x"].shape))


def cnn_predict_f64(cfg, w, x):
    """Inference-mode forward of the keras_cnn model from its layer configs;
    image tensors are kept NHWC."""
    fmt = cfg["data_format"]
    h = to_nhwc(x, fmt)
    for layer in cfg["layers"]:
        cls, lc, name = layer["class_name"], layer["config"], layer["name"]
        if cls == "Conv2D":
            b = w.get(f"{name}_bias")
            h, _, _ = conv2d_f64(h, f64(w[f"{name}_kernel"]),
                                 None if b is None else f64(b), lc["strides"],
                                 lc["dilation_rate"], lc["padding"])
            h = activation_f64(lc["activation"], h)
        elif cls == "BatchNormalization":
            mm, mv = f64(w[f"{name}_moving_mean"]), f64(w[f"{name}_moving_variance"])
            h = ((h - mm) / np.sqrt(mv + lc["epsilon"]) * f64(w[f"{name}_gamma"])
                 + f64(w[f"{name}_beta"]))
        elif cls == "Activation":
            h = activation_f64(lc["activation"], h)
        elif cls == "MaxPooling2D":
            h = pool_forward_only(h, lc)
        elif cls == "Flatten":
            h = h.reshape(h.shape[0], -1)      # NHWC order = Keras's order
        elif cls == "Dense":
            h = h @ f64(w[f"{name}_kernel"])
            if f"{name}_bias" in w:
                h = h + f64(w[f"{name}_bias"])
            h = activation_f64(lc["activation"], h)
        else:
            raise NotImplementedError(cls)
    return h


def pool_forward_only(h, lc):
    strides = lc["strides"] or lc["pool_size"]
    wins = list(pool_windows(h.shape, lc["pool_size"], strides, lc["padding"]))
    oh = max(wn[0] for wn in wins) + 1
    ow = max(wn[1] for wn in wins) + 1
    y = np.zeros((h.shape[0], oh, ow, h.shape[3]))
    for i, j, rs, cs in wins:
        y[:, i, j, :] = h[:, rs, cs, :].max(axis=(1, 2))
    return y


def check_keras_cnn(rep: Report):
    for d in cases("keras_cnn"):
        meta, a = load_case(d)
        cfg, case = meta["config"], meta["case"]
        names = cfg["weight_names"]
        w0 = {k: a[k] for k in names}
        w1 = {k: a[k + "_after"] for k in names}
        rep.add("keras_cnn", case, "predictions_initial",
                a["predictions_initial"], cnn_predict_f64(cfg, w0, a["x_eval"]))
        rep.add("keras_cnn", case, "predictions_after[from stored weights]",
                a["predictions_after"], cnn_predict_f64(cfg, w1, a["x_eval"]))
        p = cnn_predict_f64(cfg, w1, a["x_eval"])
        y = a["y_eval"]
        rep.add("keras_cnn", case, "evaluate_loss_after[from stored weights]",
                a["evaluate_loss_after"],
                np.float64(-np.mean(np.log(p[np.arange(len(y)), y]))))


# --------------------------------------------------------------------------
# onnx
# --------------------------------------------------------------------------


def check_onnx(rep: Report):
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        print("onnx not importable: skipping the onnx family")
        return
    for d in sorted(ONNX_DIR.glob("test_batchnorm_*")):
        exp = json.loads((d / "expected.json").read_text())

        def load(row):
            t = onnx.TensorProto()
            t.ParseFromString((d / row["file"]).read_bytes())
            return numpy_helper.to_array(t)

        ins = {r["role"]: load(r) for r in exp["inputs"]}
        outs = {r["role"]: load(r) for r in exp["outputs"]}
        at = exp["attributes"]
        eps, mom = at["epsilon"], at["momentum"]
        x = ins["X"]
        if at["training_mode"]:
            mean, var, _ = batch_moments(x, 1)
            rep.add("onnx", d.name, "Y", outs["Y"],
                    bn_apply(x, 1, mean, var, ins["scale"], ins["B"], eps))
            rep.add("onnx", d.name, "running_mean", outs["running_mean"],
                    f64(ins["input_mean"]) * mom + mean * (1 - mom))
            rep.add("onnx", d.name, "running_var", outs["running_var"],
                    f64(ins["input_var"]) * mom + var * (1 - mom))
        else:
            rep.add("onnx", d.name, "Y", outs["Y"],
                    bn_apply(x, 1, ins["input_mean"], ins["input_var"],
                             ins["scale"], ins["B"], eps))


# --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--verbose", action="store_true",
                    help="print every case/array row")
    args = ap.parse_args()
    rep = Report()
    observations: dict = {}
    check_keras_bn(rep)
    keras_bn_emulation(observations)
    check_torch_bn(rep)
    check_keras_models(rep, observations)
    check_keras_conv(rep)
    check_keras_pool(rep, observations)
    check_keras_flatten(rep)
    check_keras_cnn(rep)
    check_onnx(rep)

    failed = False
    print(f"{'family':<20} {'cases':>5} {'arrays':>6} {'max_abs':>10} "
          f"{'rel_norm':>10} {'rel_elem':>10}  worst (rel_norm)")
    for fam in FAMILIES:
        rows = [r for r in rep.rows if r[0] == fam]
        if not rows:
            print(f"{fam:<20} (no fixtures)")
            continue
        worst = max(rows, key=lambda r: r[4])
        ncases = len({r[1] for r in rows})
        print(f"{fam:<20} {ncases:>5} {len(rows):>6} "
              f"{max(r[3] for r in rows):10.3e} {worst[4]:10.3e} "
              f"{max(r[5] for r in rows):10.3e}  {worst[1]}/{worst[2]}")
        if worst[4] > LIMITS[fam]:
            failed = True
            print(f"  FAIL: rel_norm {worst[4]:.3e} > limit {LIMITS[fam]:.0e}")
    print("\nper array kind (max over cases):")
    kinds = {}
    for fam, case, name, ma, rn, re in rep.rows:
        key = (fam, name)
        k = kinds.setdefault(key, [0.0, 0.0, 0.0])
        kinds[key] = [max(k[0], ma), max(k[1], rn), max(k[2], re)]
    for (fam, name), (ma, rn, re) in kinds.items():
        print(f"  {fam:<20} {name:<38} max_abs {ma:9.2e}  rel_norm {rn:9.2e}"
              f"  rel_elem {re:9.2e}")
    if observations:
        print("\nobservations:")
        for k, v in observations.items():
            print(f"  {k}: {v}")
    if args.verbose:
        print("\nall rows:")
        for r in rep.rows:
            print(f"  {r[0]}/{r[1]}/{r[2]}: max_abs {r[3]:.3e} rel_norm "
                  f"{r[4]:.3e} rel_elem {r[5]:.3e}")
    print("\nRESULT:", "FAIL" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
