"""`indexer serve`: an HTTP JSON API over one opened index, with the model loaded once.

``POST /search`` takes ``{"queries": [...], "k": 10, "pmids": [...]}`` (``pmids`` one list
for all queries or one list per query) and returns ``{"results": [[hit, ...], ...]}``
with pmid, chunk, score and text per hit; ``POST /indexed`` with ``{"pmids": [...]}``
says which of them have chunks; ``GET /health`` returns the manifest summary and the
model. Requests waiting at the same time are embedded and searched as one batch (one
model call, one FAISS call): the batcher takes every query queued while the previous
batch ran, up to `ServeLimits.batch`, so a lone client is not delayed.

A watcher polls ``manifest.json``; when a rebuild publishes a new one, the new
generation is opened (memory-mapped, cheap) and swapped in. A batch holds the
generation it started on, whose mappings outlive the files a rebuild removes, so
queries in flight finish on the old one. SIGTERM and SIGINT stop accepting, finish
what is in flight and exit 0.

Memory: the model, the opened index (see `indexer.search`) and one batch.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from indexer.errors import IndexerError
from indexer.manifest import MANIFEST_NAME

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeLimits:
    """Bounds on what one request may ask."""

    max_body: int = 1 << 20
    max_queries: int = 64
    max_query_chars: int = 4000
    max_k: int = 100
    max_pmids: int = 10_000
    batch: int = 64


@dataclass
class _Job:
    queries: list[str]
    k: int
    pmids: list[int] | list[list[int]] | None
    future: asyncio.Future[Any]


@dataclass
class Generation:
    """One published manifest, opened."""

    number: int
    index: Any
    stamp: tuple[int, int, int]


@dataclass
class ServerState:
    index_dir: Path
    open_index: Callable[[Path], Any]
    limits: ServeLimits
    token: str | None = None
    reload_seconds: float = 1.0
    generation: Generation | None = None
    queue: asyncio.Queue[_Job] = field(default_factory=asyncio.Queue)
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="search"))
    requests: int = 0
    queries: int = 0
    batches: int = 0


class BadRequest(ValueError):
    """A request the API refuses with 400."""


def manifest_stamp(index_dir: Path) -> tuple[int, int, int]:
    st = (index_dir / MANIFEST_NAME).stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def parse_search(body: Any, limits: ServeLimits) -> tuple[list[str], int, list[int] | list[list[int]] | None]:
    """Check a /search body; raise `BadRequest` naming the field."""
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object with 'queries'")
    unknown = set(body) - {"queries", "k", "pmids"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    queries = body.get("queries")
    if not isinstance(queries, list) or not queries:
        raise BadRequest("'queries' must be a non-empty list of strings")
    if len(queries) > limits.max_queries:
        raise BadRequest(f"'queries' has {len(queries)} items, at most {limits.max_queries} allowed")
    for n, query in enumerate(queries):
        if not isinstance(query, str) or not query.strip():
            raise BadRequest(f"queries[{n}] is empty or not a string")
        if len(query) > limits.max_query_chars:
            raise BadRequest(f"queries[{n}] has {len(query)} characters, at most {limits.max_query_chars} allowed")
    k = body.get("k", 10)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= limits.max_k:
        raise BadRequest(f"'k' must be an integer from 1 to {limits.max_k}")
    pmids = body.get("pmids")
    if pmids is None:
        return queries, k, None
    if not isinstance(pmids, list):
        raise BadRequest("'pmids' must be a list of PMIDs, or one list per query")
    nested = bool(pmids) and all(isinstance(p, list) for p in pmids)
    flat = [p for group in pmids for p in group] if nested else pmids
    if nested and len(pmids) != len(queries):
        raise BadRequest(f"'pmids' has {len(pmids)} lists for {len(queries)} queries")
    if len(flat) > limits.max_pmids:
        raise BadRequest(f"'pmids' has {len(flat)} PMIDs, at most {limits.max_pmids} allowed")
    if not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 1 << 40 for p in flat):
        raise BadRequest("'pmids' must hold positive integers")
    return queries, k, pmids


def _run_batch(index: Any, jobs: list[_Job]) -> list[Any]:
    """Embed every query of ``jobs`` in one call; search the unfiltered ones in one FAISS call."""
    texts = [q for job in jobs for q in job.queries]
    vectors = index.embedder.encode(texts)
    out: list[Any] = [None] * len(jobs)
    first, plain = 0, []
    spans = []
    for n, job in enumerate(jobs):
        spans.append((first, first + len(job.queries)))
        first += len(job.queries)
        if job.pmids is None:
            plain.append(n)
    if plain:
        import numpy as np

        k = max(jobs[n].k for n in plain)
        rows = np.concatenate([np.arange(*spans[n]) for n in plain])
        hits = index.search_vectors(vectors[rows], k)
        at = 0
        for n in plain:
            count = len(jobs[n].queries)
            out[n] = [h[: jobs[n].k] for h in hits[at : at + count]]
            at += count
    for n, job in enumerate(jobs):
        if job.pmids is not None:
            a, b = spans[n]
            out[n] = index.search_vectors(vectors[a:b], job.k, job.pmids)
    return out


async def _batcher(state: ServerState) -> None:
    loop = asyncio.get_running_loop()
    while True:
        jobs = [await state.queue.get()]
        size = len(jobs[0].queries)
        while not state.queue.empty() and size < state.limits.batch:
            job = state.queue.get_nowait()
            jobs.append(job)
            size += len(job.queries)
        jobs = [j for j in jobs if not j.future.done()]
        if not jobs:
            continue
        generation = state.generation
        assert generation is not None
        try:
            results = await loop.run_in_executor(state.executor, _run_batch, generation.index, jobs)
        except Exception as exc:  # a failed batch fails its requests, not the server
            log.exception("search batch failed")
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            continue
        state.batches += 1
        for job, result in zip(jobs, results, strict=True):
            if not job.future.done():
                job.future.set_result((generation.number, result))


async def _watcher(state: ServerState) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(state.reload_seconds)
        current = state.generation
        assert current is not None
        try:
            stamp = manifest_stamp(state.index_dir)
            if stamp == current.stamp:
                continue
            index = await loop.run_in_executor(None, state.open_index, state.index_dir)
        except (OSError, IndexerError) as exc:
            log.warning(
                "%s: new manifest not opened (%s); still serving generation %d", state.index_dir, exc, current.number
            )
            continue
        state.generation = Generation(current.number + 1, index, stamp)
        log.warning("serving generation %d: %d vectors", current.number + 1, len(index))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


@web.middleware
async def _guard(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    state: ServerState = request.app["state"]
    if state.token is not None:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {state.token}".encode()):
            return _error(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)")
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status == 413:
            return _error(413, f"request body larger than {state.limits.max_body} bytes")
        raise


async def _search(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "body is not valid JSON")
    try:
        queries, k, pmids = parse_search(body, state.limits)
    except BadRequest as exc:
        return _error(400, str(exc))
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    await state.queue.put(_Job(queries, k, pmids, future))
    try:
        number, results = await future
    except IndexerError as exc:
        return _error(500, str(exc))
    except ValueError as exc:
        return _error(400, str(exc))
    state.requests += 1
    state.queries += len(queries)
    return _json({"generation": number, "results": [[h.__dict__ for h in hits] for hits in results]})


async def _indexed(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "body is not valid JSON")
    pmids = body.get("pmids") if isinstance(body, dict) else None
    if not isinstance(pmids, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in pmids):
        return _error(400, "'pmids' must be a list of integers")
    if len(pmids) > state.limits.max_pmids:
        return _error(400, f"'pmids' has {len(pmids)} PMIDs, at most {state.limits.max_pmids} allowed")
    generation = state.generation
    assert generation is not None
    loop = asyncio.get_running_loop()
    found = await loop.run_in_executor(state.executor, generation.index.indexed, pmids)
    return _json({"generation": generation.number, "indexed": sorted(found)})


async def _health(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    generation = state.generation
    assert generation is not None
    return _json(
        {
            "status": "ok",
            "generation": generation.number,
            **generation.index.summary(),
            "served": {"requests": state.requests, "queries": state.queries, "batches": state.batches},
        }
    )


def make_app(state: ServerState) -> web.Application:
    app = web.Application(client_max_size=state.limits.max_body, middlewares=[_guard])
    app["state"] = state
    app.router.add_post("/search", _search)
    app.router.add_post("/indexed", _indexed)
    app.router.add_get("/health", _health)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(
    state: ServerState, host: str, port: int, announce: Callable[[str], None], shutdown_seconds: float = 30.0
) -> None:
    """Run until SIGTERM or SIGINT; print the bound URL through ``announce`` once listening."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(make_app(state), shutdown_timeout=shutdown_seconds, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    tasks = [asyncio.create_task(_batcher(state)), asyncio.create_task(_watcher(state))]
    shown = f"[{host}]" if ":" in host else host
    announce(f"listening on http://{shown}:{bound}")
    started = time.perf_counter()
    try:
        await stop.wait()
    finally:
        await site.stop()
        await runner.cleanup()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        state.executor.shutdown(wait=True)
    announce(
        f"stopped after {time.perf_counter() - started:.1f}s: {state.requests} requests, "
        f"{state.queries} queries in {state.batches} batches"
    )


def run_server(
    index_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    device: str = "auto",
    limits: ServeLimits | None = None,
    reload_seconds: float = 1.0,
) -> None:
    """Open the index, load its model once, and serve until signalled."""
    from indexer.embedding import Embedder
    from indexer.search import open_index

    first = open_index(index_dir, device=device)
    embedder = first.embedder
    embedder.encode(["warm up"])

    def reopen(path: Path) -> Any:
        index = open_index(path, device=device)
        same = index.manifest.model == embedder.model_id
        index.use_embedder(embedder if same else Embedder(index.manifest.model, device=device))
        return index

    state = ServerState(index_dir, reopen, limits or ServeLimits(), token=token, reload_seconds=reload_seconds)
    state.generation = Generation(1, first, manifest_stamp(index_dir))
    if not is_loopback(host) and token is None:
        log.warning("serving on %s without --token-file: anyone who can reach it can query", host)

    def announce(line: str) -> None:
        print(line, flush=True)

    asyncio.run(serve(state, host, port, announce))
    sys.stdout.flush()
