"""`trainer export`: chat JSONL and a Hugging Face datasets folder that load with `datasets` and carry the roles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.trainer.conftest import synthetic_questions, tiny_config
from trainer.cli import app
from trainer.config import TrainerConfig
from trainer.questions import parse_bioasq
from trainer.splits import build_splits, read_split


@pytest.fixture
def splits(tmp_path: Path) -> TrainerConfig:
    cfg = tiny_config(tmp_path)
    data = synthetic_questions()
    for q in data["questions"]:
        q["ideal_answer"] = [f"Ideal answer of {q['id']}."]
    build_splits(parse_bioasq(data), cfg)
    return cfg


def _check_chat(row: dict, view_label: str) -> None:
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert row["messages"][2]["content"].split("\n")[0] == view_label == row["label"]
    user = row["messages"][1]["content"]
    assert user.startswith("Context:\n") and "Question: " in user


def test_jsonl_chat_loads_with_datasets(splits: TrainerConfig, tmp_path: Path) -> None:
    from datasets import load_dataset

    out = tmp_path / "chat"
    result = CliRunner().invoke(app, ["export", "--splits", str(splits.splits), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("train", "valid", "test"):
        views = read_split(splits.splits, name)
        lines = (out / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) == len(views)
        ds = load_dataset("json", data_files=str(out / f"{name}.jsonl"), split="train")
        assert len(ds) == len(views)
        for row, view in zip(ds, views, strict=True):
            _check_chat(row, view.label or "")
            assert row["question_id"] == view.question_id
            assert view.question in row["messages"][1]["content"]
        assert "Ideal answer" not in json.dumps(lines)  # no rationale unless asked


def test_hf_dataset_folder_with_card_and_rationale(splits: TrainerConfig, tmp_path: Path) -> None:
    from datasets import load_from_disk

    out = tmp_path / "hf"
    args = ["export", "--splits", str(splits.splits), "--out", str(out), "--format", "hf-dataset"]
    result = CliRunner().invoke(app, [*args, "--rationale", "ideal_answer"])
    assert result.exit_code == 0, result.output
    ds = load_from_disk(str(out))
    assert set(ds) == {"train", "valid", "test"}
    assert len(ds["test"]) == len(read_split(splits.splits, "test"))
    for row in ds["train"]:
        _check_chat(row, row["label"])
        assert row["messages"][2]["content"] == f"{row['label']}\nIdeal answer of {row['question_id']}."
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "| train |" in card
    again = CliRunner().invoke(app, args)  # re-export replaces the folder whole
    assert again.exit_code == 0 and "\n" not in load_from_disk(str(out))["train"][0]["messages"][2]["content"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_bad_format_is_a_usage_error(splits: TrainerConfig, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["export", "--splits", str(splits.splits), "--out", str(tmp_path), "--format", "x"]
    )
    assert result.exit_code == 2
