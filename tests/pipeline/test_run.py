"""`pipeline run` end to end on a slice of the demo sample: SIGKILL during a step, then resume;
a changed input re-runs from its step; a failed step exits 1 naming it; bad usage exits 2."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.local_eutils import LocalEutils
from store.reader import read_articles
from tests.pipeline.conftest import pipeline_argv, pipeline_env, run_pipeline

FINISHED_FIRST = ("crawl", "index", "splits")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" in status.read_text()
    except OSError:
        return True


def _snapshot(work: Path) -> dict[str, bytes | float]:
    """Marker bytes of the steps finished before the kill and the modification times of their outputs."""
    shot: dict[str, bytes | float] = {
        f"{n}.done.json": (work / "steps" / f"{n}.done.json").read_bytes() for n in FINISHED_FIRST
    }
    outputs = [*(work / "store").rglob("*.parquet"), work / "index" / "manifest.json", *(work / "splits").glob("*")]
    shot.update({str(p.relative_to(work)): p.stat().st_mtime_ns for p in outputs})
    return shot


@dataclass
class Resumed:
    work: Path
    before: dict[str, bytes | float]
    after: dict[str, bytes | float]
    killed_output: str
    result: subprocess.CompletedProcess[str]
    orphans: list[int]


@pytest.fixture(scope="module")
def resumed(
    tmp_path_factory: pytest.TempPathFactory, questions: Path, eutils: LocalEutils, tiny_model: Path, fast_toml: Path
) -> Resumed:
    """A run SIGKILLed while its fit step runs, then the same command again."""
    tmp = tmp_path_factory.mktemp("pipeline")
    work = tmp / "work"
    argv = pipeline_argv(work, questions, eutils.url, tiny_model, fast_toml)
    log = tmp / "killed.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=tmp, env=pipeline_env(), stdout=out, stderr=subprocess.STDOUT)
        started = work / "steps" / "fit.started.json"
        deadline = time.monotonic() + 400
        while not started.exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "fit never started"
            time.sleep(0.1)
        time.sleep(1.0)
        stage = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while not all(_gone(p) for p in stage) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [p for p in stage if not _gone(p)]
    before = _snapshot(work)
    assert not (work / "steps" / "fit.done.json").exists()
    result = run_pipeline(argv, tmp)
    return Resumed(work, before, _snapshot(work), log.read_text(), result, orphans)


def test_a_killed_run_resumes_at_the_first_unfinished_step(resumed: Resumed, questions: Path) -> None:
    result, work = resumed.result, resumed.work
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[4/5] fit: running" in resumed.killed_output  # the kill came during fit
    assert resumed.orphans == []  # the step's process died with the pipeline
    lines = result.stdout.splitlines()
    for i, name in enumerate(FINISHED_FIRST, start=1):
        assert any(line.startswith(f"[{i}/5] {name}: finished ") and line.endswith("skipped") for line in lines)
        assert not any(line.startswith(f"[{i}/5] {name}: running") for line in lines)
    assert any(line.startswith("[4/5] fit: resuming: trainer fit ") and "--resume" in line for line in lines)
    assert any(line.startswith("[5/5] eval: done in ") for line in lines)
    assert lines[-1].startswith(f"pipeline -> {work}: 5 steps, 2 run, 3 already finished, ")
    assert lines[-1].endswith(f"report {work / 'runs' / 'run' / 'report.html'}")
    assert resumed.after == resumed.before  # markers and outputs of the finished steps untouched

    pmids = sorted(int(p) for p in json.loads(questions.read_text()))
    assert sorted(read_articles(work / "store", columns=["pmid"]).column("pmid").to_pylist()) == pmids
    assert (work / "pmids.txt").read_text().split() == [str(p) for p in json.loads(questions.read_text())]
    run = work / "runs" / "run"
    for name in ("adapter/adapter_config.json", "fit.json", "metrics.json", "report.html"):
        assert (run / name).is_file(), name
    assert json.loads((run / "fit.json").read_text())["steps"] == 4
    markers = {n: json.loads((work / "steps" / f"{n}.done.json").read_text()) for n in ("fit", "eval")}
    assert markers["fit"]["inputs"]["max_steps"] == 4 and markers["fit"]["argv"][-1] == "--resume"


def test_a_finished_run_skips_everything(
    resumed: Resumed, tmp_path: Path, questions: Path, tiny_model: Path, fast_toml: Path
) -> None:
    work = tmp_path / "work"
    shutil.copytree(resumed.work, work)
    # the crawl's E-utilities URL is not an input: a server on another port changes nothing
    result = run_pipeline(
        pipeline_argv(work, questions, "http://127.0.0.1:9/entrez/eutils", tiny_model, fast_toml), tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(", skipped") == 5
    assert "5 steps, 0 run, 5 already finished" in result.stdout.splitlines()[-1]


def test_a_failed_step_exits_1_naming_it_and_later_steps_are_invalidated(
    resumed: Resumed, tmp_path: Path, questions: Path, eutils: LocalEutils, tiny_model: Path, fast_toml: Path
) -> None:
    work = tmp_path / "work"
    shutil.copytree(resumed.work, work)
    splits_marker = (work / "steps" / "splits.done.json").read_bytes()
    missing_model = tmp_path / "no-such-model"
    argv = pipeline_argv(work, questions, eutils.url, missing_model, fast_toml, index_model=tiny_model)
    result = run_pipeline(argv, tmp_path)
    assert result.returncode == 1
    assert "step 'fit' failed with exit code 1" in result.stderr
    assert "[3/5] splits: finished" in result.stdout and "[4/5] fit: running" in result.stdout
    assert "[5/5] eval" not in result.stdout
    assert (work / "steps" / "splits.done.json").read_bytes() == splits_marker
    assert not (work / "steps" / "fit.done.json").exists() and not (work / "steps" / "eval.done.json").exists()
    assert "Traceback" not in result.stderr.split("step 'fit' failed")[-1]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ([], "give exactly one of --bioasq FILE or --pubmedqa FILE"),
        (["--pubmedqa", "QUESTIONS", "--bioasq", "QUESTIONS"], "give exactly one of"),
        (["--pubmedqa", "no-such-file.json"], "does not exist"),
        (["--pubmedqa", "QUESTIONS", "--seed", "-1"], "--seed"),
        (["--pubmedqa", "QUESTIONS", "--eutils-url", "ftp://x"], "eutils_url"),
        (["--pubmedqa", "QUESTIONS", "--config", "BADTOML"], "unknown table [nope]"),
        (["--pubmedqa", "QUESTIONS", "--no-such-flag"], "No such option"),
    ],
)
def test_bad_usage_exits_2(tmp_path: Path, questions: Path, extra: list[str], needle: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[nope]\nx = 1\n")
    args = [str(questions) if a == "QUESTIONS" else str(bad) if a == "BADTOML" else a for a in extra]
    argv = [sys.executable, "-m", "pipeline", "run", "--work", str(tmp_path / "work"), *args]
    result = run_pipeline(argv, tmp_path, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert needle in result.stderr
    assert not (tmp_path / "work" / "steps").exists()


def test_a_broken_question_file_exits_1_naming_it(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"123": {"QUESTION": "Why?"}}')
    argv = [sys.executable, "-m", "pipeline", "run", "--pubmedqa", str(broken), "--work", str(tmp_path / "w")]
    result = run_pipeline(argv, tmp_path, timeout=120)
    assert result.returncode == 1
    assert f"{broken}: question #0 (id 123)" in result.stderr


@pytest.mark.parametrize("command", [[], ["run"]])
def test_help_explains_and_shows_defaults(command: list[str]) -> None:
    result = run_pipeline([sys.executable, "-m", "pipeline", *command, "--help"], Path.cwd(), timeout=120)
    assert result.returncode == 0
    assert "Usage: pipeline" in result.stdout
    if command:
        assert "[default: data/pipeline]" in result.stdout and "[default: 13" in result.stdout
        assert "completion" in result.stdout and "marker" in result.stdout
