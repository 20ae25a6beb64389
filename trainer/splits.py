"""Splits: assign question ids to train/valid/test first, then build views and write Parquet.

Splitting happens on question ids before any augmentation (seeded and stratified by answer,
or by official batch ids), so every view of a question lands in the same split. Output:
``train/valid/test.parquet`` with provenance columns, ``report.json`` (class balance before
and after augmentation, retrieval coverage), ``missing_pmids.json`` and the resolved config.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from store.atomic import atomic_write, atomic_write_json
from store.config import write_resolved_config
from trainer.config import TrainerConfig
from trainer.errors import TrainerError
from trainer.questions import Question, QuestionFileError
from trainer.retrieval import Retrieval, retrieve
from trainer.views import View, views_of

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "valid", "test")
SPLIT_SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),
        ("view", pa.string()),
        ("question", pa.string()),
        ("context", pa.string()),
        ("label", pa.string()),
        ("label_id", pa.int8()),
        ("source_pmids", pa.list_(pa.int64())),
        ("source", pa.string()),
        ("ideal_answer", pa.string()),
    ]
)


@dataclass
class SplitReport:
    """What `build_splits` wrote: per-split question and view counts by class, retrieval coverage."""

    folder: Path
    questions: dict[str, dict[str, int]] = field(default_factory=dict)
    views: dict[str, dict[str, int]] = field(default_factory=dict)
    view_kinds: dict[str, dict[str, int]] = field(default_factory=dict)
    retrieval: dict[str, Any] = field(default_factory=dict)
    augmented_classes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "questions_by_class_before": self.questions,
            "views_by_class_after": self.views,
            "view_kinds": self.view_kinds,
            "augmented_classes": self.augmented_classes,
            "retrieval": self.retrieval,
            "seconds": round(self.seconds, 2),
        }

    def line(self) -> str:
        q = {s: sum(c.values()) for s, c in self.questions.items()}
        v = {s: sum(c.values()) for s, c in self.views.items()}
        r = self.retrieval
        return (
            f"splits -> {self.folder}: questions train/valid/test {q.get('train', 0)}/{q.get('valid', 0)}/"
            f"{q.get('test', 0)}, views {v.get('train', 0)}/{v.get('valid', 0)}/{v.get('test', 0)}, "
            f"{r.get('questions_with_retrieved_context', 0)} questions with retrieved context, "
            f"{self.seconds:.1f}s"
        )


def _stratified(ids_by_label: dict[str, list[str]], fraction: float, rng: Any) -> set[str]:
    chosen: set[str] = set()
    for label in sorted(ids_by_label):
        ids = sorted(ids_by_label[label])
        order = rng.permutation(len(ids))
        take = int(round(fraction * len(ids)))
        chosen.update(ids[i] for i in order[:take])
    return chosen


def assign_splits(
    questions: Sequence[Question],
    test_fraction: float,
    valid_fraction: float,
    seed: int,
    official_test_ids: set[str] | None = None,
) -> dict[str, str]:
    """Question id -> split name; seeded and stratified by answer (test = official ids when given)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    by_label: dict[str, list[str]] = {}
    for q in questions:
        by_label.setdefault(q.answer or "?", []).append(q.id)
    if official_test_ids is not None:
        test = {q.id for q in questions if q.id in official_test_ids}
    else:
        test = _stratified(by_label, test_fraction, rng)
    rest = {label: [i for i in ids if i not in test] for label, ids in by_label.items()}
    remaining = sum(len(v) for v in rest.values())
    share = valid_fraction * len(questions) / remaining if remaining else 0.0
    valid = _stratified(rest, min(share, 1.0), rng)
    return {q.id: ("test" if q.id in test else "valid" if q.id in valid else "train") for q in questions}


def question_folds(questions: Sequence[Question], k: int, seed: int) -> list[set[str]]:
    """``k`` disjoint sets of question ids covering ``questions``, stratified by answer and seeded:
    the folds of cross-validation by question id (each answer's ids are shuffled, then dealt
    round-robin, so fold sizes and class shares differ by at most one question)."""
    import numpy as np

    if k < 2 or k > len(questions):
        raise TrainerError(f"cross-validation needs 2 <= folds <= {len(questions)} questions, not {k}")
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[str]] = {}
    for q in questions:
        by_label.setdefault(q.answer or "?", []).append(q.id)
    folds: list[set[str]] = [set() for _ in range(k)]
    dealt = 0
    for label in sorted(by_label):
        ids = sorted(by_label[label])
        for i in rng.permutation(len(ids)):
            folds[dealt % k].add(ids[i])
            dealt += 1
    return folds


