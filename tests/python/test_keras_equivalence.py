"""bnorm runs the same Keras scripts as real Keras 3 and gets the same numbers.

Each case of equivalence_cases.py is one Keras training script, written once and run
with the module as a parameter. generate_keras_equivalence.py ran it with real Keras
(TensorFlow backend) and recorded the inputs, the initial weights and every result in
fixtures/keras_equivalence/<case>.npz; here the same function runs with bnorm on the
same inputs and initial weights, and every result must match.

Error measure and tolerances (docs/numerics.md, "Tolerances"): err = max |bnorm - keras|
/ max(|keras|, 1), relative for values of magnitude >= 1 and absolute below, as
everywhere in the parity suite (tests/parity/keras_check_util.rel_err).

  TRAIN_TOL 1e-4   per-step losses, weights after training, predictions, evaluate and
                   History losses: numerics.md holds 20 train_on_batch steps (keras_seed)
                   and fit/evaluate (keras_cnn) to 1e-4, "20 steps of rounding
                   compounding through updates"
  COUNT_TOL 1e-6   accuracies: a fraction of correct argmaxes, so any real difference is
                   at least 1/rows (>= 0.005 here); Keras stores it in float32, hence
                   not 0
  exact            the frozen BatchNormalization's four weights (numerics.md: frozen
                   weights bit-identical), History's keys and their order, dtypes and
                   shapes of every result

Every comparison prints one line, visible with `pytest -s`:

    EQUIV <case> <result> max_abs=<x> max_rel=<err> tol=<t>

and, when BNORM_EQUIV_REPORT names a file, appends it there too.

bnorm is imported unconditionally: without it these tests fail, they never skip.
"""

from __future__ import annotations

import functools
import os
import pathlib
import sys

import numpy as np
import pytest

import bnorm
import equivalence_cases as cases

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "keras_equivalence"
sys.path.insert(0, str(HERE.parent / "parity"))
from keras_check_util import rel_err  # noqa: E402  (the parity suite's error measure)

TRAIN_TOL = 1e-4
COUNT_TOL = 1e-6
FROZEN_BN = range(2, 6)  # the seed model's gamma, beta, moving_mean, moving_variance


def tolerance(case: str, name: str) -> float:
    if name == "history_keys":
        return 0.0
    if case == "frozen_bn" and name in {f"final_w{i}" for i in FROZEN_BN}:
        return 0.0
    if "accuracy" in name:
        return COUNT_TOL
    return TRAIN_TOL


@functools.lru_cache(maxsize=None)
def fixture(case: str):
    """(data, Keras's results, metadata) of a case, every array read-only."""
    with np.load(FIXTURES / f"{case}.npz") as npz:
        data, expected, meta = cases.unpack(npz)
    for a in [*data.values(), *data["weights"], *expected.values()]:
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
    return data, expected, meta


def fresh(data: dict, **changes) -> dict:
    """Writable copies of a case's inputs and weights for one run, so that nothing a run
    does to the arrays it is given can reach the fixture the other tests read."""
    copy = {k: np.array(v) for k, v in data.items() if k != "weights"}
    copy["weights"] = [np.array(w) for w in data["weights"]]
    copy.update(changes)
    return copy


@functools.lru_cache(maxsize=None)
def bnorm_results(case: str):
    """The case's script run with bnorm (once per session; the tests only read it)."""
    run, _ = cases.CASES[case]
    data, _, _ = fixture(case)
    return run(bnorm, fresh(data))


def report(line: str) -> None:
    print(line)
    path = os.environ.get("BNORM_EQUIV_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def compare(case: str, actual: dict, expected: dict, quiet: bool = False) -> list:
    """Failures (one string each) of actual against Keras's expected results."""
    failures = []
    if sorted(actual) != sorted(expected):
        failures.append(f"results {sorted(actual)} != Keras's {sorted(expected)}")
    for name in sorted(set(actual) & set(expected)):
        a, e = np.asarray(actual[name]), np.asarray(expected[name])
        tol = tolerance(case, name)
        if a.dtype.kind in "US" or e.dtype.kind in "US":
            same = a.shape == e.shape and bool(np.all(a == e))
            if not quiet:
                report(f"EQUIV {case} {name} {'equal' if same else 'DIFFERENT'}")
            if not same:
                failures.append(f"{name}: {a.tolist()} != Keras's {e.tolist()}")
            continue
        if a.dtype != e.dtype or a.shape != e.shape:
            failures.append(f"{name}: {a.dtype}{list(a.shape)} != Keras's "
                            f"{e.dtype}{list(e.shape)}")
            continue
        diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
        max_abs = float(diff.max()) if diff.size else 0.0
        err = rel_err(a, e)
        if not quiet:
            report(f"EQUIV {case} {name} max_abs={max_abs:.3g} max_rel={err:.3g} tol={tol:g}")
        if not err <= tol:  # NaN fails too
            worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
            failures.append(f"{name}: max_rel {err:.3g} > {tol:g} (at {worst}: bnorm "
                            f"{a[worst]!r}, Keras {e[worst]!r})")
    return failures


@pytest.mark.parametrize("case", list(cases.CASES))
def test_bnorm_matches_keras(case):
    _, expected, meta = fixture(case)
    failures = compare(case, bnorm_results(case), expected)
    assert not failures, (f"{case}: bnorm differs from {meta['versions']}:\n  "
                          + "\n  ".join(failures))


def test_frozen_batch_normalization_is_untouched():
    """Keras's rule: a BatchNormalization with trainable=False trains in inference mode,
    so gamma, beta and the moving statistics come out bit-identical to what was set."""
    data, _, _ = fixture("frozen_bn")
    final = bnorm_results("frozen_bn")
    for i in FROZEN_BN:
        np.testing.assert_array_equal(final[f"final_w{i}"], data["weights"][i],
                                      err_msg=f"frozen BN weight {i} changed")
    for i in set(range(len(data["weights"]))) - set(FROZEN_BN):  # the Dense layers trained
        assert not np.array_equal(final[f"final_w{i}"], data["weights"][i]), i


def test_a_wrong_initial_weight_fails():
    """The comparison has teeth: 1e-3 more on one bias of the seed model's last Dense
    (ten times the tolerance) must fail it."""
    data, expected, _ = fixture("seed_model")
    wrong = fresh(data)
    wrong["weights"][-1][3] += np.float32(1e-3)
    failures = compare("seed_model", cases.seed_model(bnorm, wrong), expected, quiet=True)
    assert any(f.startswith("final_w7:") for f in failures), failures


def test_trained_batch_normalization_does_not_pass_as_frozen():
    """The frozen_bn fixture tells the two modes apart: the same model and data with the
    BatchNormalization left trainable (batch statistics, updated weights) must fail it."""
    data, expected, _ = fixture("frozen_bn")
    failures = compare("frozen_bn", cases.seed_model(bnorm, fresh(data)), expected, quiet=True)
    names = {f.split(":")[0] for f in failures}
    assert {"train_on_batch_loss", "predict", "final_w2", "final_w4"} <= names, failures
