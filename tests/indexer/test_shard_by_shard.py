"""Shard by shard: many small ranges give the same ids and search results as one shard; tokenise once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from indexer.build import rebuild
from indexer.chunking import Chunker
from indexer.embedding import Embedder
from indexer.manifest import read_manifest
from indexer.search import open_index
from tests.indexer.conftest import delete_articles, make_config, write_articles
from tests.indexer.test_rebuild_search import question_from


def _rows(index_dir: Path) -> list[tuple[int, str, str]]:
    manifest = read_manifest(index_dir)
    assert manifest is not None
    rows: list[tuple[int, str, str]] = []
    for entry in manifest.shards:
        table = pq.read_table(index_dir / entry.ids_file, columns=["id", "key", "text"])
        rows.extend(zip(*(table.column(c).to_pylist() for c in ("id", "key", "text")), strict=True))
    return rows


@pytest.fixture(scope="module")
def fp32() -> Embedder:
    return Embedder("default", "cpu", precision="fp32")


def test_small_shards_over_many_ranges_equal_one_shot(
    tmp_path: Path, abstracts: list[dict[str, Any]], fp32: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    write_articles(store, abstracts[:30])
    write_articles(store, abstracts[30:])
    write_articles(store, [dict(abstracts[7], abstract=abstracts[7]["abstract"] + " A later sentence.")], version=2)
    delete_articles(store, [abstracts[11]["pmid"]])
    one = rebuild(make_config(store, tmp_path / "one", shard_size=1 << 25, chunk_tokens=96), fp32)
    calls: list[int] = []
    encode = fp32.encode_tokens
    monkeypatch.setattr(fp32, "encode_tokens", lambda inputs, *a: calls.append(len(inputs)) or encode(inputs, *a))
    many = rebuild(make_config(store, tmp_path / "many", shard_size=250_000, chunk_tokens=96), fp32)
    monkeypatch.undo()
    assert calls == [many.vectors], "the chunks of all the small ranges reach the model in one call"
    assert len(read_manifest(tmp_path / "one").shards) == 1  # type: ignore[union-attr]
    assert many.shards_written > 15 and many.vectors == one.vectors
    assert _rows(tmp_path / "many") == _rows(tmp_path / "one"), "same ids, keys and texts, in the same order"
    ids = [r[0] for r in _rows(tmp_path / "many")]
    assert ids == sorted(ids) and all((i & 0xFF) < 256 for i in ids)
    assert abstracts[11]["pmid"] not in {i >> 8 for i in ids}
    questions = [question_from(r) for r in abstracts[::4]]
    a = open_index(tmp_path / "one", fp32).search(questions, k=10)
    b = open_index(tmp_path / "many", fp32).search(questions, k=10)
    assert [[(h.pmid, h.chunk) for h in hits] for hits in a] == [[(h.pmid, h.chunk) for h in hits] for hits in b]
    for x, y in zip(a, b, strict=True):
        assert [h.score for h in x] == pytest.approx([h.score for h in y], abs=1e-5)
    again = rebuild(make_config(store, tmp_path / "many", shard_size=250_000, chunk_tokens=96), fp32)
    assert (again.embedded, again.shards_written) == (0, 0) and again.shards_kept == many.shards_written


def test_chunk_many_tokenises_once_and_matches_chunk(abstracts: list[dict[str, Any]], fp32: Embedder) -> None:
    chunker = Chunker(fp32.count_tokens, 64, 16, fp32.tokenize, fp32.special_tokens(), fp32.max_seq_length)
    rows = abstracts + [{"pmid": 1, "title": "Title only", "abstract": None}, {"pmid": 2, "title": "", "abstract": ""}]
    expected = [c for r in rows for c in chunker.chunk(r["pmid"], r["title"], r["abstract"])]
    calls: list[int] = []

    def counting(texts: Any) -> Any:
        calls.append(len(texts))
        return fp32.tokenize(texts)

    chunker.tokenize = counting
    chunks, tokens = chunker.chunk_many(
        [r["pmid"] for r in rows], [r["title"] for r in rows], [r["abstract"] for r in rows]
    )
    assert chunks == expected and len(chunks) > len(abstracts)
    assert calls == [2 * len(rows)], "one batched tokenizer call for the whole batch"
    texts = [c.text for c in chunks]
    reference = fp32.tokenizer(texts, truncation=True, max_length=fp32.max_seq_length)["input_ids"]
    assert [list(t) for t in tokens] == [list(r) for r in reference]
    np.testing.assert_allclose(fp32.encode_tokens(tokens), fp32.encode(texts), atol=1e-6)


def test_read_range_pools_sparse_windows_into_full_batches(
    tmp_path: Path, abstracts: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import indexer.ranges as ranges

    store = tmp_path / "store"
    write_articles(store, abstracts)
    pmids = sorted(r["pmid"] for r in abstracts)
    lo, hi = pmids[0], pmids[-1] + 1
    # Reader windows of a few PMIDs hold at most an article or two: a sparse store.
    monkeypatch.setattr(ranges, "READ_BATCH_PMIDS", max(1, (hi - lo) // (3 * len(pmids))))
    monkeypatch.setattr(ranges, "BATCH_ARTICLES", 7)
    windows = list(ranges.live_tables(str(store), lo, hi))
    assert len(windows) > len(pmids) // 7 + 1, "the reader yields more, smaller windows than full batches"
    batches = list(ranges.read_range(str(store), lo, hi))
    assert [len(b[0]) for b in batches[:-1]] == [7] * (len(batches) - 1) and 0 < len(batches[-1][0]) <= 7
    assert np.concatenate([b[0] for b in batches]).tolist() == pmids
    by_pmid = {r["pmid"]: r for r in abstracts}
    for batch_pmids, titles, texts in batches:
        assert titles == [by_pmid[p]["title"] or "" for p in batch_pmids.tolist()]
        assert texts == [by_pmid[p]["abstract"] or "" for p in batch_pmids.tolist()]


def test_pooled_batches_keep_their_shard_when_a_range_spans_several_pools(
    tmp_path: Path, abstracts: list[dict[str, Any]], fp32: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import indexer.ranges as ranges
    from indexer.cache import EmbeddingCache

    store = tmp_path / "store"
    write_articles(store, abstracts)
    one = rebuild(make_config(store, tmp_path / "one", shard_size=1 << 25, chunk_tokens=96), fp32)
    # Batches of 3 articles and pools of 4 chunks: every range is split over several pools.
    monkeypatch.setattr(ranges, "BATCH_ARTICLES", 3)
    monkeypatch.setattr(ranges, "POOL_CHUNKS", 4)
    cached: list[int] = []
    add = EmbeddingCache.add
    monkeypatch.setattr(EmbeddingCache, "add", lambda self, n, *a: cached.append(n) or add(self, n, *a))
    many = rebuild(make_config(store, tmp_path / "many", shard_size=4_000_000, chunk_tokens=96), fp32)
    manifest = read_manifest(tmp_path / "many")
    assert manifest is not None and many.shards_written > 1 and many.embedded == many.vectors == one.vectors
    assert len(cached) > 2 * many.shards_written, "more pools than shards"
    assert set(cached) == {e.number for e in manifest.shards}, "each pool's vectors are cached under their own shard"
    assert _rows(tmp_path / "many") == _rows(tmp_path / "one")
