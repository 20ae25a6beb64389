"""The per-range work of a rebuild: read a shard's PMID range and build its shard.

Each function reads its range from the Parquet store with `store.reader.iter_live_batches`
and returns only numbers, vectors and shard entries, never article text: the local
engine calls them in this process, the Ray engine runs them as tasks on its workers
(the planning passes are in `indexer.planning`). `build_ranges` tokenises each batch
of articles once (`Chunker.chunk_many`) in a producer thread, which runs ahead of the
model through a bounded queue, so the model never waits for reading, splitting or
tokenising. Memory is bounded by one shard (its ids table and FAISS index) plus
``PREFETCH`` batches of ``BATCH_ARTICLES`` articles.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from indexer.cache import EmbeddingCache
from indexer.chunking import Chunk, Chunker, chunk_id, chunk_key, document_hash
from indexer.embedding import Embedder
from indexer.factory import add_vectors
from indexer.manifest import Manifest, read_manifest
from indexer.shards import (
    IDS_SCHEMA,
    ShardEntry,
    entry_for,
    find_written,
    read_ids,
    read_index,
    reconstruct,
    shard_digest,
    write_shard,
)

log = logging.getLogger(__name__)

PAUSE_ENV = "INDEXER_PAUSE_AFTER_SHARD_S"
"""Test knob: seconds to sleep after each shard is written (to kill a rebuild mid-way)."""
BATCH_ARTICLES = 4096
"""Articles tokenised in one batched tokenizer call."""
PREFETCH = 4
"""Tokenised batches the producer may run ahead of the model."""
READ_BATCH_PMIDS = 100_000


@dataclass(frozen=True)
class Settings:
    """What a worker needs to build ranges (picklable, no article text)."""

    store: str
    index: str
    model: str
    device: str
    precision: str
    batch_size: int
    batch_tokens: int | None
    threads: int | None
    chunk_tokens: int | None
    chunk_overlap: int
    shard_size: int
    cache_every: int
    vectors_from_old: bool = False


@dataclass
class Worker:
    """A loaded model and chunker, once per process."""

    embedder: Embedder
    chunker: Chunker


_WORKERS: dict[tuple[Any, ...], Worker] = {}


def worker_for(settings: Settings, embedder: Embedder | None = None) -> Worker:
    key: tuple[Any, ...] = (settings.model, settings.device, settings.precision, settings.batch_size)
    key += (settings.batch_tokens, settings.threads, settings.chunk_tokens, settings.chunk_overlap, id(embedder))
    if key not in _WORKERS:
        emb = embedder or Embedder(
            settings.model,
            settings.device,
            settings.batch_size,
            settings.threads,
            settings.batch_tokens,
            settings.precision,
        )
        max_tokens = settings.chunk_tokens or emb.max_seq_length
        chunker = Chunker(
            emb.count_tokens, max_tokens, settings.chunk_overlap, emb.tokenize, emb.special_tokens(), emb.max_seq_length
        )
        _WORKERS.clear()
        _WORKERS[key] = Worker(emb, chunker)
    return _WORKERS[key]


def live_tables(store: Any, lo: int, hi: int) -> Iterator[pa.Table]:
    """Arrow tables (pmid, title, abstract) of the live articles with some text in ``[lo, hi)``, in
    PMID order; ``store`` is a store path or an open `store.reader.StoreIndex`."""
    from store.reader import StoreIndex

    index = store if isinstance(store, StoreIndex) else StoreIndex(store)
    for table in index.iter_live_batches(lo, hi, columns=["title", "abstract"], batch_pmids=READ_BATCH_PMIDS):
        has_text = pc.or_(
            pc.greater(pc.utf8_length(pc.fill_null(table.column("title"), "")), 0),
            pc.greater(pc.utf8_length(pc.fill_null(table.column("abstract"), "")), 0),
        )
        yield table.filter(has_text)


def read_range(store: str, lo: int, hi: int) -> Iterator[tuple[np.ndarray, list[str], list[str]]]:
    """(pmids, titles, abstracts) of the live articles with some text in ``[lo, hi)``, in PMID order."""
    for table in live_tables(store, lo, hi):
        for first in range(0, table.num_rows, BATCH_ARTICLES):
            part = table.slice(first, BATCH_ARTICLES)
            titles = [t or "" for t in part.column("title").to_pylist()]
            abstracts = [a or "" for a in part.column("abstract").to_pylist()]
            yield part.column("pmid").to_numpy().astype(np.int64), titles, abstracts


# -- vectors ----------------------------------------------------------------------------------------


class VectorSource:
    """Vectors for chunk keys: the embedding cache, then old Flat shards, then the model."""

    def __init__(self, settings: Settings, worker: Worker, on_embed: Callable[[int, float], Any] | None = None) -> None:
        self.settings = settings
        self.index_dir = Path(settings.index)
        self.embedder = worker.embedder
        self.old: Manifest | None = read_manifest(self.index_dir) if settings.vectors_from_old else None
        self.old_by_number = {e.number: e for e in self.old.shards} if self.old else {}
        self.cache = EmbeddingCache(
            self.index_dir, self.embedder.model_id, settings.cache_every, self.embedder.precision
        )
        self._loaded: tuple[int, Any, dict[str, int]] | None = None
        self.embedded = 0
        self.reused = 0
        self.embed_seconds = 0.0
        self.on_embed = on_embed

    def _old_shard(self, number: int) -> tuple[Any, dict[str, int]] | None:
        if self._loaded is not None and self._loaded[0] == number:
            return self._loaded[1], self._loaded[2]
        entry = self.old_by_number.get(number)
        if entry is None:
            return None
        index = read_index(self.index_dir, entry)
        table = read_ids(self.index_dir, entry, ["id", "key"])
        keys = dict(zip(table.column("key").to_pylist(), table.column("id").to_pylist(), strict=True))
        self._loaded = (number, index, keys)
        return index, keys

    def vectors(self, number: int, keys: list[str], tokens: list[np.ndarray], pmids: np.ndarray) -> np.ndarray:
        self.cache.open(number)
        out = np.zeros((len(keys), self.embedder.dim), dtype=np.float32)
        missing: list[int] = []
        for row, key in enumerate(keys):
            cached = self.cache.get(key)
            if cached is not None:
                out[row] = cached
            else:
                missing.append(row)
        if self.old is not None and missing:
            missing = self._from_old(keys, pmids, missing, out)
        self.reused += len(keys) - len(missing)
        if missing:
            started = time.perf_counter()
            vectors = self.embedder.encode_tokens([tokens[r] for r in missing])
            seconds = time.perf_counter() - started
            out[missing] = vectors
            self.cache.add(number, [keys[r] for r in missing], vectors)
            self.embedded += len(missing)
            self.embed_seconds += seconds
            if self.on_embed is not None:
                self.on_embed(len(missing), seconds)
        return out

    def _from_old(self, keys: list[str], pmids: np.ndarray, rows: list[int], out: np.ndarray) -> list[int]:
        assert self.old is not None
        numbers = pmids[rows] // self.old.shard_size
        still: list[int] = []
        for number in np.unique(numbers):
            group = [r for r, n in zip(rows, numbers, strict=True) if n == number]
            loaded = self._old_shard(int(number))
            if loaded is None:
                still.extend(group)
                continue
            index, known = loaded
            hits = [(r, known[keys[r]]) for r in group if keys[r] in known]
            if hits:
                out[[r for r, _ in hits]] = reconstruct(index, np.array([i for _, i in hits], dtype=np.int64))
            found = {r for r, _ in hits}
            still.extend(r for r in group if r not in found)
        return sorted(still)


def _chunk_table(chunks: list[Chunk], hashes: dict[int, str], model_id: str, chunker_fp: str) -> pa.Table:
    return pa.table(
        {
            "id": [chunk_id(c.pmid, c.chunk) for c in chunks],
            "pmid": [c.pmid for c in chunks],
            "chunk": [c.chunk for c in chunks],
            "start": [c.start for c in chunks],
            "end": [c.end for c in chunks],
            "doc_hash": [hashes[c.pmid] for c in chunks],
            "key": [chunk_key(model_id, chunker_fp, c.text) for c in chunks],
            "text": [c.text for c in chunks],
        },
        schema=IDS_SCHEMA,
    )


# -- building ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardJob:
    """One range to build, and what the planner knows of its published shard."""

    number: int
    lo: int
    hi: int
    previous: ShardEntry | None


@dataclass
class ShardResult:
    entry: ShardEntry
    state: str  # kept, found, written
    articles: int
    embedded: int = 0
    reused: int = 0
    embed_seconds: float = 0.0


@dataclass
class _Start:
    job: ShardJob
    digest: str


@dataclass
class _Batch:
    table: pa.Table
    tokens: list[np.ndarray]
    articles: int


@dataclass
class _Done:
    result: ShardResult | None = None
    articles: int = 0


def _produce(
    settings: Settings,
    worker: Worker,
    jobs: list[ShardJob],
    digest_parts: list[str],
    published: set[str],
    out: queue.Queue[Any],
    stop: threading.Event,
) -> None:
    """Read, hash, split and tokenise each range; put _Start, _Batch..., _Done (or a finished _Done)."""
    chunker, model_id = worker.chunker, worker.embedder.model_id

    def put(item: Any) -> None:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    try:
        for job in jobs:
            batches = list(read_range(settings.store, job.lo, job.hi))
            pmids = np.concatenate([b[0] for b in batches]) if batches else np.zeros(0, np.int64)
            hashes = [
                document_hash(t, a, chunker.fingerprint)
                for _, ts, abs_ in batches
                for t, a in zip(ts, abs_, strict=True)
            ]
            if not len(pmids):
                put(_Done(None, 0))
                continue
            digest = shard_digest(digest_parts, pmids, hashes)
            if job.previous is not None and job.previous.digest == digest:
                put(_Done(ShardResult(job.previous, "kept", len(pmids)), len(pmids)))
                continue
            written = find_written(Path(settings.index), job.number, digest)
            if written is not None and digest not in published:
                import pyarrow.parquet as pq

                table = pq.read_table(written[1])
                entry = entry_for(job.number, digest, written[0], written[1], table)
                log.info("shard %05d: found complete from an earlier run", job.number)
                put(_Done(ShardResult(entry, "found", len(pmids)), len(pmids)))
                continue
            put(_Start(job, digest))
            offset = 0
            for batch_pmids, titles, abstracts in batches:
                chunks, tokens = chunker.chunk_many(batch_pmids.tolist(), titles, abstracts)
                batch_hashes = dict(zip(batch_pmids.tolist(), hashes[offset : offset + len(batch_pmids)], strict=True))
                offset += len(batch_pmids)
                put(_Batch(_chunk_table(chunks, batch_hashes, model_id, chunker.fingerprint), tokens, len(batch_pmids)))
            put(_Done(None, 0))
            if stop.is_set():
                return
    except BaseException as exc:  # handed to the consumer, which raises it
        put(exc)
    put(None)


def build_ranges(
    settings: Settings,
    jobs: list[ShardJob],
    digest_parts: list[str],
    published: set[str],
    trained_file: str | None,
    factory: str,
    embedder: Embedder | None = None,
    progress: Callable[[str, int], Any] | None = None,
) -> list[ShardResult]:
    """Build (or keep) the shard of each job, in order; the model embeds while the next batches are tokenised."""
    import faiss

    from indexer.factory import new_index

    worker = worker_for(settings, embedder)
    source = VectorSource(settings, worker)
    index_dir = Path(settings.index)
    trained = faiss.read_index(str(index_dir / trained_file)) if trained_file else None
    use_gpu = worker.embedder.device == "cuda"
    pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
    tick = progress or (lambda _stage, _n: None)
    items: queue.Queue[Any] = queue.Queue(maxsize=PREFETCH)
    stop = threading.Event()
    producer = threading.Thread(
        target=_produce, args=(settings, worker, jobs, digest_parts, published, items, stop), daemon=True
    )
    producer.start()
    results: list[ShardResult] = []
    current: dict[str, Any] = {}
    try:
        while True:
            item = items.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, _Start):
                index = faiss.clone_index(trained) if trained is not None else new_index(factory, worker.embedder.dim)
                current = {
                    "start": item,
                    "index": index,
                    "tables": [],
                    "articles": 0,
                    "embedded": source.embedded,
                    "reused": source.reused,
                    "seconds": source.embed_seconds,
                }
            elif isinstance(item, _Batch):
                keys = item.table.column("key").to_pylist()
                pmids = item.table.column("pmid").to_numpy()
                number = current["start"].job.number
                vectors = source.vectors(number, keys, item.tokens, pmids)
                current["index"] = add_vectors(
                    current["index"], vectors, item.table.column("id").to_numpy(), use_gpu, lambda _n: None
                )
                current["tables"].append(item.table)
                current["articles"] += item.articles
                tick("embedded", item.articles)
            elif isinstance(item, _Done):
                if item.result is not None:
                    results.append(item.result)
                    tick("embedded", item.articles)
                elif current:
                    start: _Start = current["start"]
                    table = pa.concat_tables(current["tables"]) if current["tables"] else IDS_SCHEMA.empty_table()
                    source.cache.flush(start.job.number)
                    entry = write_shard(index_dir, start.job.number, start.digest, current["index"], table)
                    source.cache.drop(start.job.number)
                    results.append(
                        ShardResult(
                            entry,
                            "written",
                            current["articles"],
                            source.embedded - current["embedded"],
                            source.reused - current["reused"],
                            source.embed_seconds - current["seconds"],
                        )
                    )
                    current = {}
                    if pause:
                        time.sleep(pause)
                tick("shards", 1)
    finally:
        stop.set()
        producer.join(timeout=30)
    return results
