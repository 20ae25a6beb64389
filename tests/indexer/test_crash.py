"""A rebuild killed with SIGKILL leaves the published index usable; the rerun ends where a clean run ends."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from indexer.build import PAUSE_ENV, RebuildSummary
from indexer.embedding import Embedder
from indexer.search import open_index
from tests.indexer.conftest import SHARD_SIZE, delete_articles, write_articles

REPO = Path(__file__).resolve().parents[2]


def _ids(root: Path) -> list[tuple[int, str]]:
    manifest = open_index(root / "index", check=True, embedder=None).manifest
    rows: list[tuple[int, str]] = []
    for entry in manifest.shards:
        table = pq.read_table(root / "index" / entry.ids_file, columns=["id", "key"])
        rows.extend(zip(table.column("id").to_pylist(), table.column("key").to_pylist(), strict=True))
    return sorted(rows)


def test_sigkill_mid_rebuild_then_resume(
    tmp_path: Path,
    workspace: Path,
    abstracts: list[dict[str, Any]],
    embedder: Embedder,
    run_rebuild: Callable[..., RebuildSummary],
) -> None:
    changed = dict(abstracts[1], abstract=abstracts[1]["abstract"] + " The effect persisted at follow-up.")
    write_articles(workspace / "store", [changed], version=2)
    write_articles(workspace / "store", abstracts[40:52])
    delete_articles(workspace / "store", [abstracts[0]["pmid"]])
    reference = tmp_path / "reference"
    shutil.copytree(workspace, reference, ignore=shutil.ignore_patterns("reference"))
    clean = run_rebuild(reference)
    assert clean.shards_written >= 2

    manifest_before = (workspace / "index" / "manifest.json").read_bytes()
    before_files = {p.name for p in (workspace / "index" / "shards").iterdir()}
    config = tmp_path / "empty.toml"
    config.write_text("[indexer]\n")
    command = [sys.executable, "-m", "indexer", "rebuild", "--store", str(workspace / "store")]
    command += ["--index", str(workspace / "index"), "--shard-size", str(SHARD_SIZE), "--device", "cpu"]
    command += ["--config", str(config)]
    env = {**os.environ, PAUSE_ENV: "120", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            new = {p.name for p in (workspace / "index" / "shards").iterdir()} - before_files
            if any(n.endswith(".ids.parquet") for n in new):
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    # The previous index is untouched and fully usable.
    assert (workspace / "index" / "manifest.json").read_bytes() == manifest_before
    old = open_index(workspace / "index", embedder)
    assert abstracts[0]["pmid"] in old.indexed([abstracts[0]["pmid"]])
    assert old.search("pitch processing", k=3)[0]

    resumed = run_rebuild(workspace)
    assert resumed.embedded < clean.embedded, "work done before the kill is not redone"
    assert _ids(workspace) == _ids(reference)
    queries = [r["title"] for r in abstracts[38:52]]
    got = open_index(workspace / "index", embedder).search(queries, k=5)
    want = open_index(reference / "index", embedder).search(queries, k=5)
    assert [[(h.pmid, h.chunk) for h in hits] for hits in got] == [[(h.pmid, h.chunk) for h in hits] for hits in want]
    assert not (workspace / "index" / "cache").exists()