def read_official_ids(path: Path) -> set[str]:
    """Question ids from a ``{batch name: [ids]}`` JSON file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise QuestionFileError(f"{path}: cannot read official batch ids: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise QuestionFileError(f"{path}: expected {{batch name: [question ids]}}")
    return {str(i) for ids in data.values() for i in ids}


def rare_class(questions: Sequence[Question]) -> str:
    """The less frequent answer among ``questions`` ('no' on a tie or when empty)."""
    counts = Counter(q.answer for q in questions)
    return "yes" if counts["yes"] < counts["no"] else "no"


def make_views(
    questions: Sequence[Question],
    retrieval: Retrieval,
    cfg: TrainerConfig,
    *,
    train: bool,
    augmented: Sequence[str] = (),
) -> list[View]:
    """Views of ``questions``: eval views, or for training the prompt view plus augmentation for classes
    in ``augmented``."""
    out: list[View] = []
    for q in questions:
        chunks = retrieval.chunks.get(q.id, [])
        if train:
            kinds = ["prompt", *cfg.augment_views] if q.answer in augmented else ["prompt"]
        else:
            kinds = list(cfg.eval_views)
        out.extend(views_of(q, chunks, kinds, cfg.prompt_parts, cfg.max_snippets_per_question))
    return out


def views_table(views: Sequence[View]) -> pa.Table:
    """Arrow table of views in `SPLIT_SCHEMA`."""
    return pa.table(
        {
            "question_id": [v.question_id for v in views],
            "view": [v.view for v in views],
            "question": [v.question for v in views],
            "context": [v.context for v in views],
            "label": [v.label for v in views],
            "label_id": [v.label_id for v in views],
            "source_pmids": [list(v.source_pmids) for v in views],
            "source": [v.source for v in views],
            "ideal_answer": [v.ideal_answer for v in views],
        },
        schema=SPLIT_SCHEMA,
    )


def read_split(folder: str | Path, name: str) -> list[View]:
    """Views of split ``name`` in ``folder``."""
    path = Path(folder) / f"{name}.parquet"
    if not path.is_file():
        raise TrainerError(f"{path}: split not found; run `trainer splits` first")
    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise TrainerError(f"{path}: unreadable split: {exc}") from None
    return [
        View(
            r["question_id"],
            r["view"],
            r["question"],
            r["context"],
            r["label"],
            tuple(r["source_pmids"]),
            r["source"],
            r.get("ideal_answer") or "",  # splits written before this column read as ''
        )
        for r in rows
    ]


def _write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_write(path) as handle:
        pq.write_table(table, handle)


def build_splits(questions: Sequence[Question], cfg: TrainerConfig) -> SplitReport:
    """Assign ids, retrieve context, build views, and publish the splits in ``cfg.splits``."""
    started = time.perf_counter()
    if not questions:
        raise TrainerError("no yes/no questions to split")
    official = read_official_ids(cfg.official_batches) if cfg.official_batches else None
    assignment = assign_splits(questions, cfg.test_fraction, cfg.valid_fraction, cfg.seed, official)
    by_split = {name: [q for q in questions if assignment[q.id] == name] for name in SPLIT_NAMES}
    if not by_split["train"]:
        raise TrainerError("the train split is empty; lower test_fraction/valid_fraction or add questions")
    retrieval = retrieve(questions, cfg)
    rare = rare_class(by_split["train"])
    augmented = {"rare": [rare], "all": ["yes", "no"], "none": []}[cfg.augment]
    folder = Path(cfg.splits)
    report = SplitReport(folder=folder, augmented_classes=list(augmented), retrieval=retrieval.summary())
    for name in SPLIT_NAMES:
        qs = by_split[name]
        views = make_views(qs, retrieval, cfg, train=name == "train", augmented=augmented)
        _write_parquet(folder / f"{name}.parquet", views_table(views))
        report.questions[name] = dict(Counter(q.answer or "?" for q in qs))
        report.views[name] = dict(Counter(v.label or "?" for v in views))
        report.view_kinds[name] = dict(Counter(v.view for v in views))
    atomic_write_json(folder / "missing_pmids.json", retrieval.missing)
    report.seconds = time.perf_counter() - started
    atomic_write_json(folder / "report.json", report.as_dict())
    write_resolved_config(cfg, folder)
    log.info(report.line())
    return report
