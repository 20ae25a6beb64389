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


def test_a_shards_ids_rows_go_to_disk_batch_by_batch(
    tmp_path: Path, abstracts: list[dict[str, Any]], fp32: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import indexer.ranges as ranges
    from indexer.shards import IDS_ROW_GROUP, IdsStaging

    store = tmp_path / "store"
    write_articles(store, abstracts)
    monkeypatch.setattr(ranges, "BATCH_ARTICLES", 4)
    sizes: list[tuple[int, int]] = []  # (rows staged so far, bytes of the staging file on disk)
    append = IdsStaging.append

    def recording(self: IdsStaging, table: Any) -> None:
        append(self, table)
        sizes.append((self.rows, self.path.stat().st_size))

    monkeypatch.setattr(IdsStaging, "append", recording)
    summary = rebuild(make_config(store, tmp_path / "index", shard_size=1 << 25, chunk_tokens=96), fp32)
    assert summary.shards_written == 1 and len(sizes) >= len(abstracts) // 4
    assert [r for r, _ in sizes] == sorted(r for r, _ in sizes) and sizes[-1][0] == summary.vectors
    on_disk = [b for _, b in sizes]
    assert len(set(on_disk)) > len(on_disk) // 2, "each batch's rows reach the staging file when staged"
    assert not [p.name for p in (tmp_path / "index" / "shards").iterdir() if p.name.startswith(".tmp-")]
    manifest = read_manifest(tmp_path / "index")
    assert manifest is not None
    ids_file = pq.ParquetFile(tmp_path / "index" / manifest.shards[0].ids_file)
    assert ids_file.metadata.num_rows == summary.vectors == manifest.shards[0].n_vectors
    assert manifest.shards[0].n_articles == len(abstracts)
    groups = [ids_file.metadata.row_group(g).num_rows for g in range(ids_file.metadata.num_row_groups)]
    assert max(groups) <= IDS_ROW_GROUP
    slots = ids_file.read(columns=["slot"]).column("slot").to_numpy()
    assert (slots >= 0).all(), "every row has its vector's slot"


def test_staging_refuses_rows_out_of_id_order(tmp_path: Path) -> None:
    import pyarrow as pa

    from indexer.shards import IDS_SCHEMA, IdsStaging

    def rows(ids: list[int]) -> pa.Table:
        n = len(ids)
        values = {"id": ids, "pmid": [i >> 8 for i in ids], "chunk": [i & 0xFF for i in ids], "start": [0] * n}
        values |= {"end": [1] * n, "doc_hash": ["h"] * n, "key": ["k"] * n, "text": ["t"] * n}
        return pa.table(values, schema=IDS_SCHEMA)

    staging = IdsStaging(tmp_path, 3, "ab" * 32)
    staging.append(rows([256, 257]))
    with pytest.raises(ValueError, match="ascending id order"):
        staging.append(rows([257, 512]))
    with pytest.raises(ValueError, match="ascending id order"):
        staging.append(rows([1024, 768]))
    assert staging.path.name.startswith(".tmp-shard-00003-abababababab.ids.parquet.")
    staging.discard()
    assert not staging.path.exists()


def test_an_error_mid_shard_drops_its_staged_rows_and_keeps_the_published_index(
    tmp_path: Path, abstracts: list[dict[str, Any]], fp32: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import indexer.ranges as ranges

    store = tmp_path / "store"
    write_articles(store, abstracts)
    index = tmp_path / "index"
    first = rebuild(make_config(store, index, shard_size=1 << 25, chunk_tokens=96), fp32)
    before = (index / "manifest.json").read_bytes()
    monkeypatch.setattr(ranges, "BATCH_ARTICLES", 4)
    monkeypatch.setattr(ranges, "POOL_CHUNKS", 4)
    calls: list[int] = []
    encode = fp32.encode_tokens

    def failing(inputs: Any, *a: Any) -> Any:
        calls.append(len(inputs))
        if len(calls) == 3:
            raise RuntimeError("model failed mid-shard")
        return encode(inputs, *a)

    monkeypatch.setattr(fp32, "encode_tokens", failing)
    with pytest.raises(RuntimeError, match="mid-shard"):
        rebuild(make_config(store, index, shard_size=1 << 25, chunk_tokens=96, full=True), fp32)
    monkeypatch.undo()
    assert len(calls) == 3
    assert not [p.name for p in (index / "shards").iterdir() if ".staging" in p.name], "staged rows are gone"
    assert (index / "manifest.json").read_bytes() == before
    hits = open_index(index, fp32).search([question_from(abstracts[0])], k=3)[0]
    assert len(hits) == 3 and first.vectors > 0


def test_the_embedding_cache_holds_only_what_it_read_back(tmp_path: Path) -> None:
    from indexer.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path, "model", every=4, precision="fp32")
    cache.open(2)
    vectors = np.arange(30, dtype=np.float32).reshape(10, 3)
    keys = [f"k{i}" for i in range(10)]
    cache.add(2, keys, vectors)
    assert len(cache) == 0 and cache.get("k0") is None, "new vectors are written out, not held"
    cache.flush(2)
    resumed = EmbeddingCache(tmp_path, "model", every=4, precision="fp32")
    resumed.open(2)
    assert len(resumed) == 10
    np.testing.assert_array_equal(np.stack([resumed.get(k) for k in keys]), vectors)  # type: ignore[misc]
    cache.drop(2)
    again = EmbeddingCache(tmp_path, "model", every=4, precision="fp32")
    again.open(2)
    assert len(again) == 0


def test_training_candidates_are_a_hash_sample_of_the_store_not_every_article(
    tmp_path: Path, abstracts: list[dict[str, Any]], fp32: Embedder
) -> None:
    from indexer.factory import hash_z
    from indexer.planning import plan_range
    from indexer.ranges import Settings

    store = tmp_path / "store"
    write_articles(store, abstracts)
    settings = Settings(str(store), str(tmp_path / "index"), "default", "cpu", "fp32", 8, None, None, 96, 16, 1, 64)
    pmids = np.array(sorted(r["pmid"] for r in abstracts), np.int64)
    edges = [*pmids[::6].tolist(), int(pmids[-1]) + 1]  # ranges of 6 articles each
    plans = [plan_range(settings, lo, hi, 0, 4, fp32) for lo, hi in zip(edges, edges[1:], strict=False)]
    assert sum(p.articles for p in plans) == len(abstracts)
    kept = np.concatenate([p.train_pmids for p in plans])
    z = np.concatenate([p.train_z for p in plans])
    assert 4 <= len(kept) < len(abstracts) // 2, "about 2 x train_max candidates over the whole store"
    # The smallest hashes among the candidates are the smallest of the whole store.
    every = hash_z(pmids, 1)
    assert sorted(kept[np.argsort(z)[:4]].tolist()) == sorted(pmids[np.argsort(every)[:4]].tolist())


def test_encode_tokenises_a_slice_at_a_time_with_the_same_vectors(
    abstracts: list[dict[str, Any]], fp32: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import indexer.embedding as embedding

    texts = [r["abstract"] or r["title"] for r in abstracts[:10]]
    whole = fp32.encode_tokens(fp32.tokenizer(texts, truncation=True, max_length=fp32.max_seq_length)["input_ids"])
    calls: list[int] = []
    tokenizer = fp32.tokenizer
    monkeypatch.setattr(embedding, "TOKENIZE_TEXTS", 3)
    monkeypatch.setattr(fp32, "tokenizer", lambda batch, **kw: calls.append(len(batch)) or tokenizer(batch, **kw))
    sliced = fp32.encode(texts)
    assert calls == [3, 3, 3, 1]
    np.testing.assert_allclose(sliced, whole, atol=1e-6)
