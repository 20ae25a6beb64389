"""PNG plots of a run (matplotlib, Agg): confusion matrix, learning curves, per-view score histogram.

Figures are rendered to memory and published with `store.atomic.atomic_write_bytes`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from store.atomic import atomic_write_bytes
from trainer import LABELS


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _figure().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], path: Path, title: str = "") -> Path:
    """Counts of (gold, predicted) per class as a labelled heat map."""
    import numpy as np

    n = len(LABELS)
    counts = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        counts[int(t), int(p)] += 1
    plt = _figure()
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(counts, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color="black")
    ax.set_xticks(range(n), LABELS)
    ax.set_yticks(range(n), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title or "confusion matrix (questions)")
    return _save(fig, path)


def learning_curves(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Training loss, valid loss and valid macro F1 against the optimiser step."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    valid = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    f1 = [(h["step"], h["eval_macro_f1"]) for h in history if "eval_macro_f1" in h]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if valid:
        ax.plot(*zip(*valid, strict=True), marker="o", label="valid loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if f1:
        ax2 = ax.twinx()
        ax2.plot(*zip(*f1, strict=True), marker="s", color="tab:green", label="valid macro F1")
        ax2.set_ylabel("macro F1")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.set_title("learning curves")
    return _save(fig, path)


def score_histogram(scores: Sequence[float], labels: Sequence[int], path: Path) -> Path:
    """Histogram of each view's P(yes), one colour per gold class."""
    import numpy as np

    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=int)
    bins = np.linspace(0, 1, 21)
    for cls, name in enumerate(LABELS):
        ax.hist(s[y == cls], bins=bins, alpha=0.6, label=f"gold {name}")
    ax.set_xlabel("P(yes) per view")
    ax.set_ylabel("views")
    ax.legend()
    ax.set_title("per-view scores")
    return _save(fig, path)
