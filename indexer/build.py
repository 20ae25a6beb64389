"""`rebuild`: the article store -> a sharded FAISS index, incrementally and crash-safely.

Each article is fingerprinted (title, abstract, chunker settings). A shard whose
articles and build settings are unchanged is kept as is; a changed shard is rewritten
under a new content-named file, reusing the stored vectors of unchanged chunks and
embedding only new text. The manifest is written last: until it is, readers see the
previous index. Shard files and a side cache of embeddings survive a killed run, so
the next run resumes instead of starting over. A changed model, chunker or factory
rebuilds every shard (and says why).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from indexer.cache import EmbeddingCache
from indexer.chunking import Chunk, Chunker, chunk_id, chunk_key, document_hash
from indexer.config import IndexerConfig
from indexer.embedding import Embedder
from indexer.errors import DimensionMismatchError, EmptyStoreError, IndexerError
from indexer.factory import (
    add_vectors,
    auto_factory,
    factory_nlist,
    hash_sample,
    keep_auto_factory,
    new_index,
    noisy_queries,
    quantizer_fingerprint,
    train,
    train_size,
    tune_nprobe,
)
from indexer.manifest import TRAINED_PREFIX, Manifest, read_manifest, write_manifest
from indexer.shards import (
    IDS_SCHEMA,
    SHARDS_DIR,
    ShardEntry,
    entry_for,
    find_written,
    read_ids,
    read_index,
    reconstruct,
    sha256_file,
    write_shard,
)
from store.atomic import atomic_write_bytes, is_temp_name, remove_stale_temps
from store.config import write_resolved_config
from store.reader import PartsReader, read_articles

log = logging.getLogger(__name__)

PAUSE_ENV = "INDEXER_PAUSE_AFTER_SHARD_S"
"""Test knob: seconds to sleep after each shard is written (to kill a rebuild mid-way)."""

_RATIO_SAMPLE = 2_000


@dataclass
class RebuildSummary:
    """Counts and timings of one rebuild."""

    articles: int = 0
    vectors: int = 0
    embedded: int = 0
    reused: int = 0
    shards_written: int = 0
    shards_kept: int = 0
    shards_removed: int = 0
    full: bool = False
    reasons: list[str] = field(default_factory=list)
    factory: str = ""
    nprobe: int | None = None
    recall: float | None = None
    seconds: float = 0.0
    embed_seconds: float = 0.0

    def line(self) -> str:
        mode = "full" if self.full else "incremental"
        tuned = f", nprobe {self.nprobe} (recall@10 {self.recall:.3f})" if self.nprobe and self.recall else ""
        return (
            f"{mode} rebuild: {self.articles} articles, {self.vectors} vectors in "
            f"{self.shards_written + self.shards_kept} shards ({self.shards_written} written, {self.shards_kept} kept, "
            f"{self.shards_removed} removed); embedded {self.embedded} chunks, reused {self.reused}; "
            f"factory {self.factory}{tuned}; {self.seconds:.1f}s"
        )


class _Bars:
    """tqdm bars for chunking, embedding and adding (hidden when not wanted)."""

    def __init__(self, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.chunking = tqdm(desc="chunking", unit="article", disable=not enabled, total=0)
        self.embedding = tqdm(desc="embedding", unit="chunk", disable=not enabled, total=0)
        self.adding = tqdm(desc="adding", unit="vector", disable=not enabled, total=0)

    def close(self) -> None:
        for bar in (self.chunking, self.embedding, self.adding):
            bar.close()


class _VectorSource:
    """Vectors for chunk keys: the embedding cache, then old shards, then the model."""

    def __init__(
        self,
        index_dir: Path,
        old: Manifest | None,
        embedder: Embedder,
        cache: EmbeddingCache,
        bars: _Bars,
        summary: RebuildSummary,
    ) -> None:
        self.index_dir = index_dir
        self.old = old
        self.old_by_number = {e.number: e for e in old.shards} if old else {}
        self.embedder = embedder
        self.cache = cache
        self.bars = bars
        self.summary = summary
        self._loaded: tuple[int, Any, dict[str, int]] | None = None

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

    def vectors(self, keys: list[str], texts: list[str], pmids: np.ndarray, count: bool = True) -> np.ndarray:
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
        if count:
            self.summary.reused += len(keys) - len(missing)
        if missing:
            self.bars.embedding.total += len(missing)
            self.bars.embedding.refresh()
            started = time.perf_counter()
            step = self.cache.every
            for first in range(0, len(missing), step):
                rows = missing[first : first + step]
                vectors = self.embedder.encode([texts[r] for r in rows], progress=self.bars.embedding.update)
                out[rows] = vectors
                self.cache.add([keys[r] for r in rows], vectors)
            self.cache.flush()
            self.summary.embedded += len(missing)
            self.summary.embed_seconds += time.perf_counter() - started
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


@dataclass
class _Articles:
    pmids: np.ndarray
    titles: list[str]
    abstracts: list[str]
    doc_hashes: list[str]
    shards: np.ndarray


def _live_articles(store: Path, read_parts: PartsReader | None = None) -> pa.Table:
    """pmid, title, abstract of live articles that have some text; EmptyStoreError when none."""
    table = read_articles(store, columns=["title", "abstract"], read_parts=read_parts)
    has_text = pc.or_(
        pc.greater(pc.utf8_length(pc.fill_null(table.column("title"), "")), 0),
        pc.greater(pc.utf8_length(pc.fill_null(table.column("abstract"), "")), 0),
    )
    table = table.filter(has_text)
    if table.num_rows == 0:
        raise EmptyStoreError(f"{store}: the store has no article with a title or abstract; nothing to index")
    return table


def _articles(table: pa.Table, chunker_fp: str, shard_size: int) -> _Articles:
    pmids = table.column("pmid").to_numpy().astype(np.int64)
    titles = [t or "" for t in table.column("title").to_pylist()]
    abstracts = [a or "" for a in table.column("abstract").to_pylist()]
    hashes = [document_hash(t, a, chunker_fp) for t, a in zip(titles, abstracts, strict=True)]
    return _Articles(pmids, titles, abstracts, hashes, pmids // shard_size)


def _chunk_table(chunks: list[Chunk], doc_hashes: dict[int, str], model_id: str, chunker_fp: str) -> pa.Table:
    return pa.table(
        {
            "id": [chunk_id(c.pmid, c.chunk) for c in chunks],
            "pmid": [c.pmid for c in chunks],
            "chunk": [c.chunk for c in chunks],
            "start": [c.start for c in chunks],
            "end": [c.end for c in chunks],
            "doc_hash": [doc_hashes[c.pmid] for c in chunks],
            "key": [chunk_key(model_id, chunker_fp, c.text) for c in chunks],
            "text": [c.text for c in chunks],
        },
        schema=IDS_SCHEMA,
    )


@contextmanager
def _timer(summary: RebuildSummary) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        summary.seconds = time.perf_counter() - started


def _progress_enabled(cfg: IndexerConfig) -> bool:
    return cfg.progress if cfg.progress is not None else sys.stderr.isatty()


Pending = Callable[[], ShardEntry]
"""A shard being written; calling it waits for the finished entry."""


def _add_and_write(
    index_dir: Path,
    number: int,
    digest: str,
    index: Any,
    vectors: np.ndarray,
    table: pa.Table,
    use_gpu: bool,
    progress: Callable[[int], Any],
) -> Pending:
    """The local engine: fill and write the shard here and now."""
    index = add_vectors(index, vectors, table.column("id").to_numpy(), use_gpu, progress)
    entry = write_shard(index_dir, number, digest, index, table)
    return lambda: entry


def rebuild(cfg: IndexerConfig, embedder: Embedder | None = None) -> RebuildSummary:
    """Bring the index at ``cfg.index`` up to date with the store at ``cfg.store``."""
    summary = RebuildSummary()
    engine: Any = None
    scope: AbstractContextManager[Any] = nullcontext()
    if cfg.engine == "ray":
        from indexer.ray_engine import RayEngine

        engine = scope = RayEngine(cfg)
    with _timer(summary), scope:
        index_dir = Path(cfg.index)
        old = read_manifest(index_dir)
        table = _live_articles(Path(cfg.store), engine.read_parts if engine else None)
        if engine is not None and embedder is None:
            embedder = engine.embedder()
        _Rebuild(cfg, old, embedder, summary, engine).run(table)
    log.info(summary.line())
    return summary


class _Rebuild:
    def __init__(
        self,
        cfg: IndexerConfig,
        old: Manifest | None,
        embedder: Embedder | None,
        summary: RebuildSummary,
        engine: Any = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.summary = summary
        self.index_dir = Path(cfg.index)
        self.old = old
        self.embedder = embedder or Embedder(
            cfg.model, cfg.device, cfg.batch_size, cfg.threads, cfg.batch_tokens, cfg.precision
        )
        if cfg.threads:
            import faiss

            faiss.omp_set_num_threads(cfg.threads)
        max_tokens = cfg.chunk_tokens or self.embedder.max_seq_length
        self.chunker = Chunker(self.embedder.count_tokens, max_tokens, cfg.chunk_overlap)
        self.model_id = self.embedder.model_id
        self.use_gpu = self.embedder.device == "cuda"
        self._estimate: int | None = None

    # -- planning -----------------------------------------------------------------------------

    def _compatibility(self) -> list[str]:
        """Why the old index cannot be updated in place (empty list: it can)."""
        old, cfg = self.old, self.cfg
        if old is None:
            return []
        reasons = []
        if old.model == self.model_id and old.dim != self.embedder.dim and not cfg.full:
            raise DimensionMismatchError(
                f"{self.index_dir}: model {self.model_id} now has dimension {self.embedder.dim}, manifest says "
                f"{old.dim}; run `indexer rebuild --full` to rebuild with it"
            )
        if old.model != self.model_id:
            reasons.append(f"model changed from {old.model} to {self.model_id}")
        if old.chunker != self.chunker.fingerprint:
            reasons.append(f"chunker changed from {old.chunker} to {self.chunker.fingerprint}")
        if old.shard_size != cfg.shard_size:
            reasons.append(f"shard size changed from {old.shard_size} to {cfg.shard_size}")
        if cfg.full:
            reasons.append("--full requested")
        return reasons

    def _choose_factory(self, n_vectors: int) -> tuple[str, bool]:
        cfg = self.cfg
        if cfg.factory != "auto":
            return cfg.factory, False
        proposed = auto_factory(n_vectors, self.embedder.dim, cfg.flat_max, cfg.hnsw_min, cfg.pq_min, cfg.sq8_min)
        if self.old is not None and self.old.factory_auto and keep_auto_factory(self.old.factory, proposed):
            return self.old.factory, True
        return proposed, True

    def _chunks_of(self, arts: _Articles, rows: np.ndarray, old_rows: pa.Table | None, bars: _Bars) -> pa.Table:
        """Chunk rows of the given articles: copied from the old shard when the article is unchanged."""
        pieces: list[pa.Table] = []
        reuse: dict[int, str] = {}
        if old_rows is not None and old_rows.num_rows:
            first = pc.equal(old_rows.column("chunk"), 0)
            heads = old_rows.filter(first)
            reuse = dict(zip(heads.column("pmid").to_pylist(), heads.column("doc_hash").to_pylist(), strict=True))
        unchanged = [int(arts.pmids[r]) for r in rows if reuse.get(int(arts.pmids[r])) == arts.doc_hashes[r]]
        if unchanged and old_rows is not None:
            pieces.append(old_rows.filter(pc.is_in(old_rows.column("pmid"), pa.array(unchanged, pa.int64()))))
        keep = set(unchanged)
        fresh = [r for r in rows if int(arts.pmids[r]) not in keep]
        chunks: list[Chunk] = []
        hashes: dict[int, str] = {}
        for r in fresh:
            pmid = int(arts.pmids[r])
            chunks.extend(self.chunker.chunk(pmid, arts.titles[r], arts.abstracts[r]))
            hashes[pmid] = arts.doc_hashes[r]
            bars.chunking.update(1)
        if chunks:
            pieces.append(_chunk_table(chunks, hashes, self.model_id, self.chunker.fingerprint))
        if not pieces:
            return IDS_SCHEMA.empty_table()
        table = pa.concat_tables([p.cast(IDS_SCHEMA) for p in pieces])
        return table.take(pc.sort_indices(table, [("id", "ascending")]))

    # -- the run ---------------------------------------------------------------------------------

    def run(self, table: pa.Table) -> None:
        cfg, summary = self.cfg, self.summary
        reasons = self._compatibility()
        arts = _articles(table, self.chunker.fingerprint, cfg.shard_size)
        summary.articles = len(arts.pmids)
        reusable_old = self.old if (self.old is not None and not reasons) else None
        old_heads = self._old_heads(reusable_old)
        to_chunk = sum(1 for p, h in zip(arts.pmids.tolist(), arts.doc_hashes, strict=True) if old_heads.get(p) != h)
        bars = _Bars(_progress_enabled(cfg))
        bars.chunking.total = to_chunk
        try:
            self._run(arts, reasons, reusable_old, bars)
        finally:
            bars.close()

    def _old_heads(self, old: Manifest | None) -> dict[int, str]:
        if old is None:
            return {}
        heads: dict[int, str] = {}
        for entry in old.shards:
            table = read_ids(self.index_dir, entry, ["pmid", "chunk", "doc_hash"])
            table = table.filter(pc.equal(table.column("chunk"), 0))
            heads.update(zip(table.column("pmid").to_pylist(), table.column("doc_hash").to_pylist(), strict=True))
        return heads

    def _estimate_vectors(self, arts: _Articles) -> int:
        """Chunks the whole store will have, from chunking a hash sample of articles."""
        if self._estimate is not None:
            return self._estimate
        old = self.old
        same_chunks = old is not None and old.model == self.model_id and old.chunker == self.chunker.fingerprint
        if old is not None and same_chunks and old.n_articles:
            self._estimate = int(round(len(arts.pmids) * old.n_vectors / old.n_articles))
            return self._estimate
        sample = hash_sample(arts.pmids, _RATIO_SAMPLE)
        chunks = sum(len(self.chunker.chunk(int(arts.pmids[r]), arts.titles[r], arts.abstracts[r])) for r in sample)
        self._estimate = int(round(len(arts.pmids) * chunks / max(len(sample), 1)))
        return self._estimate

    def _run(self, arts: _Articles, reasons: list[str], reusable_old: Manifest | None, bars: _Bars) -> None:
        cfg, summary, old = self.cfg, self.summary, self.old
        factory, factory_auto = self._choose_factory(self._estimate_vectors(arts))
        if old is not None and old.factory != factory and not reasons:
            reasons.append(f"factory changed from {old.factory} to {factory}")
        summary.factory = factory
        summary.full = old is None or bool(reasons)
        summary.reasons = reasons
        if reasons:
            log.warning("full rebuild: %s", "; ".join(reasons))
        cache = EmbeddingCache(self.index_dir, self.model_id, cfg.cache_every)
        # Vectors can come from the old shards when the model and chunker are the same and the
        # old codes are exact (Flat storage); --full always embeds afresh.
        vectors_from_old = (
            old is not None
            and old.model == self.model_id
            and old.dim == self.embedder.dim
            and old.chunker == self.chunker.fingerprint
            and not cfg.full
            and old.factory.endswith("Flat")
        )
        source = _VectorSource(self.index_dir, old if vectors_from_old else None, self.embedder, cache, bars, summary)
        shard_numbers = np.unique(arts.shards)
        old_by_number = {e.number: e for e in reusable_old.shards} if reusable_old else {}

        trained, trained_meta = self._trained(factory, arts, reusable_old, source, bars)
        digest_parts = [
            self.model_id,
            str(self.embedder.dim),
            self.chunker.fingerprint,
            factory,
            trained_meta.get("trained_sha256") or "",
            f"shard_size={cfg.shard_size}",
            self._generation(),
        ]
        entries: list[ShardEntry | Pending] = []
        pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
        for number in shard_numbers.tolist():
            rows = np.flatnonzero(arts.shards == number)
            digest = _digest(digest_parts, arts, rows)
            previous = old_by_number.get(number)
            if previous is not None and previous.digest == digest:
                entries.append(previous)
                summary.shards_kept += 1
                summary.vectors += previous.n_vectors
                continue
            written = find_written(self.index_dir, number, digest)
            published = {e.digest for e in old.shards} if old else set()
            if written is not None and digest not in published:
                table = read_ids_path(written[1])
                entries.append(entry_for(number, digest, written[0], written[1], table))
                summary.shards_written += 1
                summary.vectors += table.num_rows
                log.info("shard %05d: found complete from an earlier run", number)
                continue
            old_rows = read_ids(self.index_dir, previous) if previous is not None else None
            table = self._chunks_of(arts, rows, old_rows, bars)
            vectors = source.vectors(
                table.column("key").to_pylist(), table.column("text").to_pylist(), table.column("pmid").to_numpy()
            )
            index = _clone(trained) if trained is not None else new_index(factory, self.embedder.dim)
            bars.adding.total += len(vectors)
            bars.adding.refresh()
            if self.engine is not None:
                pending = self.engine.add_and_write(
                    self.index_dir, number, digest, index, vectors, table, bars.adding.update
                )
            else:
                pending = _add_and_write(
                    self.index_dir, number, digest, index, vectors, table, self.use_gpu, bars.adding.update
                )
            entries.append(pending)
            summary.shards_written += 1
            summary.vectors += table.num_rows
            if pause:
                time.sleep(pause)
        done = [e if isinstance(e, ShardEntry) else e() for e in entries]
        summary.shards_removed = len({e.number for e in old.shards} - {e.number for e in done}) if old else 0
        manifest = Manifest(
            model=self.model_id,
            dim=self.embedder.dim,
            chunker=self.chunker.fingerprint,
            faiss_version=_faiss_version(),
            factory=factory,
            factory_auto=factory_auto,
            shard_size=cfg.shard_size,
            shards=done,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            store=str(cfg.store),
            **trained_meta,
        )
        self._set_nprobe(manifest, reusable_old, summary)
        write_resolved_config(cfg, self.index_dir)
        write_manifest(self.index_dir, manifest)
        cache.clear()
        _remove_unreferenced(self.index_dir, manifest)

    def _generation(self) -> str:
        """Tells a --full rebuild's files apart from the published ones (same across resumes)."""
        if self.cfg.full and self.old is not None:
            return f"full-after:{self.old.created_at}"
        return ""

    def _trained(
        self, factory: str, arts: _Articles, old: Manifest | None, source: _VectorSource, bars: _Bars
    ) -> tuple[Any | None, dict[str, Any]]:
        """The trained empty index shared by every shard (reused when the factory is unchanged)."""
        import faiss

        probe = new_index(factory, self.embedder.dim)
        if probe.is_trained:
            return None, {}
        if old is not None and old.factory == factory and old.trained_file:
            path = self.index_dir / old.trained_file
            if path.is_file() and sha256_file(path) == old.trained_sha256:
                return faiss.read_index(str(path)), {
                    "trained_file": old.trained_file,
                    "trained_sha256": old.trained_sha256,
                    "quantizer_sha256": old.quantizer_sha256,
                }
        n_estimate = self._estimate_vectors(arts)
        wanted = train_size(factory, n_estimate, self.cfg.train_per_list)
        ratio = max(n_estimate / max(len(arts.pmids), 1), 1.0)
        picks = hash_sample(arts.pmids, min(len(arts.pmids), int(wanted / ratio) + 1), salt=1)
        chunks = [c for r in picks for c in self.chunker.chunk(int(arts.pmids[r]), arts.titles[r], arts.abstracts[r])]
        ids = np.array([chunk_id(c.pmid, c.chunk) for c in chunks], dtype=np.int64)
        chosen = hash_sample(ids, min(wanted, len(ids)), salt=2)
        chunks = [chunks[i] for i in chosen]
        keys = [chunk_key(self.model_id, self.chunker.fingerprint, c.text) for c in chunks]
        import hashlib

        name_digest = hashlib.sha256("\n".join([factory, self._generation(), *keys]).encode()).hexdigest()[:12]
        path = self.index_dir / f"{TRAINED_PREFIX}{name_digest}.faiss"
        if path.is_file():
            log.info("reusing trained index %s from an earlier run", path.name)
            trained = faiss.read_index(str(path))
        else:
            pmids = np.array([c.pmid for c in chunks], np.int64)
            vectors = source.vectors(keys, [c.text for c in chunks], pmids, count=False)
            log.info("training %s on %d vectors", factory, len(vectors))
            trained = train(factory, self.embedder.dim, vectors, self.use_gpu)
            atomic_write_bytes(path, faiss.serialize_index(trained).tobytes())
        return trained, {
            "trained_file": path.name,
            "trained_sha256": sha256_file(path),
            "quantizer_sha256": quantizer_fingerprint(trained),
        }

    def _set_nprobe(self, manifest: Manifest, old: Manifest | None, summary: RebuildSummary) -> None:
        nlist = factory_nlist(manifest.factory)
        if nlist is None:
            return
        if self.cfg.nprobe is not None:
            manifest.nprobe = self.cfg.nprobe
        elif (
            old is not None
            and old.nprobe
            and old.trained_sha256 == manifest.trained_sha256
            and manifest.n_vectors <= 1.1 * old.n_vectors
        ):
            manifest.nprobe, manifest.recall_at_10 = old.nprobe, old.recall_at_10
        else:
            tuning = measure_recall(self.index_dir, manifest, self.cfg.tune_queries, self.cfg.target_recall)
            manifest.nprobe, manifest.recall_at_10 = tuning
        summary.nprobe, summary.recall = manifest.nprobe, manifest.recall_at_10


