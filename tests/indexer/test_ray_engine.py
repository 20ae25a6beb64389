"""`--engine ray`: one task per shard range, on ``ray.init(num_cpus=2)`` and on a real two-node cluster.

Both engines must give the same files, ids, manifest and search results, and nothing
that comes back to the driver may carry article text.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray

import indexer.ranges
from indexer.build import rebuild
from indexer.embedding import Embedder
from indexer.manifest import read_manifest
from indexer.search import open_index
from tests.indexer.conftest import make_config, write_articles
from tests.indexer.test_rebuild_search import question_from

REPO = Path(__file__).resolve().parents[2]
# Ray starts its workers at nice 15; on a busy machine (CI is often shared) they then get
# next to no CPU beside normal-priority work and these tests stall. Every `ray.init` and
# `ray start` below inherits this.
os.environ.setdefault("RAY_worker_niceness", "0")


def _ids(index_dir: Path) -> list[tuple[str, list[int], list[str]]]:
    manifest = read_manifest(index_dir)
    assert manifest is not None
    shards = []
    for entry in manifest.shards:
        table = pq.read_table(index_dir / entry.ids_file)
        shards.append((entry.ids_file, table.column("id").to_pylist(), table.column("text").to_pylist()))
    return shards


def _same_manifest(a_dir: Path, b_dir: Path) -> None:
    a = json.loads((a_dir / "manifest.json").read_text())
    b = json.loads((b_dir / "manifest.json").read_text())
    for volatile in ("created_at", "shards"):
        a.pop(volatile), b.pop(volatile)
    assert a == b


def _store(root: Path, abstracts: list[dict[str, Any]]) -> Path:
    write_articles(root / "store", abstracts)
    changed = dict(abstracts[5], abstract=abstracts[5]["abstract"] + " A revised closing sentence.")
    write_articles(root / "store", [changed], version=2)
    return root / "store"


def _watch_driver(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record what the driver fetches from the cluster; make any store read on the driver fail."""
    received: list[Any] = []
    real_get = ray.get

    def get(refs: Any, *args: Any, **kwargs: Any) -> Any:
        value = real_get(refs, *args, **kwargs)
        received.append(value)
        return value

    def no_reading(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the driver read article text from the store")

    monkeypatch.setattr(ray, "get", get)
    monkeypatch.setattr(indexer.ranges, "live_tables", no_reading)
    return received


def _assert_no_text(received: list[Any], abstracts: list[dict[str, Any]]) -> None:
    assert received
    blob = b"".join(pickle.dumps(v) for v in received)
    for row in abstracts:
        for piece in (row["title"], *row["abstract"].split(". ")):
            if len(piece) > 30:
                assert piece.encode() not in blob, f"article text reached the driver: {piece[:40]!r}"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def both_engines(tmp_path_factory: pytest.TempPathFactory, abstracts: list[dict[str, Any]], local_ray: None) -> Path:
    """One store (two parts, a newer version of one article) indexed by each engine, both in fp32."""
    root = tmp_path_factory.mktemp("engines")
    _store(root, abstracts)
    rebuild(make_config(root / "store", root / "local", precision="fp32"), Embedder("default", "cpu", precision="fp32"))
    with pytest.MonkeyPatch.context() as patch:
        received = _watch_driver(patch)
        summary = rebuild(make_config(root / "store", root / "ray", engine="ray", precision="fp32"))
    assert summary.embedded == summary.vectors > len(abstracts)
    _assert_no_text(received, abstracts)
    return root


def test_ray_engine_writes_the_same_ids_and_manifest(both_engines: Path) -> None:
    local, distributed = both_engines / "local", both_engines / "ray"
    assert _ids(distributed) == _ids(local)
    _same_manifest(local, distributed)
    assert len({e.number for e in read_manifest(distributed).shards}) > 1  # type: ignore[union-attr]
    assert json.loads((distributed / "config.resolved.json").read_text())["config"]["engine"] == "ray"


def test_ray_engine_gives_the_same_search_results(both_engines: Path, abstracts: list[dict[str, Any]]) -> None:
    embedder = Embedder("default", "cpu", precision="fp32")
    questions = [question_from(r) for r in abstracts[::3]]
    local = open_index(both_engines / "local", embedder).search(questions, k=10)
    distributed = open_index(both_engines / "ray", embedder).search(questions, k=10)
    for ours, theirs in zip(distributed, local, strict=True):
        assert [(h.pmid, h.chunk) for h in ours] == [(h.pmid, h.chunk) for h in theirs]
        assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], abs=1e-4)
    assert [hits[0].pmid for hits in distributed] == [r["pmid"] for r in abstracts[::3]]


