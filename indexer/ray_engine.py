"""`indexer rebuild --engine ray`: the same rebuild, with the heavy work on a Ray cluster.

The driver plans exactly as the local engine does (chunking, which shards changed,
the hash-based training sample, the manifest), so files, ids and manifest are the same.
What moves to the cluster: the store's Parquet parts are read with Ray Data; chunks are
embedded by a pool of actors, each holding one copy of the model (one GPU per actor when
the cluster has GPUs); each changed shard is filled and written by one of those actors.
The manifest is published by the driver only after every shard file is written. Shard
files are written where ``--index`` points, so on a multi-machine cluster that folder
(and the store) must be on storage every node mounts at the same path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from indexer.config import IndexerConfig
from indexer.embedding import Embedder, Progress
from indexer.errors import IndexerError
from indexer.shards import ShardEntry

log = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise IndexerError("--engine ray needs Ray: pip install 'pubmed-rag[distributed]'") from exc
    return ray


class EmbedWorker:
    """One model copy on a Ray worker: embeds batches and fills and writes shards."""

    def __init__(
        self, model: str, device: str, batch_size: int, threads: int, batch_tokens: int | None, precision: str
    ) -> None:
        self.embedder = Embedder(model, device, batch_size, threads, batch_tokens, precision)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode(texts)

    def write_shard(
        self, index_dir: str, number: int, digest: str, index_bytes: np.ndarray, vectors: np.ndarray, table: pa.Table
    ) -> ShardEntry:
        import faiss

        from indexer.factory import add_vectors
        from indexer.shards import write_shard

        index = faiss.deserialize_index(index_bytes)
        use_gpu = self.embedder.device == "cuda"
        index = add_vectors(index, vectors, table.column("id").to_numpy(), use_gpu, lambda _n: None)
        return write_shard(Path(index_dir), number, digest, index, table)


class RayEngine:
    """Connects to (or starts) a Ray cluster and owns the actor pool for one rebuild."""

    def __init__(self, cfg: IndexerConfig) -> None:
        self.cfg = cfg
        self.ray = _ray()
        self._started = False
        self.actors: list[Any] = []
        self._next_writer = 0
        self._writing: list[Any] = []

    def __enter__(self) -> RayEngine:
        ray = self.ray
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.cfg.ray_address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    configure_logging=False,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.cfg.ray_address or "a new local cluster"
                raise IndexerError(f"cannot connect to Ray at {where}: {exc}") from exc
            self._started = True
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray").setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc: object) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self._started:
            self.ray.shutdown()

    # -- reading ---------------------------------------------------------------------------------

    def read_parts(self, parts: Sequence[Path], columns: list[str]) -> pa.Table:
        """Article parts read in parallel by Ray Data, gathered on the driver."""
        from store.schema import ARTICLE_SCHEMA

        empty = ARTICLE_SCHEMA.empty_table().select(columns)
        if not parts:
            return empty
        dataset = self.ray.data.read_parquet([str(p) for p in parts]).select_columns(columns)
        tables = [t.select(columns) for t in self.ray.get(dataset.to_arrow_refs()) if t.num_rows]
        if not tables:
            return empty
        return pa.concat_tables(tables, promote_options="default").cast(empty.schema)

    # -- embedding -------------------------------------------------------------------------------

    def _placement(self) -> tuple[int, float, float, int]:
        """(actors, CPUs per actor, GPUs per actor, torch threads per actor)."""
        resources = self.ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = max(int(resources.get("CPU", 1)), 1)
        use_gpus = gpus > 0 and self.cfg.device in ("auto", "cuda")
        if self.cfg.device == "cuda" and gpus == 0:
            raise IndexerError("device cuda requested but the Ray cluster has no GPU")
        per_actor = self.cfg.ray_actor_cpus
        if use_gpus:
            return self.cfg.ray_actors or gpus, 1.0, 1.0, per_actor
        return self.cfg.ray_actors or max(cpus // per_actor, 1), float(per_actor), 0.0, per_actor

    def start_actors(self) -> None:
        if self.actors:
            return
        count, cpus, gpus, threads = self._placement()
        device = "cuda" if gpus else "cpu"
        worker = self.ray.remote(EmbedWorker)
        cfg = self.cfg
        self.actors = [
            worker.options(num_cpus=cpus, num_gpus=gpus).remote(
                cfg.model, device, cfg.batch_size, threads, cfg.batch_tokens, cfg.precision
            )
            for _ in range(count)
        ]
        log.info("ray: %d embedding actors (%s, %g CPU each)", count, device, cpus)

    def embedder(self) -> RayEmbedder:
        """Chunk sizing and planning on the driver; encoding on the actors."""
        local = Embedder(self.cfg.model, "cpu", self.cfg.batch_size, self.cfg.threads, self.cfg.batch_tokens)
        return RayEmbedder(self, local)

    def encode(self, texts: Sequence[str], progress: Progress | None) -> np.ndarray:
        from ray.util import ActorPool

        self.start_actors()
        step = self.cfg.ray_batch
        batches = [list(texts[first : first + step]) for first in range(0, len(texts), step)]
        pool = ActorPool(self.actors)
        results: list[np.ndarray] = []
        for vectors in pool.map(lambda actor, batch: actor.encode.remote(batch), batches):
            results.append(vectors)
            if progress is not None:
                progress(len(vectors))
        return np.concatenate(results) if results else np.zeros((0, 0), np.float32)

    # -- writing ---------------------------------------------------------------------------------

    def add_and_write(
        self,
        index_dir: Path,
        number: int,
        digest: str,
        index: Any,
        vectors: np.ndarray,
        table: pa.Table,
        progress: Progress,
    ) -> Callable[[], ShardEntry]:
        """Hand one shard to an actor; the returned call waits for its entry."""
        import faiss

        self.start_actors()
        actor = self.actors[self._next_writer % len(self.actors)]
        self._next_writer += 1
        ref = actor.write_shard.remote(str(index_dir), number, digest, faiss.serialize_index(index), vectors, table)
        # At most one shard per actor in flight: each holds its vectors in the object store.
        self._writing.append(ref)
        if len(self._writing) > len(self.actors):
            _, self._writing = self.ray.wait(self._writing, num_returns=len(self._writing) - len(self.actors))

        def wait() -> ShardEntry:
            try:
                entry: ShardEntry = self.ray.get(ref)
            except self.ray.exceptions.RayError as exc:
                raise IndexerError(f"shard {number:05d}: a Ray worker failed to write it: {exc}") from exc
            progress(len(vectors))
            return entry

        return wait


class RayEmbedder:
    """The `Embedder` interface the rebuild uses, encoding on the engine's actors."""

    def __init__(self, engine: RayEngine, local: Embedder) -> None:
        self.engine = engine
        self.local = local
        self.model_id = local.model_id
        self.dim = local.dim
        self.device = local.device
        self.max_seq_length = local.max_seq_length

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.local.count_tokens(texts)

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.engine.encode(texts, progress)
