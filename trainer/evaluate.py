"""`trainer eval` and `trainer predict`: answer questions with a trained run and score the answers.

Each question's views are scored and their logits averaged into one answer. Metrics are
reported per question with bootstrap 95% intervals, beside the all-yes, nearest-neighbour
and TF-IDF classifier (logistic regression on word 1-2 grams of question and evidence)
baselines on the same questions; metrics JSON and PNG plots are written to the run folder.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from store.atomic import atomic_write_json
from trainer import LABELS
from trainer.baselines import all_yes, nearest_neighbour, tfidf_classifier
from trainer.config import TrainerConfig
from trainer.errors import TrainerError
from trainer.metrics import report
from trainer.questions import Question
from trainer.retrieval import retrieve
from trainer.splits import make_views, read_split
from trainer.views import View

log = logging.getLogger(__name__)


def view_logits(model: Any, tokenizer: Any, views: Sequence[View], max_length: int, batch_size: int = 64) -> np.ndarray:
    """Logits (n_views x 2) in input order; batches sorted by length and padded dynamically."""
    import torch

    out = np.zeros((len(views), len(LABELS)), dtype=np.float32)
    if not views:
        return out
    enc = tokenizer(
        [v.question for v in views],
        [v.context or "" for v in views],
        truncation="longest_first",
        max_length=max_length,
    )
    order = np.argsort([-len(x) for x in enc["input_ids"]], kind="stable")
    device = next(model.parameters()).device
    from tqdm import tqdm

    bar = tqdm(total=len(views), desc="scoring views", unit="view", disable=not sys.stderr.isatty())
    model.eval()
    with torch.inference_mode():
        for first in range(0, len(order), batch_size):
            rows = order[first : first + batch_size]
            batch = tokenizer.pad([{k: enc[k][i] for k in enc} for i in rows], return_tensors="pt")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
            out[rows] = logits
            bar.update(len(rows))
    bar.close()
    return out


def score_views(model: Any, tokenizer: Any, views: Sequence[View], cfg: TrainerConfig) -> np.ndarray:
    """(n_views x 2) scores of (no, yes) from the run's head: classifier logits or verbalizer log-probs."""
    if cfg.head == "verbalizer":
        from trainer.verbalizer import verbalizer_scores

        return verbalizer_scores(model, tokenizer, views, cfg)
    return view_logits(model, tokenizer, views, cfg.max_length, cfg.eval_batch_size)


