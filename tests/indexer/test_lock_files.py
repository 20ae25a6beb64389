"""The index folder's lock, deleting only what rebuild wrote, and what the manifest records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from indexer.build import RebuildSummary, rebuild
from indexer.embedding import Embedder
from indexer.lock import IndexLockedError, index_lock
from indexer.manifest import LOCK_NAME
from indexer.ranges import PAUSE_ENV
from indexer.search import open_index
from indexer.verify import verify_index
from tests.indexer.conftest import SHARD_SIZE, make_config, write_articles

REPO = Path(__file__).resolve().parents[2]


def _command(root: Path, config: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "indexer", "rebuild", "--store", str(root / "store")]
    command += ["--index", str(root / "index"), "--shard-size", str(SHARD_SIZE), "--device", "cpu"]
    return [*command, "--config", str(config), "--full", *extra]


def test_second_rebuild_refuses_or_waits_and_the_index_stays_valid(workspace: Path, tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("[indexer]\n")
    env = {**os.environ, PAUSE_ENV: "1.5", "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(_command(workspace, config), cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    waiter: subprocess.Popen[str] | None = None
    try:
        lock = workspace / "index" / LOCK_NAME
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            if lock.is_file() and str(first.pid) in lock.read_text():
                break
            time.sleep(0.1)
        assert first.poll() is None, "the first rebuild ended before the second started"
        refused = subprocess.run(
            _command(workspace, config), cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert refused.returncode == 1
        assert "another rebuild is running" in refused.stderr and f"pid {first.pid}" in refused.stderr
        assert "Traceback" not in refused.stderr
        waiter = subprocess.Popen(
            _command(workspace, config, "--wait"), cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
        )
        assert first.wait(timeout=300) == 0, first.stderr.read() if first.stderr else ""
        assert waiter.wait(timeout=300) == 0, waiter.stderr.read() if waiter.stderr else ""
    finally:
        for proc in (first, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            if proc is not None and proc.stderr:
                proc.stderr.close()
    report = verify_index(workspace / "index", workspace / "store")
    assert report.ok, report.problems
    assert open_index(workspace / "index", embedder=None).manifest.shards


def test_lock_is_released_and_names_its_holder(tmp_path: Path) -> None:
    with index_lock(tmp_path / "index"):
        assert json.loads((tmp_path / "index" / LOCK_NAME).read_text())["pid"] == os.getpid()
        code = "from pathlib import Path; from indexer.lock import index_lock\n"
        code += f"with index_lock(Path({str(tmp_path / 'index')!r})): pass"
        other = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert other.returncode == 1 and f"pid {os.getpid()}" in other.stderr
    with index_lock(tmp_path / "index"):  # released: can be taken again
        pass
    assert IndexLockedError.__mro__[1].__name__ == "IndexerError"


def test_users_files_beside_the_index_survive_a_rebuild(
    workspace: Path, run_rebuild: Callable[..., RebuildSummary]
) -> None:
    index = workspace / "index"
    mine = [index / "cache" / "notes.txt", index / "shards" / "my-analysis.parquet", index / "shards" / "README"]
    mine.append(index / "cache" / "0123456789ab" / "keep.npz")
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("precious")
    summary = run_rebuild(workspace, full=True)
    assert summary.full and summary.shards_written > 1
    assert all(p.read_text() == "precious" for p in mine)
    assert verify_index(index, workspace / "store").ok
    names = {p.name for p in (index / "shards").iterdir()}
    referenced = {Path(e.index_file).name for e in open_index(index, embedder=None).manifest.shards}
    assert {n for n in names if n.endswith(".faiss")} == referenced, "the replaced shards are gone"


def test_manifest_records_precision_device_versions_and_precisions_do_not_mix(
    tmp_path: Path, abstracts: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    write_articles(tmp_path / "store", abstracts[:20])
    cfg = make_config(tmp_path / "store", tmp_path / "index")
    first = rebuild(cfg, Embedder("default", "cpu", precision="fp32"))
    data = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert data["precision"] == "fp32" and data["device"] == "cpu"
    assert {"torch", "transformers", "tokenizers", "sentence-transformers"} <= set(data["versions"])
    assert any(name.startswith("faiss") for name in data["versions"])
    again = rebuild(cfg, Embedder("default", "cpu", precision="bf16"))
    assert again.full and any("precision changed from fp32 to bf16" in r for r in again.reasons)
    assert again.reused == 0 and again.embedded == first.vectors, "no fp32 vector is kept in a bf16 index"
    assert json.loads((tmp_path / "index" / "manifest.json").read_text())["precision"] == "bf16"
