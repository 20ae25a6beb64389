"""In-training evaluation scores questions, not views: early stopping follows the reported score."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from trainer.config import TrainerConfig
from trainer.fit import classifier_scores, question_metrics
from trainer.verbalizer import IGNORE, make_view_scores
from trainer.views import View


def _view(qid: str, label: str, kind: str = "q+snippet") -> View:
    return View(qid, kind, f"question {qid}?", f"context of {qid}", label, (), "bioasq")


def test_views_of_a_question_are_pooled_before_scoring() -> None:
    views = [_view("a", "yes"), _view("a", "yes"), _view("a", "yes"), _view("b", "no"), _view("b", "no")]
    # (no, yes) logits: each question has one wrong view, but the mean of its views is right
    logits = np.array([[0.0, 2.0], [0.0, 3.0], [1.0, 0.0], [2.0, 0.0], [0.0, 0.5]])
    labels = np.array([1, 1, 1, 0, 0])
    metrics = question_metrics(views, classifier_scores)((logits, labels))
    assert metrics["macro_f1"] == 1.0 and metrics["accuracy"] == 1.0  # both questions right once pooled
    # per view: 3 of 5 right is not what the best checkpoint is chosen by, but it is still reported
    assert metrics["view_macro_f1"] == pytest.approx(0.5833, abs=1e-4)


def test_pooling_can_turn_a_question_wrong() -> None:
    views = [_view("a", "no"), _view("a", "no"), _view("a", "no")]
    logits = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 5.0]])  # two views say no, the mean says yes
    metrics = question_metrics(views, classifier_scores)((logits, np.zeros(3, dtype=int)))
    assert metrics["accuracy"] == 0.0 and metrics["view_macro_f1"] > 0


def test_verbalizer_gold_is_the_first_answer_token() -> None:
    yes_id, no_id = 7, 9
    labels = np.array([[IGNORE, IGNORE, yes_id, 3], [IGNORE, no_id, 4, IGNORE]])
    scores = np.array([[0.0, 1.0], [1.0, 0.0]])
    got_scores, gold = make_view_scores(yes_id)((scores, labels))
    assert gold.tolist() == [1, 0] and np.array_equal(got_scores, scores)


def test_fit_history_carries_question_and_view_scores(tiny_run: tuple[TrainerConfig, Any]) -> None:
    _, result = tiny_run
    evals = [h for h in result.history if "eval_macro_f1" in h]
    assert evals and all("eval_view_macro_f1" in h for h in evals)
    assert result.best_valid["macro_f1"] == max(h["eval_macro_f1"] for h in evals)
