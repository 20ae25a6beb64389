"""Recall@10 is measured against exact search over real vectors, so quantisation loss shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from indexer.build import rebuild
from indexer.embedding import Embedder
from indexer.factory import factory_nlist
from indexer.manifest import read_manifest
from indexer.recall import measure_recall
from indexer.verify import verify_index
from tests.indexer.conftest import make_config, write_articles


def test_pq_loss_shows_in_recall_and_flat_is_exact(
    tmp_path: Path, abstracts: list[dict[str, Any]], embedder: Embedder
) -> None:
    write_articles(tmp_path / "store", abstracts)
    cfg = make_config(tmp_path / "store", tmp_path / "pq", factory="IVF2,PQ8x4", nprobe=2, chunk_tokens=64)
    rebuild(cfg, embedder)
    manifest = read_manifest(tmp_path / "pq")
    assert manifest is not None and factory_nlist(manifest.factory) == 2
    # Every list probed: what remains is the loss of the 4-bit PQ codes, which a compressed
    # index compared against itself would report as recall 1.0.
    _, recall = measure_recall(tmp_path / "pq", manifest, 100, None, encode=embedder.encode)
    assert recall < 0.9
    report = verify_index(tmp_path / "pq", tmp_path / "store", queries=100)
    assert report.ok and report.recall is not None and report.recall < 0.9

    flat_cfg = make_config(tmp_path / "store", tmp_path / "flat", factory="IVF2,Flat", nprobe=2, chunk_tokens=64)
    rebuild(flat_cfg, embedder)
    flat = read_manifest(tmp_path / "flat")
    assert flat is not None
    assert measure_recall(tmp_path / "flat", flat, 100, None)[1] == 1.0
