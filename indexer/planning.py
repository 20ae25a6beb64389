"""The planning passes of a rebuild, per shard range: count and hash-sample, then embed the training sample.

`plan_range` reads the range's live articles as Arrow tables and turns into Python
strings only the texts of its ratio-sample candidates: articles whose PMID hash falls
below a threshold set from the store's total row count (from the Parquet footers), so
about ``2 x ratio_size`` articles of the whole store are chunked, however it is cut into
ranges. The global ratio sample (the ``ratio_size`` smallest hashes, `indexer.build`)
is then the same as with every article a candidate. Training candidates are drawn the
same way (another hash, below a threshold for about ``2 x train_max`` over the store), so
the plans of all ranges together hold about that many PMIDs, not one per article.
`sample_range` embeds the chosen training articles and says how long the model took.
Both return numbers, vectors and keys, never article text (the Ray engine runs them on
its workers). Memory: one read batch plus ``ratio_size`` candidates' texts and at most
``train_max`` candidate PMIDs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from indexer import ranges
from indexer.chunking import chunk_id, chunk_key
from indexer.embedding import Embedder
from indexer.factory import hash_z
from indexer.ranges import Settings, read_range, worker_for
from indexer.vectors import VectorSource

RATIO_MARGIN = 2
"""Expected ratio-sample candidates over the whole store, as a multiple of the sample size."""


def _bottom(z: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    if len(z) <= size:
        return z, values
    keep = np.argpartition(z, size - 1)[:size]
    return z[keep], values[keep]


def ratio_limit(size: int, store_rows: int) -> np.uint64:
    """Hash threshold below which an article is a candidate of a sample of ``size`` (all when the store is small)."""
    share = RATIO_MARGIN * size / max(store_rows, 1)
    if share >= 1:
        return np.uint64(2**64 - 1)
    return np.uint64(int(share * 2**64))


@dataclass
class RangePlan:
    """Counts and hash-sample candidates of one range (no text)."""

    lo: int
    hi: int
    articles: int = 0
    ratio_z: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    ratio_chunks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    train_z: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    train_pmids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def plan_range(
    settings: Settings, lo: int, hi: int, ratio_size: int, train_max: int, embedder: Embedder | None = None
) -> RangePlan:
    """Live articles of the range, the chunk counts of its ratio-sample candidates, its training candidates."""
    from store.reader import StoreIndex

    store = StoreIndex(settings.store)
    limit = ratio_limit(ratio_size, store.articles.num_rows)
    train_limit = ratio_limit(train_max, store.articles.num_rows)
    plan = RangePlan(lo, hi)
    ratio_pmids = np.zeros(0, np.int64)
    texts: dict[int, tuple[str, str]] = {}
    for table in ranges.live_tables(store, lo, hi):
        pmids = table.column("pmid").to_numpy().astype(np.int64)
        plan.articles += len(pmids)
        if ratio_size:
            z = hash_z(pmids, 0)
            rows = np.flatnonzero(z < limit)
            if len(rows):
                picked = table.take(rows)
                found = zip(
                    pmids[rows].tolist(),
                    picked.column("title").to_pylist(),
                    picked.column("abstract").to_pylist(),
                    strict=True,
                )
                texts.update((p, (t or "", a or "")) for p, t, a in found)
                plan.ratio_z, ratio_pmids = _bottom(
                    np.concatenate([plan.ratio_z, z[rows]]), np.concatenate([ratio_pmids, pmids[rows]]), ratio_size
                )
                texts = {p: texts[p] for p in ratio_pmids.tolist()}
        if train_max:
            z = hash_z(pmids, 1)
            rows = np.flatnonzero(z < train_limit)
            plan.train_z, plan.train_pmids = _bottom(
                np.concatenate([plan.train_z, z[rows]]), np.concatenate([plan.train_pmids, pmids[rows]]), train_max
            )
    if texts:
        order = np.argsort(ratio_pmids, kind="stable")
        plan.ratio_z, ratio_pmids = plan.ratio_z[order], ratio_pmids[order]
        chunker = worker_for(settings, embedder).chunker
        pmid_list = ratio_pmids.tolist()
        chunks, _ = chunker.chunk_many(pmid_list, [texts[p][0] for p in pmid_list], [texts[p][1] for p in pmid_list])
        counts: dict[int, int] = dict.fromkeys(pmid_list, 0)
        for chunk in chunks:
            counts[chunk.pmid] += 1
        plan.ratio_chunks = np.array([counts[p] for p in pmid_list], np.int64)
    return plan


@dataclass
class RangeSample:
    """Chunk ids, vectors and keys of a range's training articles, and the model's seconds for them."""

    ids: np.ndarray
    vectors: np.ndarray
    keys: list[str]
    embed_seconds: float = 0.0


def sample_range(
    settings: Settings, lo: int, hi: int, pmids: np.ndarray, embedder: Embedder | None = None
) -> RangeSample:
    """Every chunk of the chosen articles ``pmids`` of the range, embedded (cached for the build)."""
    worker = worker_for(settings, embedder)
    source = VectorSource(settings, worker)
    chosen = np.asarray(pmids, np.int64)
    all_ids, all_vectors, all_keys = [], [], []
    for batch_pmids, titles, abstracts in read_range(settings.store, lo, hi):
        rows = np.flatnonzero(np.isin(batch_pmids, chosen))
        if not len(rows):
            continue
        chunks, tokens = worker.chunker.chunk_many(
            batch_pmids[rows].tolist(), [titles[r] for r in rows], [abstracts[r] for r in rows]
        )
        keys = [chunk_key(worker.embedder.model_id, worker.chunker.fingerprint, c.text) for c in chunks]
        ids = np.array([chunk_id(c.pmid, c.chunk) for c in chunks], np.int64)
        all_vectors.append(source.vectors(lo // settings.shard_size, keys, tokens, ids >> 8))
        all_ids.append(ids)
        all_keys.extend(keys)
    source.cache.flush()
    if not all_ids:
        return RangeSample(np.zeros(0, np.int64), np.zeros((0, worker.embedder.dim), np.float32), [])
    return RangeSample(np.concatenate(all_ids), np.concatenate(all_vectors), all_keys, source.embed_seconds)
