"""Recall@10 is measured against exact search over real vectors, so quantisation loss shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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


def test_the_recall_sample_reembeds_its_own_texts_reading_one_row_group_at_a_time(
    tmp_path: Path, abstracts: list[dict[str, Any]], embedder: Embedder, monkeypatch: Any
) -> None:
    import numpy as np
    import pyarrow.parquet as pq

    import indexer.recall as recall

    write_articles(tmp_path / "store", abstracts)
    rebuild(make_config(tmp_path / "store", tmp_path / "sq", factory="IVF2,SQ8", nprobe=2, chunk_tokens=64), embedder)
    manifest = read_manifest(tmp_path / "sq")
    assert manifest is not None
    asked: list[list[str]] = []
    read_ids = recall.read_ids
    monkeypatch.setattr(recall, "read_ids", lambda d, e, cols: asked.append(list(cols)) or read_ids(d, e, cols))
    groups: list[int] = []
    read_group = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", lambda f, g, **kw: groups.append(g) or read_group(f, g, **kw))
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", lambda *a, **kw: pytest.fail("row groups read together"))
    encoded: list[str] = []
    ids, vectors = recall.sample_vectors(
        tmp_path / "sq", manifest, 25, lambda texts: encoded.extend(texts) or embedder.encode(list(texts))
    )
    assert asked and all(cols == ["id"] for cols in asked), "no shard's texts are read whole"
    assert groups, "texts come from row groups read one by one"
    assert 20 <= len(ids) <= 30 and len(encoded) == len(ids) == len(vectors)
    by_id: dict[int, str] = {}
    for entry in manifest.shards:
        table = pq.read_table(tmp_path / "sq" / entry.ids_file, columns=["id", "text"])
        by_id.update(zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True))
    assert encoded == [by_id[i] for i in ids.tolist()], "each sampled id gets its own chunk's text"
    # bf16 on CPU: a vector moves by a few 1e-4 with the batch its text lands in
    np.testing.assert_allclose(vectors, embedder.encode([by_id[i] for i in ids.tolist()]), atol=5e-3)
