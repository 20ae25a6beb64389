"""Yes/no metrics (accuracy, F1 of each class, macro F1) and bootstrap 95% intervals over questions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

METRIC_NAMES = ("accuracy", "f1_yes", "f1_no", "macro_f1")


def _f1(y_true: np.ndarray, y_pred: np.ndarray, cls: int) -> float:
    tp = float(np.sum((y_pred == cls) & (y_true == cls)))
    fp = float(np.sum((y_pred == cls) & (y_true != cls)))
    fn = float(np.sum((y_pred != cls) & (y_true == cls)))
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


def binary_metrics(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> dict[str, float]:
    """Metrics for labels 0 = no, 1 = yes; an F1 with no support and no predictions counts 0."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"{len(t)} gold labels but {len(p)} predictions")
    if not len(t):
        return dict.fromkeys(METRIC_NAMES, 0.0)
    f1_yes, f1_no = _f1(t, p, 1), _f1(t, p, 0)
    return {
        "accuracy": float(np.mean(t == p)),
        "f1_yes": f1_yes,
        "f1_no": f1_no,
        "macro_f1": (f1_yes + f1_no) / 2,
    }


def bootstrap_intervals(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Percentile 95% interval of each metric, resampling questions with replacement."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if not len(t):
        return {m: (0.0, 0.0) for m in METRIC_NAMES}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {m: [] for m in METRIC_NAMES}
    for _ in range(n):
        idx = rng.integers(0, len(t), len(t))
        for name, value in binary_metrics(t[idx], p[idx]).items():
            samples[name].append(value)
    return {m: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for m, v in samples.items()}


def report(y_true: Sequence[int], y_pred: Sequence[int], n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Metrics with their intervals: ``{"macro_f1": 0.8, "macro_f1_ci": [0.75, 0.85], ..., "n": N}``."""
    out: dict[str, Any] = dict(binary_metrics(y_true, y_pred))
    for name, (lo, hi) in bootstrap_intervals(y_true, y_pred, n, seed).items():
        out[f"{name}_ci"] = [lo, hi]
    out["n"] = len(y_true)
    return out


def paired_bootstrap(
    y_true: Sequence[int], pred_a: Sequence[int], pred_b: Sequence[int], n: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Paired bootstrap over questions of macro F1(a) - macro F1(b): the share of resamples a wins,
    the observed difference and its 95% interval."""
    t, a, b = (np.asarray(x, dtype=np.int64) for x in (y_true, pred_a, pred_b))
    if not (len(t) == len(a) == len(b)) or not len(t):
        raise ValueError("paired bootstrap needs the same, non-empty questions for both systems")
    rng = np.random.default_rng(seed)
    diffs = np.empty(n)
    for i in range(n):
        idx = rng.integers(0, len(t), len(t))
        diffs[i] = binary_metrics(t[idx], a[idx])["macro_f1"] - binary_metrics(t[idx], b[idx])["macro_f1"]
    observed = binary_metrics(t, a)["macro_f1"] - binary_metrics(t, b)["macro_f1"]
    return {
        "difference": float(observed),
        "difference_ci": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))],
        "a_wins_share": float(np.mean(diffs > 0)),
        "resamples": n,
    }
