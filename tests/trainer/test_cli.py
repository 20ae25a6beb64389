"""The trainer CLI: --help everywhere, exit codes 2 (bad usage/config/missing input) and 1 (pipeline error)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.trainer.conftest import synthetic_questions
from trainer.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["splits"], ["fit"], ["eval"], ["predict"], ["tune"]])
def test_help_everywhere(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_splits_command_writes_splits(tmp_path: Path, bioasq_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "splits"
    result = runner.invoke(app, ["splits", "--bioasq", str(bioasq_file), "--out", str(out), "--index", "none-here"])
    assert result.exit_code == 0, result.output
    assert "questions train/valid/test 14/2/4" in result.output
    assert all((out / f"{n}.parquet").is_file() for n in ("train", "valid", "test"))


def test_malformed_file_exits_1_naming_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = synthetic_questions(3, 1)
    data["questions"][2]["exact_answer"] = "perhaps"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    result = runner.invoke(app, ["splits", "--bioasq", str(bad), "--out", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "question #2 (id q002): field 'exact_answer'" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "s").exists()


def test_bad_config_value_exits_2(tmp_path: Path, bioasq_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["splits", "--bioasq", str(bioasq_file), "--test-fraction", "1.5"])
    assert result.exit_code == 2
    assert "error: --test-fraction: " in result.output
    assert runner.invoke(app, ["fit", "--no-such-flag"]).exit_code == 2
    assert runner.invoke(app, ["eval", "--run", str(tmp_path / "nothing")]).exit_code == 2, "missing --run folder"
    (tmp_path / "not-a-run").mkdir()
    assert runner.invoke(app, ["eval", "--run", str(tmp_path / "not-a-run")]).exit_code == 1, "a folder with no run"