def measure_recall(index_dir: Path, manifest: Manifest, n_queries: int, target: float | None) -> tuple[int, float]:
    """Recall@10 against exhaustive search on sampled noisy queries; with ``target``, tune nprobe to reach it.

    Returns ``(nprobe, recall)``.
    """
    from indexer.search import ShardSet

    shards = ShardSet(index_dir, manifest, check=False)
    positions = hash_sample(shards.sorted_ids, min(n_queries, len(shards.sorted_ids)), salt=3)
    queries = noisy_queries(shards.vectors_at(positions))
    nlist = factory_nlist(manifest.factory) or 1
    k = min(10, max(shards.ntotal, 1))
    truth = shards.search(queries, k, nprobe=nlist)[1]
    if target is None:
        nprobe = manifest.nprobe or 1
        found = shards.search(queries, k, nprobe=nprobe)[1]
        from indexer.factory import recall_at

        return nprobe, recall_at(found, truth)
    tuning = tune_nprobe(lambda q, kk, p: shards.search(q, kk, nprobe=p)[1], queries, truth, nlist, target, k)
    return tuning.nprobe, tuning.recall


def read_ids_path(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _digest(parts: list[str], arts: _Articles, rows: np.ndarray) -> str:
    from indexer.shards import shard_digest

    return shard_digest(parts, arts.pmids[rows], [arts.doc_hashes[r] for r in rows])


def _clone(index: Any) -> Any:
    import faiss

    return faiss.clone_index(index)


def _faiss_version() -> str:
    import faiss

    return str(faiss.__version__)


def _remove_unreferenced(index_dir: Path, manifest: Manifest) -> None:
    """Delete shard and trained files the published manifest no longer names."""
    keep = {Path(e.index_file).name for e in manifest.shards} | {Path(e.ids_file).name for e in manifest.shards}
    folder = index_dir / SHARDS_DIR
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name not in keep and path.is_file() and not is_temp_name(path.name):
                path.unlink(missing_ok=True)
    remove_stale_temps(folder)
    remove_stale_temps(index_dir)
    for path in index_dir.glob(f"{TRAINED_PREFIX}*.faiss"):
        if path.name != manifest.trained_file:
            path.unlink(missing_ok=True)


__all__ = ["IndexerError", "RebuildSummary", "measure_recall", "rebuild"]
