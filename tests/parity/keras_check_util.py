"""Helpers shared by the Keras-file fixture generator and the local check scripts."""

from __future__ import annotations

import subprocess

import numpy as np

CMD_TIMEOUT = 300  # seconds per bnorm command


def rel_err(a, b) -> float:
    """max |a - b| / max(1, |b|), b the reference; inf for different shapes."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


def run(cmd, timeout: int = CMD_TIMEOUT) -> subprocess.CompletedProcess:
    """Runs a command, capturing its output; a timeout becomes return code 124."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(cmd, 124, e.stdout or "",
                                           f"timed out after {timeout}s")


def short(text: str, n: int = 160) -> str:
    """The text on one line, cut to n characters."""
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 3] + "..."