def aggregate(views: Sequence[View], logits: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(question ids in first-seen order, mean logits per question)."""
    ids: list[str] = []
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for v, row in zip(views, logits, strict=True):
        if v.question_id not in sums:
            ids.append(v.question_id)
            sums[v.question_id] = np.zeros_like(row)
            counts[v.question_id] = 0
        sums[v.question_id] = sums[v.question_id] + row
        counts[v.question_id] += 1
    return ids, np.stack([sums[i] / counts[i] for i in ids]) if ids else np.zeros((0, len(LABELS)))


def softmax_yes(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, 1] / e.sum(axis=1)


@dataclass
class EvalResult:
    """Per-question metrics of the model and the baselines."""

    model: dict[str, Any]
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    questions: int = 0
    views: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "baselines": self.baselines, "questions": self.questions, "views": self.views}


def views_for_questions(questions: Sequence[Question], cfg: TrainerConfig) -> list[View]:
    """Evaluation views of raw questions, built the way the run's splits were (retrieval included)."""
    return make_views(questions, retrieve(questions, cfg), cfg, train=False)


def score(
    views: Sequence[View],
    logits: np.ndarray,
    train_views: Sequence[View],
    cfg: TrainerConfig,
    run: Path | None = None,
    nn_embedder: object | None = None,
    ensemble: dict[str, Any] | None = None,
) -> EvalResult:
    """Question-level metrics of the model and of the all-yes, nearest-neighbour and TF-IDF classifier baselines.

    With an ``ensemble`` choice (`trainer.ensemble`) the model's answers are the ensemble's and
    the model's own answers are reported as "model alone".
    """
    ids, q_logits = aggregate(views, logits)
    gold = question_gold(views, ids)
    if any(g < 0 for g in gold):
        raise TrainerError("evaluation questions need yes/no answers (exact_answer)")
    pred = [int(x) for x in np.argmax(q_logits, axis=1)]
    alone = report(gold, pred, cfg.bootstrap, cfg.seed)
    if ensemble is not None:
        q_logits = ensemble_logits(ensemble, train_views, ids, views, q_logits)
        pred = [int(x) for x in np.argmax(q_logits, axis=1)]
    result = EvalResult(model=report(gold, pred, cfg.bootstrap, cfg.seed), questions=len(ids), views=len(views))
    if ensemble is not None:
        result.baselines["model alone"] = alone
    result.baselines["all-yes"] = report(gold, all_yes(len(gold)), cfg.bootstrap, cfg.seed)
    train_q: dict[str, tuple[str, int]] = {}
    for v in train_views:
        if v.label_id >= 0:
            train_q.setdefault(v.question_id, (v.question, v.label_id))
    if train_q:
        body_of = {v.question_id: v.question for v in views}
        labels = [y for _, y in train_q.values()]
        nn = nearest_neighbour(
            [t for t, _ in train_q.values()], labels, [body_of[i] for i in ids], k=cfg.nn_k, embedder=nn_embedder
        )
        result.baselines[f"nearest-neighbour (k={cfg.nn_k})"] = report(gold, nn, cfg.bootstrap, cfg.seed)
        train_text, test_text = evidence_texts(train_views), evidence_texts(views)
        words = tfidf_classifier([train_text[i] for i in train_q], labels, [test_text[i] for i in ids])
        result.baselines["TF-IDF classifier"] = report(gold, words, cfg.bootstrap, cfg.seed)
    if run is not None:
        from trainer.plots import confusion_matrix, score_histogram
        from trainer.report import write_report

        atomic_write_json(run / "metrics.json", result.as_dict())
        atomic_write_json(run / "predictions.json", question_predictions(views, ids, q_logits))
        confusion_matrix(gold, pred, run / "confusion_matrix.png")
        score_histogram(softmax_yes(logits).tolist(), [v.label_id for v in views], run / "view_scores.png")
        write_report(run)
    return result


def ensemble_logits(
    choice: dict[str, Any], train_views: Sequence[View], ids: Sequence[str], views: Sequence[View], q_logits: np.ndarray
) -> np.ndarray:
    """Per-question (log P(no), log P(yes)) of the ensemble ``choice`` (so argmax and softmax still apply)."""
    from trainer.ensemble import combine, lexical_for

    if not train_views:
        raise TrainerError("the lexical ensemble needs the run's train split (its TF-IDF classifier learns from it)")
    p = combine(q_logits, lexical_for(train_views, ids, views), choice["weight_model"], choice["temperature"])
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.stack([np.log(1 - p), np.log(p)], axis=1).astype(np.float32)


def question_gold(views: Sequence[View], ids: Sequence[str]) -> list[int]:
    """Gold label id of each question in ``ids`` (1 yes, 0 no, -1 unlabelled), read off its views."""
    gold_of = {v.question_id: v.label_id for v in views}
    return [gold_of[i] for i in ids]


def evidence_texts(views: Sequence[View]) -> dict[str, str]:
    """Question id -> its question and evidence as one text: the prompt view, else all its views' contexts."""
    prompt = {v.question_id: f"{v.question}\n{v.context}" for v in views if v.view == "prompt"}
    rest: dict[str, list[str]] = {}
    for v in views:
        if v.question_id not in prompt:
            rest.setdefault(v.question_id, [v.question]).append(v.context)
    return {**{i: "\n".join(parts) for i, parts in rest.items()}, **prompt}


def question_predictions(views: Sequence[View], ids: Sequence[str], q_logits: np.ndarray) -> list[dict[str, Any]]:
    """Per question: gold and predicted answer, P(yes), and the views (context, provenance) it was given."""
    p_yes = softmax_yes(q_logits) if len(ids) else np.zeros(0)
    views_of: dict[str, list[View]] = {}
    for v in views:
        views_of.setdefault(v.question_id, []).append(v)
    return [
        {
            "id": qid,
            "body": views_of[qid][0].question,
            "gold": views_of[qid][0].label,
            "predicted": LABELS[int(np.argmax(q_logits[row]))],
            "p_yes": round(float(p_yes[row]), 6),
            "views": [
                {"view": v.view, "source": v.source, "source_pmids": list(v.source_pmids), "context": v.context}
                for v in views_of[qid]
            ],
        }
        for row, qid in enumerate(ids)
    ]


def evaluate_run(run: str | Path, questions: Sequence[Question] | None = None) -> EvalResult:
    """Score a run on ``questions`` (their eval views) or, when None, on its test split."""
    from trainer.model import load_trained

    model, tokenizer, cfg = load_trained(run)
    views = views_for_questions(questions, cfg) if questions is not None else read_split(cfg.splits, "test")
    if not views:
        raise TrainerError(f"{run}: nothing to evaluate (no test views)")
    logits = score_views(model, tokenizer, views, cfg)
    train_views = read_split(cfg.splits, "train") if (Path(cfg.splits) / "train.parquet").is_file() else []
    return score(views, logits, train_views, cfg, Path(run), ensemble=run_ensemble(run, cfg))


def run_ensemble(run: str | Path, cfg: TrainerConfig) -> dict[str, Any] | None:
    """The run's ensemble choice when its config asks for one (an error when the fit did not make it)."""
    if cfg.ensemble == "none":
        return None
    from trainer.ensemble import ENSEMBLE_FILE, load_choice

    choice = load_choice(run)
    if choice is None:
        raise TrainerError(
            f"{run}: ensemble {cfg.ensemble!r} configured but no {ENSEMBLE_FILE} (fit had no valid split)"
        )
    return choice


def predict(run: str | Path, questions: Sequence[Question]) -> dict[str, Any]:
    """BioASQ submission object ``{"questions": [{"id", "exact_answer", "p_yes", "views"}]}``."""
    from trainer.model import load_trained

    model, tokenizer, cfg = load_trained(run)
    views = views_for_questions(questions, cfg)
    logits = score_views(model, tokenizer, views, cfg)
    ids, q_logits = aggregate(views, logits)
    choice = run_ensemble(run, cfg)
    if choice is not None and ids:
        q_logits = ensemble_logits(choice, read_split(cfg.splits, "train"), ids, views, q_logits)
    p_yes = softmax_yes(q_logits) if len(ids) else np.zeros(0)
    n_views = {i: sum(1 for v in views if v.question_id == i) for i in ids}
    by_id = dict(zip(ids, range(len(ids)), strict=True))
    answers = []
    for q in questions:
        row = by_id[q.id]
        answers.append(
            {
                "id": q.id,
                "body": q.body,
                "type": "yesno",
                "exact_answer": LABELS[int(np.argmax(q_logits[row]))],
                "p_yes": round(float(p_yes[row]), 6),
                "views": n_views[q.id],
            }
        )
    return {"questions": answers}
