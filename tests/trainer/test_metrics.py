"""Metrics by hand, bootstrap intervals, logit averaging per question and the baselines."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.baselines import all_yes, tfidf_classifier, vote
from trainer.evaluate import aggregate, score
from trainer.metrics import binary_metrics, bootstrap_intervals, report
from trainer.views import View


def test_hand_computed_metrics() -> None:
    # gold: 1 1 1 1 0 0 ; pred: 1 1 1 0 0 1
    # yes: tp 3, fp 1, fn 1 -> F1 6/8 = 0.75 ; no: tp 1, fp 1, fn 1 -> F1 2/4 = 0.5
    m = binary_metrics([1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 1])
    assert m == pytest.approx({"accuracy": 4 / 6, "f1_yes": 0.75, "f1_no": 0.5, "macro_f1": 0.625})


def test_all_yes_on_a_skewed_set_matches_the_known_baseline() -> None:
    gold = [1] * 3 + [0] * 1
    m = binary_metrics(gold, all_yes(4))
    assert m == pytest.approx({"accuracy": 0.75, "f1_yes": 6 / 7, "f1_no": 0.0, "macro_f1": 3 / 7})


def test_bootstrap_interval_brackets_the_point_estimate() -> None:
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, 200)
    pred = np.where(rng.random(200) < 0.8, gold, 1 - gold)
    point = binary_metrics(gold, pred)["macro_f1"]
    lo, hi = bootstrap_intervals(gold, pred, n=200, seed=3)["macro_f1"]
    assert lo < point < hi and hi - lo < 0.3
    assert bootstrap_intervals(gold, pred, n=200, seed=3) == bootstrap_intervals(gold, pred, n=200, seed=3)
    assert report(gold, pred, n=50)["n"] == 200


def _view(qid: str, label: str, kind: str = "prompt") -> View:
    return View(qid, kind, f"question {qid}?", "ctx", label, (), "bioasq")


def test_views_of_a_question_are_answered_by_mean_logits() -> None:
    views = [_view("a", "yes"), _view("a", "yes", "q+snippet"), _view("b", "no")]
    logits = np.array([[0.0, 3.0], [2.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    ids, mean = aggregate(views, logits)
    assert ids == ["a", "b"]
    np.testing.assert_allclose(mean, [[1.0, 1.5], [1.0, 0.0]])


def test_score_on_known_logits_without_training(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from trainer.config import TrainerConfig

    views = [_view("a", "yes"), _view("b", "yes"), _view("c", "no"), _view("d", "no")]
    logits = np.array([[0, 1], [1, 0], [1, 0], [0, 1]], dtype=np.float32)  # a right, b wrong, c right, d wrong
    result = score(views, logits, [], TrainerConfig(bootstrap=20), tmp_path)
    assert result.model["accuracy"] == 0.5 and result.model["macro_f1"] == 0.5
    assert result.baselines["all-yes"]["macro_f1"] == pytest.approx((2 / 3) / 2)
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "confusion_matrix.png").stat().st_size > 1000
    assert (tmp_path / "view_scores.png").is_file()


def test_tfidf_classifier_baseline_learns_which_words_go_with_which_answer() -> None:
    train = [
        "is it effective? trials showed it is effective and safe",
        "does it help? yes, it improved survival",
        "is it effective? it is effective in mice and men",
        "does it help? no benefit was found and trials were stopped",
        "is it safe? no, it was withdrawn for toxicity",
        "does it work? no benefit over placebo",
    ]
    labels = [1, 1, 1, 0, 0, 0]
    test = ["is it effective? effective in the trial", "does it work? no benefit, stopped early"]
    assert tfidf_classifier(train, labels, test) == [1, 0]
    assert tfidf_classifier(train[:3], labels[:3], test) == [1, 1]  # one class seen: that class
    with pytest.raises(ValueError, match="training"):
        tfidf_classifier([], [], test)


def test_score_gives_the_tfidf_baseline_the_question_with_its_evidence(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from trainer.config import TrainerConfig

    def view(qid: str, label: str, context: str) -> View:
        return View(qid, "prompt", "is the drug effective?", context, label, (), "bioasq")

    train = [view(f"t{i}", "yes", "it was effective") for i in range(3)]
    train += [view(f"u{i}", "no", "no benefit was seen") for i in range(3)]
    test = [view("a", "yes", "effective in trials"), view("b", "no", "no benefit in trials")]
    logits = np.array([[0, 1], [0, 1]], dtype=np.float32)
    result = score(test, logits, train, TrainerConfig(bootstrap=20, nn_k=1))
    # the questions are identical: only the evidence tells them apart
    assert result.baselines["TF-IDF classifier"]["macro_f1"] == 1.0


def test_nearest_neighbour_vote() -> None:
    train = np.eye(3, dtype=np.float32)[[0, 0, 1, 2]]
    labels = np.array([1, 1, 0, 0])
    test = np.array([[1, 0, 0], [0, 0.9, 0.1]], dtype=np.float32)
    assert vote(train, labels, test, k=1) == [1, 0]
    assert vote(train, labels, test, k=3) == [1, 0]


def test_paired_bootstrap_counts_wins_over_the_same_questions() -> None:
    from trainer.metrics import paired_bootstrap

    gold = [1, 0] * 50
    right = list(gold)
    wrong_some = [1 - g if i % 4 == 0 else g for i, g in enumerate(gold)]
    out = paired_bootstrap(gold, right, wrong_some, n=200, seed=1)
    assert out["a_wins_share"] == 1.0 and out["difference"] > 0
    assert paired_bootstrap(gold, right, right, n=50)["a_wins_share"] == 0.0
    back = paired_bootstrap(gold, wrong_some, right, n=200, seed=1)
    assert back["a_wins_share"] == 0.0 and back["difference"] == -out["difference"]
