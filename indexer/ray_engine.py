"""`indexer rebuild --engine ray`: the same rebuild, with one Ray task per shard range.

The driver lists the ranges from Parquet footers only, schedules the per-range work of
`indexer.ranges` as tasks (plan, training sample, build), trains the quantizer once on
the sampled vectors and publishes the manifest; it never reads article text, and what
comes back from the tasks is counts, hash samples, vectors and shard entries. Each build
task reads its range from the store, dedupes (newest version, deletions), chunks,
tokenises once, embeds, and writes its shard and ids, exactly as the local engine does,
so files, ids and manifest are the same. A worker process keeps its model loaded across
tasks. Tasks read the store and write where ``--index`` points, so on a multi-machine
cluster both folders must be on storage every node mounts at the same path. Memory per
task: one shard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexer.config import IndexerConfig
from indexer.errors import IndexerError
from indexer.manifest import Manifest
from indexer.planning import RangePlan, RangeSample
from indexer.ranges import Settings, ShardJob, ShardResult

log = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise IndexerError("--engine ray needs Ray: pip install 'pubmed-pipeline[distributed]'") from exc
    return ray


def _describe_task(settings: Settings) -> dict[str, Any]:
    from indexer.build import _describe
    from indexer.ranges import worker_for

    return _describe(worker_for(settings))


def _plan_task(settings: Settings, lo: int, hi: int, ratio: int, train_max: int) -> RangePlan:
    from indexer.planning import plan_range

    return plan_range(settings, lo, hi, ratio, train_max)


def _sample_task(settings: Settings, lo: int, hi: int, pmids: np.ndarray) -> RangeSample:
    from indexer.planning import sample_range

    return sample_range(settings, lo, hi, pmids)


def _build_task(
    settings: Settings, job: ShardJob, parts: list[str], published: set[str], trained: str | None, factory: str
) -> list[ShardResult]:
    from indexer.ranges import build_ranges

    return build_ranges(settings, [job], parts, published, trained, factory)


def _recall_task(
    settings: Settings, manifest: Manifest, queries: int, target: float | None, sample: int
) -> tuple[int, float]:
    from indexer.ranges import worker_for
    from indexer.recall import exact_codes, measure_recall

    encode = None if exact_codes(manifest.factory) else worker_for(settings).embedder.encode
    return measure_recall(Path(settings.index), manifest, queries, target, sample, encode)


class RayEngine:
    """Connects to (or starts) a Ray cluster and runs a rebuild's per-range work on it."""

    def __init__(self, cfg: IndexerConfig) -> None:
        self.cfg = cfg
        self.ray = _ray()
        self._started = False
        self.received: list[Any] = []
        """Everything the tasks returned to the driver (kept only when ``keep_received``)."""
        self.keep_received = False

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
        logging.getLogger("ray").setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self.ray.shutdown()

    # -- placement -------------------------------------------------------------------------------

    def _options(self) -> tuple[dict[str, Any], str]:
        """Task resources and the device a task embeds on."""
        resources = self.ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if self.cfg.device == "cuda" and gpus == 0:
            raise IndexerError("device cuda requested but the Ray cluster has no GPU")
        if gpus > 0 and self.cfg.device in ("auto", "cuda"):
            return {"num_cpus": self.cfg.ray_actor_cpus, "num_gpus": 1}, "cuda"
        return {"num_cpus": self.cfg.ray_actor_cpus, "num_gpus": 0}, "cpu"

    def _settings(self, settings: Settings) -> Settings:
        _, device = self._options()
        threads = settings.threads or self.cfg.ray_actor_cpus
        return Settings(**{**settings.__dict__, "device": device, "threads": threads})

    def _run(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], tick: Callable[[Any], Any]) -> list[Any]:
        """Run ``fn(*args)`` for each call as a task (at most ``ray_actors`` at once); results in call order."""
        options, _ = self._options()
        remote = self.ray.remote(fn).options(**options, max_retries=1)
        limit = self.cfg.ray_actors or len(calls) or 1
        refs: list[Any] = []
        pending: dict[Any, int] = {}
        results: list[Any] = [None] * len(calls)
        try:
            for n, args in enumerate(calls):
                while len(pending) >= limit:
                    self._collect(pending, results, tick)
                ref = remote.remote(*args)
                refs.append(ref)
                pending[ref] = n
            while pending:
                self._collect(pending, results, tick)
        except self.ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise IndexerError(f"a Ray task of the rebuild failed: {first}") from exc
        return results

    def _collect(self, pending: dict[Any, int], results: list[Any], tick: Callable[[Any], Any]) -> None:
        ready, _ = self.ray.wait(list(pending), num_returns=1)
        for ref in ready:
            value = self.ray.get(ref)
            if self.keep_received:
                self.received.append(value)
            results[pending.pop(ref)] = value
            tick(value)

    # -- the engine interface used by indexer.build ------------------------------------------------

    def describe(self, settings: Settings) -> dict[str, Any]:
        info: dict[str, Any] = self._run(_describe_task, [(self._settings(settings),)], lambda _v: None)[0]
        return info

    def plan(
        self, settings: Settings, ranges: list[tuple[int, int]], ratio: int, train_max: int, tick: Callable[[int], Any]
    ) -> list[RangePlan]:
        s = self._settings(settings)
        return self._run(_plan_task, [(s, lo, hi, ratio, train_max) for lo, hi in ranges], lambda _v: tick(1))

    def sample(self, settings: Settings, chosen: list[tuple[int, int, np.ndarray]]) -> list[RangeSample]:
        s = self._settings(settings)
        return self._run(_sample_task, [(s, lo, hi, pmids) for lo, hi, pmids in chosen], lambda _v: None)

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
        s = self._settings(settings)

        def done(results: list[ShardResult]) -> None:
            tick("embedded", sum(r.articles for r in results))
            tick("shards", 1)

        calls = [(s, job, digest_parts, published, trained_file, factory) for job in jobs]
        return [r for results in self._run(_build_task, calls, done) for r in results]

    def measure_recall(
        self, settings: Settings, manifest: Manifest, queries: int, target: float | None, sample: int
    ) -> tuple[int, float]:
        calls = [(self._settings(settings), manifest, queries, target, sample)]
        result: tuple[int, float] = self._run(_recall_task, calls, lambda _v: None)[0]
        return result
