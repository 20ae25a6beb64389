"""`--engine ray` on a local Ray cluster (``ray.init(num_cpus=2)``) against the local engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray

from indexer.build import rebuild
from indexer.embedding import Embedder
from indexer.manifest import read_manifest
from indexer.search import open_index
from tests.indexer.conftest import make_config, write_articles
from tests.indexer.test_rebuild_search import question_from


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def both_engines(
    tmp_path_factory: pytest.TempPathFactory, abstracts: list[dict[str, Any]], embedder: Embedder, local_ray: None
) -> Path:
    """One store (two parts, a newer version of one article) indexed by each engine.

    Both embed in fp32: the engines cut batches differently, and bf16 results move by a
    few 1e-4 with the batch a text lands in, which is not what these tests compare.
    """
    root = tmp_path_factory.mktemp("engines")
    write_articles(root / "store", abstracts)
    changed = dict(abstracts[5], abstract=abstracts[5]["abstract"] + " A revised closing sentence.")
    write_articles(root / "store", [changed], version=2)
    rebuild(make_config(root / "store", root / "local"), Embedder(embedder.model_id, "cpu", precision="fp32"))
    cfg = make_config(root / "store", root / "ray", engine="ray", ray_batch=16, precision="fp32")
    summary = rebuild(cfg)
    assert summary.embedded == summary.vectors > len(abstracts)
    return root


def _ids(index_dir: Path) -> list[tuple[str, list[int], list[str]]]:
    manifest = read_manifest(index_dir)
    assert manifest is not None
    shards = []
    for entry in manifest.shards:
        table = pq.read_table(index_dir / entry.ids_file)
        shards.append((entry.ids_file, table.column("id").to_pylist(), table.column("text").to_pylist()))
    return shards


def test_ray_engine_writes_the_same_ids_and_manifest(both_engines: Path) -> None:
    local, distributed = both_engines / "local", both_engines / "ray"
    assert _ids(distributed) == _ids(local)
    a = json.loads((local / "manifest.json").read_text())
    b = json.loads((distributed / "manifest.json").read_text())
    for volatile in ("created_at", "shards"):
        a.pop(volatile), b.pop(volatile)
    assert a == b
    assert len({e.number for e in read_manifest(distributed).shards}) > 1  # type: ignore[union-attr]
    assert json.loads((distributed / "config.resolved.json").read_text())["config"]["engine"] == "ray"


def test_ray_engine_gives_the_same_search_results(
    both_engines: Path, abstracts: list[dict[str, Any]], embedder: Embedder
) -> None:
    questions = [question_from(r) for r in abstracts[::3]]
    local = open_index(both_engines / "local", embedder).search(questions, k=10)
    distributed = open_index(both_engines / "ray", embedder).search(questions, k=10)
    for ours, theirs in zip(distributed, local, strict=True):
        assert [(h.pmid, h.chunk) for h in ours] == [(h.pmid, h.chunk) for h in theirs]
        assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], abs=1e-4)
    assert [hits[0].pmid for hits in distributed] == [r["pmid"] for r in abstracts[::3]]


def test_ray_engine_second_run_embeds_nothing(both_engines: Path) -> None:
    summary = rebuild(make_config(both_engines / "store", both_engines / "ray", engine="ray"))
    assert summary.embedded == 0
    assert summary.shards_written == 0 and summary.shards_kept > 1


def test_ray_engine_trains_the_ivf_quantizer_once(
    tmp_path: Path, abstracts: list[dict[str, Any]], local_ray: None
) -> None:
    write_articles(tmp_path / "store", abstracts)
    cfg = make_config(tmp_path / "store", tmp_path / "index", engine="ray", factory="IVF2,Flat", nprobe=2)
    rebuild(cfg)
    manifest = read_manifest(tmp_path / "index")
    assert manifest is not None and manifest.trained_file and len(manifest.shards) > 1
    index = open_index(tmp_path / "index", Embedder(cfg.model, "cpu"))
    assert index.search(question_from(abstracts[0]), k=1)[0][0].pmid == abstracts[0]["pmid"]
