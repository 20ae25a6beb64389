"""The `indexer` command line: help everywhere, one-line errors with exit 1, search and verify output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from indexer.cli import app
from tests.indexer.conftest import SHARD_SIZE, write_articles

runner = CliRunner()


@pytest.fixture()
def empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "empty.toml"
    path.write_text("[indexer]\n")
    return path


@pytest.mark.parametrize("command", [[], ["rebuild"], ["search"], ["verify"]])
def test_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
    expected = {"rebuild": "--shard-size", "search": "--pmids", "verify": "--index"}.get(command[0] if command else "")
    assert expected is None or expected in result.output


def test_bad_usage_exits_2(empty_config: Path) -> None:
    result = runner.invoke(app, ["rebuild", "--device", "tpu", "--config", str(empty_config)])
    assert result.exit_code == 2


def test_empty_store_is_an_error(tmp_path: Path, empty_config: Path) -> None:
    write_articles(tmp_path / "store", [{"pmid": 5, "title": None, "abstract": None}])
    args = ["rebuild", "--store", str(tmp_path / "store"), "--index", str(tmp_path / "index")]
    result = runner.invoke(app, [*args, "--config", str(empty_config)])
    assert result.exit_code == 1
    assert "no article with a title or abstract" in result.output
    assert str(tmp_path / "store") in result.output
    assert not (tmp_path / "index" / "manifest.json").exists()


def test_missing_store_is_an_error(tmp_path: Path, empty_config: Path) -> None:
    args = ["rebuild", "--store", str(tmp_path / "nope"), "--index", str(tmp_path / "index")]
    result = runner.invoke(app, [*args, "--config", str(empty_config)])
    assert result.exit_code == 1 and "nope" in result.output and "Traceback" not in result.output


def test_folder_not_ours_is_refused(tmp_path: Path, base_build: Path, empty_config: Path) -> None:
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "thesis.docx").write_text("precious")
    args = ["rebuild", "--store", str(base_build / "store"), "--index", str(tmp_path / "index")]
    result = runner.invoke(app, [*args, "--config", str(empty_config)])
    assert result.exit_code == 1 and "not an index folder" in result.output and "thesis.docx" in result.output
    assert (tmp_path / "index" / "thesis.docx").read_text() == "precious"


def test_search_json_and_pmids(base_build: Path, abstracts: list[dict[str, Any]], empty_config: Path) -> None:
    wanted = abstracts[2]["pmid"]
    args = ["search", abstracts[2]["title"], "-k", "3", "--json", "--index", str(base_build / "index")]
    result = runner.invoke(app, [*args, "--pmids", f"{wanted}", "--config", str(empty_config)])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert hits and {h["pmid"] for h in hits} == {wanted}
    assert set(hits[0]) == {"pmid", "chunk", "score", "text"}


def test_verify_ok(base_build: Path, empty_config: Path) -> None:
    args = ["verify", "--store", str(base_build / "store"), "--index", str(base_build / "index")]
    result = runner.invoke(app, [*args, "--config", str(empty_config)])
    assert result.exit_code == 0, result.output
    assert "verify ok" in result.stdout and "0 missing" in result.stdout and "recall@10 1.000" in result.stdout


def test_corrupt_shard_is_named(tmp_path: Path, base_build: Path, empty_config: Path) -> None:
    shutil.copytree(base_build / "index", tmp_path / "index")
    victim = sorted((tmp_path / "index" / "shards").glob("*.faiss"))[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    opts = ["--index", str(tmp_path / "index"), "--config", str(empty_config)]
    result = runner.invoke(app, ["verify", "--no-store", *opts])
    assert result.exit_code == 1, "verify hashes every shard"
    assert victim.name in result.output and "corrupt shard" in result.output
    assert "Traceback" not in result.output
    victim.write_bytes(bytes(data[:-100]))
    result = runner.invoke(app, ["search", "anything", *opts])
    assert result.exit_code == 1, "opening checks sizes (not checksums)"
    assert victim.name in result.output and "corrupt shard" in result.output
    assert "Traceback" not in result.output


def test_model_dimension_mismatch(tmp_path: Path, base_build: Path, empty_config: Path) -> None:
    shutil.copytree(base_build / "index", tmp_path / "index")
    manifest = tmp_path / "index" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["dim"] = 768
    manifest.write_text(json.dumps(data))
    result = runner.invoke(app, ["search", "x", "--index", str(tmp_path / "index"), "--config", str(empty_config)])
    assert result.exit_code == 1 and "dimension 384" in result.output and "dimension 768" in result.output
    args = ["rebuild", "--store", str(base_build / "store"), "--index", str(tmp_path / "index")]
    result = runner.invoke(app, [*args, "--shard-size", str(SHARD_SIZE), "--config", str(empty_config)])
    assert result.exit_code == 1 and "dimension 384" in result.output and "manifest says 768" in result.output
