"""The per-range work of a rebuild: read a shard's PMID range and build its shard.

Each function reads its range from the Parquet store with `store.reader.iter_live_batches`
and returns only numbers, vectors and shard entries, never article text: the local
engine calls them in this process, the Ray engine runs them as tasks on its workers
(the planning passes are in `indexer.planning`). `build_ranges` tokenises each batch
of articles once (`Chunker.chunk_many`) in a producer thread, which runs ahead of the
model through a bounded queue, so the model never waits for reading, splitting or
tokenising; the chunks of consecutive small ranges are pooled into one model call of at
least ``POOL_CHUNKS``, so a sparse store still embeds in large, length-sorted calls.
Memory is bounded by one shard's FAISS index and article hashes (its ids rows, with the
chunk texts, are staged on disk as they come, `indexer.shards.IdsStaging`) plus
``PREFETCH`` batches of ``BATCH_ARTICLES`` articles and one pool: a range is read twice,
once for its digest and once, only when it must be built, for its text.
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

from indexer.chunking import Chunk, Chunker, chunk_id, chunk_key, document_hash
from indexer.embedding import Embedder
from indexer.factory import add_vectors
from indexer.shards import (
    IDS_SCHEMA,
    IdsStaging,
    ShardEntry,
    entry_for,
    find_written,
    shard_digest,
    write_shard,
)
from indexer.vectors import VectorSource

log = logging.getLogger(__name__)

PAUSE_ENV = "INDEXER_PAUSE_AFTER_SHARD_S"
"""Test knob: seconds to sleep after each shard is written (to kill a rebuild mid-way)."""
BATCH_ARTICLES = 4096
"""Articles tokenised in one batched tokenizer call."""
PREFETCH = 4
"""Tokenised batches the producer may run ahead of the model."""
READ_BATCH_PMIDS = 100_000
POOL_CHUNKS = 8192
"""Chunks gathered across consecutive ranges before one model call (a sparse store's ranges are small)."""


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


def read_range(store: Any, lo: int, hi: int) -> Iterator[tuple[np.ndarray, list[str], list[str]]]:
    """(pmids, titles, abstracts) of the live articles with some text in ``[lo, hi)``, in PMID order;
    ``store`` is a store path or an open `store.reader.StoreIndex` (one snapshot of its parts).

    Batches hold `BATCH_ARTICLES` articles (the last one fewer): the reader's PMID windows
    are pooled, so a sparse store still gives the tokenizer and the model full batches.
    """

    def batch(part: pa.Table) -> tuple[np.ndarray, list[str], list[str]]:
        titles = [t or "" for t in part.column("title").to_pylist()]
        abstracts = [a or "" for a in part.column("abstract").to_pylist()]
        return part.column("pmid").to_numpy().astype(np.int64), titles, abstracts

    pending: list[pa.Table] = []
    rows = 0
    for table in live_tables(store, lo, hi):
        pending.append(table)
        rows += table.num_rows
        if rows < BATCH_ARTICLES:
            continue
        pooled = pa.concat_tables(pending)
        full = rows - rows % BATCH_ARTICLES
        for first in range(0, full, BATCH_ARTICLES):
            yield batch(pooled.slice(first, BATCH_ARTICLES))
        pending, rows = [pooled.slice(full)], rows - full
    if rows:
        yield batch(pa.concat_tables(pending))


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
    from store.reader import StoreIndex

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
            # First pass: only PMIDs and article hashes, to tell whether the shard must be built;
            # the texts are read again batch by batch below, so a range's text is never all held.
            # Both passes read one snapshot of the store's parts, so they see the same rows.
            snapshot = StoreIndex(settings.store)
            pieces: list[np.ndarray] = []
            hashes: list[str] = []
            for batch_pmids, titles, abstracts in read_range(snapshot, job.lo, job.hi):
                pieces.append(batch_pmids)
                hashes.extend(document_hash(t, a, chunker.fingerprint) for t, a in zip(titles, abstracts, strict=True))
            pmids = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
            if not len(pmids):
                put(_Done(None, 0))
                continue
            digest = shard_digest(digest_parts, pmids, hashes)
            if job.previous is not None and job.previous.digest == digest:
                put(_Done(ShardResult(job.previous, "kept", len(pmids)), len(pmids)))
                continue
            written = find_written(Path(settings.index), job.number, digest)
            if written is not None and digest not in published:
                entry = entry_for(job.number, digest, written[0], written[1])
                log.info("shard %05d: found complete from an earlier run", job.number)
                put(_Done(ShardResult(entry, "found", len(pmids)), len(pmids)))
                continue
            put(_Start(job, digest))
            offset = 0
            for batch_pmids, titles, abstracts in read_range(snapshot, job.lo, job.hi):
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

    def replay(events: list[Any]) -> None:
        """Embed every batch of ``events`` in one call, then start, fill and write their shards in order."""
        nonlocal current
        requests: list[tuple[int, list[str], list[np.ndarray], np.ndarray]] = []
        number = current["start"].job.number if current else -1  # a shard begun in an earlier pool
        for event in events:
            if isinstance(event, _Start):
                number = event.job.number
            elif isinstance(event, _Batch):
                keys = event.table.column("key").to_pylist()
                requests.append((number, keys, event.tokens, event.table.column("pmid").to_numpy()))
        vectors = iter(source.vectors_many(requests))
        for event in events:
            if isinstance(event, _Start):
                index = faiss.clone_index(trained) if trained is not None else new_index(factory, worker.embedder.dim)
                current = {
                    "start": event,
                    "index": index,
                    "ids": IdsStaging(index_dir, event.job.number, event.digest),
                    "articles": 0,
                    "embedded": 0,
                    "reused": 0,
                    "seconds": 0.0,
                }
            elif isinstance(event, _Batch):
                ids = event.table.column("id").to_numpy()
                batch_vectors, embedded, seconds = next(vectors)
                current["index"] = add_vectors(current["index"], batch_vectors, ids, use_gpu, lambda _n: None)
                current["embedded"] += embedded
                current["reused"] += len(ids) - embedded
                current["seconds"] += seconds
                current["ids"].append(event.table)
                current["articles"] += event.articles
                tick("embedded", event.articles)
            elif isinstance(event, _Done):
                if event.result is not None:
                    results.append(event.result)
                    tick("embedded", event.articles)
                elif current:
                    results.append(finish(current))
                    current = {}
                    if pause:
                        time.sleep(pause)
                tick("shards", 1)

    def finish(building: dict[str, Any]) -> ShardResult:
        start: _Start = building["start"]
        source.cache.flush(start.job.number)
        entry = write_shard(index_dir, start.job.number, start.digest, building["index"], building["ids"])
        source.cache.drop(start.job.number)
        return ShardResult(
            entry,
            "written",
            building["articles"],
            building["embedded"],
            building["reused"],
            building["seconds"],
        )

    # Events are held until POOL_CHUNKS chunks are waiting (or the input ends), so the model
    # embeds consecutive small ranges together; a dense range's batches of BATCH_ARTICLES
    # articles (about 8,000 chunks) are embedded one or two at a time.
    held: list[Any] = []
    held_chunks = 0
    try:
        while True:
            item = items.get()
            if isinstance(item, BaseException):
                raise item
            if item is not None:
                held.append(item)
                held_chunks += item.table.num_rows if isinstance(item, _Batch) else 0
                if held_chunks < POOL_CHUNKS:
                    continue
            replay(held)
            held, held_chunks = [], 0
            if item is None:
                break
    finally:
        stop.set()
        producer.join(timeout=30)
        if current:  # a shard left unfinished by an error: its staged rows go
            current["ids"].discard()
    return results