def test_ray_engine_second_run_embeds_nothing(both_engines: Path) -> None:
    summary = rebuild(make_config(both_engines / "store", both_engines / "ray", engine="ray", precision="fp32"))
    assert summary.embedded == 0
    assert summary.shards_written == 0 and summary.shards_kept > 1


def test_ray_engine_trains_the_ivf_quantizer_once(
    tmp_path: Path, abstracts: list[dict[str, Any]], local_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_articles(tmp_path / "store", abstracts)
    received = _watch_driver(monkeypatch)
    cfg = make_config(tmp_path / "store", tmp_path / "index", engine="ray", factory="IVF2,Flat", nprobe=2)
    rebuild(cfg)
    _assert_no_text(received, abstracts)
    monkeypatch.undo()
    manifest = read_manifest(tmp_path / "index")
    assert manifest is not None and manifest.trained_file and len(manifest.shards) > 1
    index = open_index(tmp_path / "index", Embedder(cfg.model, "cpu"))
    assert index.search(question_from(abstracts[0]), k=1)[0][0].pmid == abstracts[0]["pmid"]


# -- a real cluster: a head node and a second node, each its own `ray start` ------------------------


def _free_ports(n: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def _ray_start(args: list[str], temp: str | None) -> subprocess.Popen[bytes]:
    ports = _free_ports(6)
    command = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--block",
        "--num-cpus=1",
        "--node-ip-address=127.0.0.1",
        f"--node-manager-port={ports[0]}",
        f"--object-manager-port={ports[1]}",
        f"--metrics-export-port={ports[2]}",
        f"--dashboard-agent-listen-port={ports[3]}",
        f"--dashboard-agent-grpc-port={ports[4]}",
        f"--runtime-env-agent-port={ports[5]}",
        "--min-worker-port=0",
        "--max-worker-port=0",
        *args,
    ]
    if temp:
        command.append(f"--temp-dir={temp}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop one `ray start --block` and the Ray processes it started (its own process group only)."""
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything of that group still alive


def _auth_mode(mode: str | None) -> None:
    """Set Ray's authentication mode for this process (and the `ray start` it spawns), or unset it."""
    from ray._raylet import Config

    if mode is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = mode
    Config.initialize("")  # Ray caches the mode per process


@pytest.fixture()
def two_node_cluster() -> Iterator[str]:
    if ray.is_initialized():
        ray.shutdown()
    # One authentication mode for the head, the second node and this driver, whatever an
    # earlier `ray.init` in this process or a token left under ~/.ray would pick for each.
    before = os.environ.get("RAY_AUTH_MODE")
    _auth_mode("disabled")
    (port,) = _free_ports(1)
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    head = _ray_start(["--head", f"--port={port}", "--include-dashboard=false"], temp)
    nodes = [head]
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [str(Path(sys.executable).with_name("ray")), "status", f"--address={address}"],
                capture_output=True,
                timeout=60,
            )
            if probe.returncode == 0:
                break
            assert head.poll() is None, "the Ray head node did not start"
            time.sleep(1)
        nodes.append(_ray_start([f"--address={address}"], None))
        ray.init(address=address, log_to_driver=False)
        deadline = time.monotonic() + 90
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(temp, ignore_errors=True)
        _auth_mode(before)


def test_two_node_cluster_equals_the_local_engine(
    tmp_path: Path, abstracts: list[dict[str, Any]], two_node_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = abstracts[:24]
    _store(tmp_path, rows)
    rebuild(
        make_config(tmp_path / "store", tmp_path / "local", precision="fp32"),
        Embedder("default", "cpu", precision="fp32"),
    )
    received = _watch_driver(monkeypatch)
    cfg = make_config(tmp_path / "store", tmp_path / "ray", engine="ray", precision="fp32")
    summary = rebuild(cfg)
    assert summary.shards_written > 1
    _assert_no_text(received, rows)
    monkeypatch.undo()
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
    assert _ids(tmp_path / "ray") == _ids(tmp_path / "local")
    _same_manifest(tmp_path / "local", tmp_path / "ray")
