"""`rebuild`: the article store -> a sharded FAISS index, shard by shard, incrementally and crash-safely.

Under the index folder's lock (`indexer.lock`), a rebuild runs three passes over the
shard ranges of the store (`store.reader.live_ranges`), each one range at a time
(`indexer.ranges`): plan (count the live articles, draw hash samples), train the
quantizer once on a hash sample of chunks when the factory needs it, then build each
shard: read its range, skip it when its content digest is unchanged, else chunk and
tokenise once, embed (reusing cached and unchanged vectors), add and write it under a
content name. The manifest is written last: until then, readers see the previous index.
Memory is bounded by one shard plus the training sample, never by the store.
A changed model, precision, chunker or factory rebuilds every shard (and says why).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indexer.chunking import chunk_key
from indexer.config import IndexerConfig
from indexer.embedding import Embedder
from indexer.errors import DimensionMismatchError, EmptyStoreError, IndexerError
from indexer.factory import (
    auto_factory,
    factory_nlist,
    hash_z,
    keep_auto_factory,
    new_index,
    quantizer_fingerprint,
    train,
    train_size,
)
from indexer.files import remove_unreferenced
from indexer.lock import index_lock
from indexer.manifest import TRAINED_PREFIX, Manifest, read_manifest, write_manifest
from indexer.planning import RangePlan, RangeSample, plan_range, sample_range
from indexer.ranges import PAUSE_ENV, Settings, ShardJob, ShardResult, build_ranges
from indexer.recall import exact_codes
from indexer.recall import measure_recall as _measure_recall
from indexer.shards import sha256_file
from store.atomic import atomic_write_bytes
from store.config import write_resolved_config

log = logging.getLogger(__name__)

_RATIO_SAMPLE = 2_000
TRAIN_CANDIDATES = 2_000_000
"""Most articles a range keeps as training candidates (the sample needs at most this many)."""


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
    """One tqdm bar per pass, each with a fixed total (hidden when not wanted); logs print above them."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars: dict[str, Any] = {}

    def open(self, name: str, total: int, unit: str) -> None:
        from tqdm.auto import tqdm

        self.bars[name] = tqdm(desc=name, total=total, unit=unit, disable=not self.enabled, dynamic_ncols=True)

    def tick(self, name: str, n: int) -> None:
        if name in self.bars:
            self.bars[name].update(n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars = {}


@contextmanager
def _logs_above_bars(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield


def _progress_enabled(cfg: IndexerConfig) -> bool:
    return cfg.progress if cfg.progress is not None else sys.stderr.isatty()


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in (
        "faiss-cpu",
        "faiss-gpu",
        "torch",
        "transformers",
        "tokenizers",
        "sentence-transformers",
        "pyarrow",
        "numpy",
        "ray",
    ):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def rebuild(cfg: IndexerConfig, embedder: Embedder | None = None) -> RebuildSummary:
    """Bring the index at ``cfg.index`` up to date with the store at ``cfg.store``."""
    summary = RebuildSummary()
    engine: Any = None
    scope: AbstractContextManager[Any] = nullcontext()
    index_dir = Path(cfg.index)
    read_manifest(index_dir)  # refuse a folder that is not ours before creating anything in it
    started = time.perf_counter()
    with index_lock(index_dir, wait=cfg.wait), _logs_above_bars(_progress_enabled(cfg)):
        if cfg.engine == "ray":
            from indexer.ray_engine import RayEngine

            engine = scope = RayEngine(cfg)
        with scope:
            _Rebuild(cfg, read_manifest(index_dir), embedder, summary, engine).run()
    summary.seconds = time.perf_counter() - started
    log.info(summary.line())
    return summary


class LocalEngine:
    """Runs the per-range work in this process, one range after another."""

    def __init__(self, embedder: Embedder | None) -> None:
        self._embedder = embedder

    def plan(
        self, settings: Settings, ranges: list[tuple[int, int]], ratio: int, train_max: int, tick: Callable[[int], Any]
    ) -> list[RangePlan]:
        plans = []
        for lo, hi in ranges:
            plans.append(plan_range(settings, lo, hi, ratio, train_max, self._embedder))
            tick(1)
        return plans

    def sample(self, settings: Settings, chosen: list[tuple[int, int, np.ndarray]]) -> list[RangeSample]:
        return [sample_range(settings, lo, hi, pmids, self._embedder) for lo, hi, pmids in chosen]

    def build(
        self,
        settings: Settings,
        jobs: list[ShardJob],
        digest_parts: list[str],
        published: set[str],
        trained_file: str | None,
        factory: str,
        tick: Callable[[str, int], Any],
    ) -> list[ShardResult]:
        return build_ranges(settings, jobs, digest_parts, published, trained_file, factory, self._embedder, tick)

    def measure_recall(
        self, settings: Settings, manifest: Manifest, queries: int, target: float | None, sample: int
    ) -> tuple[int, float]:
        from indexer.ranges import worker_for

        encode = None if exact_codes(manifest.factory) else worker_for(settings, self._embedder).embedder.encode
        return _measure_recall(Path(settings.index), manifest, queries, target, sample, encode)


class _Rebuild:
    def __init__(
        self,
        cfg: IndexerConfig,
        old: Manifest | None,
        embedder: Embedder | None,
        summary: RebuildSummary,
        engine: Any = None,
    ) -> None:
        from indexer.ranges import worker_for

        self.cfg = cfg
        self.summary = summary
        self.index_dir = Path(cfg.index)
        self.old = old
        if cfg.threads:
            import faiss

            faiss.omp_set_num_threads(cfg.threads)
        self.settings = Settings(
            store=str(cfg.store),
            index=str(cfg.index),
            model=cfg.model,
            device=cfg.device,
            precision=cfg.precision,
            batch_size=cfg.batch_size,
            batch_tokens=cfg.batch_tokens,
            threads=cfg.threads,
            chunk_tokens=cfg.chunk_tokens,
            chunk_overlap=cfg.chunk_overlap,
            shard_size=cfg.shard_size,
            cache_every=cfg.cache_every,
        )
        self.engine = engine or LocalEngine(embedder)
        # The model's identity (id, dimension, precision, device, chunker) as the embedding side sees it.
        info = engine.describe(self.settings) if engine is not None else _describe(worker_for(self.settings, embedder))
        self.model_id, self.dim, self.precision, self.device = (
            info["model"],
            info["dim"],
            info["precision"],
            info["device"],
        )
        self.chunker_fp = info["chunker"]
        self.use_gpu = self.device.startswith("cuda")

    # -- planning -----------------------------------------------------------------------------

    def _compatibility(self) -> list[str]:
        """Why the old index cannot be updated in place (empty list: it can)."""
        old, cfg = self.old, self.cfg
        if old is None:
            return []
        reasons = []
        if old.model == self.model_id and old.dim != self.dim and not cfg.full:
            raise DimensionMismatchError(
                f"{self.index_dir}: model {self.model_id} now has dimension {self.dim}, manifest says "
                f"{old.dim}; run `indexer rebuild --full` to rebuild with it"
            )
        if old.model != self.model_id:
            reasons.append(f"model changed from {old.model} to {self.model_id}")
        if old.precision != self.precision:
            reasons.append(f"precision changed from {old.precision or 'unrecorded'} to {self.precision}")
        if old.chunker != self.chunker_fp:
            reasons.append(f"chunker changed from {old.chunker} to {self.chunker_fp}")
        if old.shard_size != cfg.shard_size:
            reasons.append(f"shard size changed from {old.shard_size} to {cfg.shard_size}")
        if cfg.full:
            reasons.append("--full requested")
        return reasons

    def _choose_factory(self, n_vectors: int) -> tuple[str, bool]:
        cfg = self.cfg
        if cfg.factory != "auto":
            return cfg.factory, False
        proposed = auto_factory(n_vectors, self.dim, cfg.flat_max, cfg.hnsw_min, cfg.pq_min, cfg.sq8_min)
        if self.old is not None and self.old.factory_auto and keep_auto_factory(self.old.factory, proposed):
            return self.old.factory, True
        return proposed, True

    def _same_chunks_as_old(self) -> bool:
        old = self.old
        return old is not None and old.model == self.model_id and old.chunker == self.chunker_fp

    def run(self) -> None:
        from store.reader import check_store, live_ranges

        cfg, summary = self.cfg, self.summary
        reasons = self._compatibility()
        check_store(cfg.store)
        ranges = live_ranges(cfg.store, cfg.shard_size)
        bars = _Bars(_progress_enabled(cfg))
        try:
            need_ratio = not (self._same_chunks_as_old() and self.old is not None and self.old.n_articles)
            needs_train = cfg.factory == "auto" or not new_index(cfg.factory, self.dim).is_trained
            bars.open("planning", len(ranges), "range")
            plans = self.engine.plan(
                self.settings,
                ranges,
                _RATIO_SAMPLE if need_ratio else 0,
                TRAIN_CANDIDATES if needs_train else 0,
                lambda n: bars.tick("planning", n),
            )
            plans = [p for p in plans if p.articles]
            n_articles = sum(p.articles for p in plans)
            summary.articles = n_articles
            if n_articles == 0:
                raise EmptyStoreError(
                    f"{cfg.store}: the store has no article with a title or abstract; nothing to index"
                )
            n_estimate = self._estimate_vectors(plans, n_articles)
            factory, factory_auto = self._choose_factory(n_estimate)
            old = self.old
            if old is not None and old.factory != factory and not reasons:
                reasons.append(f"factory changed from {old.factory} to {factory}")
            summary.factory, summary.full, summary.reasons = factory, old is None or bool(reasons), reasons
            if reasons:
                log.warning("full rebuild: %s", "; ".join(reasons))
            reusable_old = old if (old is not None and not reasons) else None
            # Vectors can come from the old shards when model, precision and chunker are the same and
            # the old codes are exact (Flat storage); --full always embeds afresh.
            vectors_from_old = (
                old is not None
                and self._same_chunks_as_old()
                and old.dim == self.dim
                and old.precision == self.precision
                and not cfg.full
                and exact_codes(old.factory)
            )
            self.settings = Settings(**{**self.settings.__dict__, "vectors_from_old": bool(vectors_from_old)})
            trained_meta = self._trained(factory, plans, n_articles, n_estimate, reusable_old, bars)
            digest_parts = [
                self.model_id,
                str(self.dim),
                self.chunker_fp,
                factory,
                trained_meta.get("trained_sha256") or "",
                f"shard_size={cfg.shard_size}",
                self._generation(),
                f"precision={self.precision}",
            ]
            old_by_number = {e.number: e for e in reusable_old.shards} if reusable_old else {}
            jobs = [
                ShardJob(p.lo // cfg.shard_size, p.lo, p.hi, old_by_number.get(p.lo // cfg.shard_size)) for p in plans
            ]
            published = {e.digest for e in old.shards} if old else set()
            bars.open("indexing", n_articles, "article")
            bars.open("shards", len(jobs), "shard")
            results = self.engine.build(
                self.settings,
                jobs,
                digest_parts,
                published,
                trained_meta.get("trained_file"),
                factory,
                lambda stage, n: bars.tick("indexing" if stage == "embedded" else "shards", n),
            )
        finally:
            bars.close()
        done = [r.entry for r in results]
        for r in results:
            summary.vectors += r.entry.n_vectors
            summary.embedded += r.embedded
            summary.reused += r.reused
            summary.embed_seconds += r.embed_seconds
            if r.state == "kept":
                summary.shards_kept += 1
            else:
                summary.shards_written += 1
        summary.shards_removed = len({e.number for e in old.shards} - {e.number for e in done}) if old else 0
        manifest = Manifest(
            model=self.model_id,
            dim=self.dim,
            chunker=self.chunker_fp,
            faiss_version=_faiss_version(),
            factory=factory,
            factory_auto=factory_auto,
            shard_size=cfg.shard_size,
            shards=done,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            store=str(cfg.store),
            precision=self.precision,
            device=self.device,
            versions=library_versions(),
            **trained_meta,
        )
        self._set_nprobe(manifest, reusable_old, summary)
        ran = {"device": self.device, "precision": self.precision, "versions": manifest.versions}
        write_resolved_config(cfg, self.index_dir, ran)
        write_manifest(self.index_dir, manifest)
        from indexer.cache import EmbeddingCache

        EmbeddingCache(self.index_dir, self.model_id, cfg.cache_every, self.precision).clear()
        remove_unreferenced(self.index_dir, manifest)

    def _estimate_vectors(self, plans: list[RangePlan], n_articles: int) -> int:
        """Chunks the whole store will have, from the old ratio or a hash sample of articles."""
        old = self.old
        if old is not None and self._same_chunks_as_old() and old.n_articles:
            return int(round(n_articles * old.n_vectors / old.n_articles))
        z = np.concatenate([p.ratio_z for p in plans])
        counts = np.concatenate([p.ratio_chunks for p in plans])
        if not len(z):
            return n_articles
        keep = np.argsort(z, kind="stable")[:_RATIO_SAMPLE]
        return int(round(n_articles * int(counts[keep].sum()) / max(len(keep), 1)))

    def _generation(self) -> str:
        """Tells a --full rebuild's files apart from the published ones (same across resumes)."""
        if self.cfg.full and self.old is not None:
            return f"full-after:{self.old.created_at}"
        return ""

    def _trained(
        self,
        factory: str,
        plans: list[RangePlan],
        n_articles: int,
        n_estimate: int,
        old: Manifest | None,
        bars: _Bars,
    ) -> dict[str, Any]:
        """The trained empty index shared by every shard (reused when the factory is unchanged)."""
        import faiss

        if new_index(factory, self.dim).is_trained:
            return {}
        if old is not None and old.factory == factory and old.trained_file:
            path = self.index_dir / old.trained_file
            if path.is_file() and sha256_file(path) == old.trained_sha256:
                return {
                    "trained_file": old.trained_file,
                    "trained_sha256": old.trained_sha256,
                    "quantizer_sha256": old.quantizer_sha256,
                }
        wanted = train_size(factory, n_estimate, self.cfg.train_per_list)
        ratio = max(n_estimate / max(n_articles, 1), 1.0)
        n_pick = min(n_articles, int(wanted / ratio) + 1)
        z = np.concatenate([p.train_z for p in plans])
        pmids = np.concatenate([p.train_pmids for p in plans])
        if n_pick > len(z):
            raise IndexerError(f"training needs {n_pick} articles, more than the {len(z)} candidates kept")
        picked = np.sort(pmids[np.argpartition(z, n_pick - 1)[:n_pick]]) if n_pick < len(z) else np.sort(pmids)
        chosen = []
        for p in plans:
            inside = picked[(picked >= p.lo) & (picked < p.hi)]
            if len(inside):
                chosen.append((p.lo, p.hi, inside))
        bars.open("training sample", len(chosen), "range")
        pieces = self.engine.sample(self.settings, chosen)
        bars.tick("training sample", len(chosen))
        ids = np.concatenate([x.ids for x in pieces])
        vectors = np.concatenate([x.vectors for x in pieces])
        keys = [k for x in pieces for k in x.keys]
        self.summary.embed_seconds += sum(x.embed_seconds for x in pieces)
        take = min(wanted, len(ids))
        positions = (
            np.sort(np.argpartition(hash_z(ids, 2), take - 1)[:take]) if take < len(ids) else np.arange(len(ids))
        )
        sample_keys = [keys[i] for i in positions]
        name_digest = hashlib.sha256("\n".join([factory, self._generation(), *sample_keys]).encode()).hexdigest()[:12]
        path = self.index_dir / f"{TRAINED_PREFIX}{name_digest}.faiss"
        if path.is_file():
            log.info("reusing trained index %s from an earlier run", path.name)
            trained = faiss.read_index(str(path))
        else:
            log.info("training %s on %d vectors", factory, len(positions))
            trained = train(factory, self.dim, vectors[positions], self.use_gpu)
            atomic_write_bytes(path, faiss.serialize_index(trained).tobytes())
        return {
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
            manifest.nprobe, manifest.recall_at_10 = self.engine.measure_recall(
                self.settings, manifest, self.cfg.tune_queries, self.cfg.target_recall, self.cfg.recall_sample
            )
        summary.nprobe, summary.recall = manifest.nprobe, manifest.recall_at_10


def _describe(worker: Any) -> dict[str, Any]:
    return {
        "model": worker.embedder.model_id,
        "dim": worker.embedder.dim,
        "precision": worker.embedder.precision,
        "device": worker.embedder.describe_device(),
        "chunker": worker.chunker.fingerprint,
    }


def measure_recall(
    index_dir: Path,
    manifest: Manifest,
    n_queries: int,
    target: float | None,
    sample: int = 10_000,
    encode: Callable[..., np.ndarray] | None = None,
) -> tuple[int, float]:
    """Recall@10 against exact search over real vectors (see `indexer.recall`)."""
    return _measure_recall(index_dir, manifest, n_queries, target, sample, encode)


def _faiss_version() -> str:
    import faiss

    return str(faiss.__version__)


__all__ = ["PAUSE_ENV", "IndexerError", "RebuildSummary", "chunk_key", "measure_recall", "rebuild"]
