"""``ensemble='lexical'``: the model's calibrated P(yes) averaged with the TF-IDF classifier's.

Everything is chosen on the train and valid splits only, once, at the end of `trainer fit`:
the lexical classifier learns from the training questions' evidence texts, a temperature
calibrates the model's per-question logits on valid (lowest log-loss on a grid), and the
weight ``w`` of the model (0 to 1 in steps of 0.05) is the one with the best valid macro F1,
ties going to the weight nearest 0.5. The choice is written to ``<run>/ensemble.json``;
eval and predict apply it as ``w * p_model + (1 - w) * p_lexical >= 0.5``. The test split is
never read here. Memory: the valid logits and one TF-IDF matrix of the training questions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from store.atomic import atomic_write_json
from trainer.baselines import tfidf_probabilities
from trainer.metrics import binary_metrics
from trainer.views import View

ENSEMBLE_FILE = "ensemble.json"
WEIGHTS = np.round(np.linspace(0.0, 1.0, 21), 2)
TEMPERATURES = np.round(np.logspace(-1, 1.3, 47), 4)


def p_yes(q_logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax P(yes) of (no, yes) scores divided by ``temperature``."""
    z = np.asarray(q_logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e[:, 1] / e.sum(axis=1))


def fit_temperature(q_logits: np.ndarray, gold: Sequence[int]) -> float:
    """The grid temperature with the lowest log-loss of ``gold`` (1 = yes)."""
    y = np.asarray(gold, dtype=np.float64)
    best, best_loss = 1.0, float("inf")
    for t in TEMPERATURES:
        p = np.clip(p_yes(q_logits, float(t)), 1e-7, 1 - 1e-7)
        loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        if loss < best_loss - 1e-12:
            best, best_loss = float(t), loss
    return best


def combine(q_logits: np.ndarray, lexical: np.ndarray, weight: float, temperature: float) -> np.ndarray:
    """Ensemble P(yes) per question."""
    return weight * p_yes(q_logits, temperature) + (1.0 - weight) * np.asarray(lexical, dtype=np.float64)


def choose_weight(q_logits: np.ndarray, lexical: np.ndarray, gold: Sequence[int], temperature: float) -> float:
    """The model weight with the best macro F1 on these (valid) questions; ties go nearest 0.5."""
    scored = []
    for w in WEIGHTS:
        pred = (combine(q_logits, lexical, float(w), temperature) >= 0.5).astype(int)
        scored.append((binary_metrics(gold, pred)["macro_f1"], -abs(float(w) - 0.5), float(w)))
    return max(scored)[2]


def lexical_for(train_views: Sequence[View], ids: Sequence[str], views: Sequence[View]) -> np.ndarray:
    """TF-IDF classifier P(yes) for questions ``ids`` of ``views``, trained on the training questions."""
    from trainer.evaluate import evidence_texts

    train_text = evidence_texts(train_views)
    label_of: dict[str, int] = {}
    for v in train_views:
        if v.label_id >= 0:
            label_of.setdefault(v.question_id, v.label_id)
    text = evidence_texts(views)
    return tfidf_probabilities([train_text[i] for i in label_of], list(label_of.values()), [text[i] for i in ids])


def choose(
    valid_views: Sequence[View], valid_logits: np.ndarray, train_views: Sequence[View], run: Path | None = None
) -> dict[str, Any]:
    """Temperature and weight from the valid split (views and their model scores); saved in ``run``."""
    from trainer.evaluate import aggregate, question_gold

    ids, q_logits = aggregate(valid_views, valid_logits)
    gold = question_gold(valid_views, ids)
    lexical = lexical_for(train_views, ids, valid_views)
    temperature = fit_temperature(q_logits, gold)
    weight = choose_weight(q_logits, lexical, gold, temperature)
    pred = (combine(q_logits, lexical, weight, temperature) >= 0.5).astype(int)
    choice = {
        "kind": "lexical",
        "weight_model": weight,
        "temperature": temperature,
        "valid_questions": len(ids),
        "valid_macro_f1": binary_metrics(gold, pred)["macro_f1"],
        "valid_macro_f1_model_alone": binary_metrics(gold, np.argmax(q_logits, axis=1))["macro_f1"],
    }
    if run is not None:
        atomic_write_json(Path(run) / ENSEMBLE_FILE, choice)
    return choice


def load_choice(run: str | Path) -> dict[str, Any] | None:
    """The ensemble chosen for a run, or None when it has none."""
    path = Path(run) / ENSEMBLE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
