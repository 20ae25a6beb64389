"""Downloads NCBI's baseline and update files and loads each into the store as it arrives.

`download_and_load` reads the ``baseline/`` listing (unless ``updates_only``) and the
``updatefiles/`` listing, keeps files listed on or after ``since``, and drops those the
store already marks done (``<store>/_loaded/<name>.done``), so a rerun fetches and loads
only what is new or unfinished. ``workers`` threads (default 3: at most three connections
to NCBI) download files in file order through `crawler.baseline_fetch.Fetcher` into
``<store>/_download/``; the calling thread loads them strictly in file order with
`crawler.baseline_load.Loader` (baseline first, then updates with their deletions), each
as soon as every file before it is in. A file still downloading when its turn comes is
staged as its bytes arrive (`crawler.baseline_follow`) and published only once its
download has verified the same MD5; otherwise the verified file is loaded afresh.
`crawler.baseline_fetch.InOrder` gives the bandwidth to the earliest unfinished file, so
files complete in order and the last one's load ends just after its last byte. The
parsing and writing runs in one separate process, so that CPU work does not hold the
interpreter lock against the download threads: loading overlaps downloading, and the
run takes about as long as the slower of the two. That process is forked first thing,
before any thread starts (a process with threads would have to spawn one, which
imports everything afresh: most of a second on 2 cores), and pays its one-off first-use
costs while the listings are read.

The first file that cannot be downloaded or loaded stops the run: no later file is
loaded (order matters for updates and deletions), downloads in flight stop and keep their
partial files for the rerun, and the failure is reported. Downloaded files are deleted
once loaded unless ``keep_files``.

Memory and disk: a 1 MiB buffer per worker in this process, one file's streaming load in
the loading process; at most ``2 * workers`` files are downloaded ahead of the loader.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

from crawler.baseline_fetch import Downloaded, Fetcher, InOrder, Stopped
from crawler.baseline_follow import stage_following
from crawler.baseline_listing import (
    BASELINE,
    DEFAULT_BASE_URL,
    UPDATES,
    RemoteFile,
    listing_url,
    parse_listing,
    since_filter,
)
from crawler.baseline_load import BaselineError, Loader, discard_staged, file_markers, load_file, publish_staged
from eutils.request import Identity
from store.writer import warm_up

log = logging.getLogger(__name__)

DOWNLOAD_DIR = "_download"


@dataclass
class DownloadOptions:
    """What to fetch and how; the CLI's flags."""

    identity: Identity
    base_url: str = DEFAULT_BASE_URL
    since: dt.date | None = None
    updates_only: bool = False
    workers: int = 3
    keep_files: bool = False
    require_md5: bool = True
    tries: int = 3
    retries: int = 5
    timeout: float = 60.0
    backoff: float = 1.0
    part_rows: int = 10_000
    progress_interval: float = 10.0


@dataclass
class DownloadSummary:
    """What one `download_and_load` run did."""

    listed: int = 0
    already_loaded: int = 0
    downloaded: int = 0
    reused: int = 0
    bytes: int = 0
    loaded: int = 0
    articles: int = 0
    deletions: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0
        reused = f", {self.reused} found on disk" if self.reused else ""
        return (
            f"baseline download: {self.listed} files listed, {self.already_loaded} already loaded; "
            f"{self.downloaded} downloaded ({self.bytes / 1e6:,.1f} MB, {rate:.1f} MB/s){reused}; "
            f"{self.loaded} loaded: {self.articles:,} articles added or updated, "
            f"{self.deletions:,} deletions applied; {len(self.failures)} failures in {self.seconds:.1f} s"
        )


class _Progress:
    """Files and bytes so far, MB/s and ETA: a bar on a terminal, else a log line every ``interval``."""

    def __init__(self, files: int, bytes_hint: int, interval: float) -> None:
        self.files = files
        self.bytes_hint = bytes_hint
        self.downloaded = self.loaded = self.bytes = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.bar: tqdm[Any] = tqdm(
            total=bytes_hint or None,
            unit="B",
            unit_scale=True,
            desc="download",
            disable=not sys.stderr.isatty(),
            leave=False,
        )
        self._timer: threading.Thread | None = None
        if self.bar.disable and interval > 0:
            self._timer = threading.Thread(target=self._tick, args=(interval,), daemon=True, name="baseline-progress")
            self._timer.start()

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            self.bar.update(n)

    def file_done(self, *, loaded: bool) -> None:
        with self._lock:
            if loaded:
                self.loaded += 1
            else:
                self.downloaded += 1
            self.bar.set_postfix_str(f"files {self.downloaded}/{self.files} downloaded, {self.loaded} loaded")

    def line(self) -> str:
        with self._lock:
            elapsed = max(1e-9, time.monotonic() - self.started)
            rate = self.bytes / elapsed
            left = max(0, self.bytes_hint - self.bytes)
            eta = f"{left / rate:,.0f} s" if rate > 0 and self.bytes_hint else "?"
            return (
                f"download: {self.downloaded}/{self.files} files, {self.loaded} loaded, "
                f"{self.bytes / 1e6:,.1f}/{self.bytes_hint / 1e6:,.1f} MB, {rate / 1e6:.1f} MB/s, ETA {eta}"
            )

    def _tick(self, interval: float) -> None:
        while not self._done.wait(interval):
            log.info("%s", self.line())

    def close(self) -> None:
        self._done.set()
        self.bar.close()


def list_files(fetcher: Fetcher, options: DownloadOptions) -> list[RemoteFile]:
    """The files of the listings to fetch, in load order: baseline by name, then updates by name."""
    files: list[RemoteFile] = []
    for listing in (UPDATES,) if options.updates_only else (BASELINE, UPDATES):
        url = listing_url(options.base_url, listing)
        page = fetcher.get_text(url)
        found = parse_listing(page or "", url, listing)
        log.info("%s: %d files listed", url, len(found))
        files += since_filter(found, options.since)
    return files


_cancel: Any = None  # in the loading process: the Event that tells a follower to give up


def _init_loading(parent: int, cancel: Any) -> None:
    """Set up the loading process: it dies with this one (Linux, SIGKILL included) and knows ``cancel``."""
    global _cancel
    _cancel = cancel
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _cancelled() -> bool:
    return bool(_cancel is not None and _cancel.is_set())


def _publishing(store: Path, name: str) -> bool:
    return file_markers(store, name)[1].exists()


class _LoadingProcess:
    """The one process that parses and writes, so that CPU work does not hold the GIL against the downloads."""

    def __init__(self) -> None:
        # Forked when this process has no other thread (the command line): the child starts in
        # milliseconds with every module already imported. Otherwise (a server thread in a
        # test, a host application) spawned, which is safe with threads but imports afresh.
        fork = sys.platform.startswith("linux") and threading.active_count() == 1
        self.start_method = "fork" if fork else "spawn"
        context = multiprocessing.get_context(self.start_method)
        self.cancel = context.Event()
        self.pool = ProcessPoolExecutor(
            max_workers=1, mp_context=context, initializer=_init_loading, initargs=(os.getpid(), self.cancel)
        )
        # Its one-off first-use costs, paid now while the listings are read (a spawned child also imports afresh).
        self.pool.submit(warm_up)
        log.info("loading process started (%s)", self.start_method)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        self.cancel.set()  # a follower still waiting for bytes gives up
        self.pool.shutdown(wait=True, cancel_futures=True)


def download_and_load(store: Path, options: DownloadOptions) -> DownloadSummary:
    """Fetch what the store lacks of the listings and load it in file order; see the module docs."""
    started = time.perf_counter()
    # Started first, before any thread of ours (the progress timer, the downloads), so that it is
    # forked; it pays its one-off start-up costs while the listings are read.
    loading = _LoadingProcess()
    try:
        summary = _download_listed(Path(store), options, loading)
    finally:
        loading.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _download_listed(store: Path, options: DownloadOptions, loading: _LoadingProcess) -> DownloadSummary:
    summary = DownloadSummary()
    stop = threading.Event()
    fetcher = Fetcher(
        options.identity,
        timeout=options.timeout,
        tries=options.tries,
        retries=options.retries,
        backoff=options.backoff,
        stop=stop,
    )
    try:
        listed = list_files(fetcher, options)
    except BaselineError as exc:
        summary.failures.append(str(exc))
        return summary
    summary.listed = len(listed)
    todo = [f for f in listed if not file_markers(store, f.name)[0].exists()]
    summary.already_loaded = len(listed) - len(todo)
    fetcher.in_order = InOrder([f.name for f in todo])
    progress = _Progress(len(todo), sum(f.size_hint or 0 for f in todo), options.progress_interval)
    fetcher.on_bytes = progress.add
    folder = store / DOWNLOAD_DIR

    def load_elsewhere(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
        record: dict[str, Any] | None = loading.call(load_file, *args, **kwargs)
        return record

    loader = Loader(store, part_rows=options.part_rows, progress=False, run=load_elsewhere)

    def fetch(remote: RemoteFile) -> Downloaded:
        if _publishing(store, remote.name):  # its parts are staged: the loader finishes it without the file
            return Downloaded(folder / remote.name, None, 0, True)
        result = fetcher.download(remote, folder, require_md5=options.require_md5)
        progress.file_done(loaded=False)
        log.info("%s: downloaded and verified (%s bytes fetched)", remote.name, f"{result.fetched:,}")
        return result

    try:
        with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="baseline-download") as pool:
            try:
                _run(todo, pool, fetch, loader, loading, summary, options, progress, stop)
            finally:
                stop.set()  # downloads still running stop at their next read and keep their partial files
    finally:
        progress.close()
    summary.bytes = progress.bytes
    summary.loaded = loader.summary.files
    summary.articles = loader.summary.articles
    summary.deletions = loader.summary.deletions
    return summary


def _run(
    todo: list[RemoteFile],
    pool: ThreadPoolExecutor,
    fetch: Any,
    loader: Loader,
    loading: _LoadingProcess,
    summary: DownloadSummary,
    options: DownloadOptions,
    progress: _Progress,
    stop: threading.Event,
) -> None:
    """Keep up to ``2 * workers`` files in flight; load each, in order, as it arrives."""
    pending: deque[tuple[RemoteFile, Future[Downloaded]]] = deque()
    upcoming: Iterator[RemoteFile] = iter(todo)
    window = 2 * options.workers

    def top_up() -> None:
        while len(pending) < window and not stop.is_set():
            remote = next(upcoming, None)
            if remote is None:
                return
            pending.append((remote, pool.submit(fetch, remote)))

    top_up()
    while pending:
        remote, future = pending.popleft()
        arrived: list[Downloaded] = []
        try:
            if future.done() or _publishing(loader.store, remote.name):
                arrived.append(future.result())
                top_up()
                loader.load(arrived[0].path, checked_md5=arrived[0].md5)
            else:  # still downloading: stage it as it arrives, publish it once verified
                loader.load_with(partial(_load_arriving, remote, future, loader, loading, arrived, top_up))
        except Stopped:
            return
        except (BaselineError, ValueError, OSError) as exc:  # ValueError: MalformedXMLError, SchemaError
            summary.failures.append(str(exc) if remote.name in str(exc) else f"{remote.name}: {exc}")
            return
        result = arrived[0]
        if result.reused and result.fetched == 0 and not _publishing(loader.store, remote.name):
            summary.reused += 1
        elif not result.reused:
            summary.downloaded += 1
        progress.file_done(loaded=True)
        log.info("%s: loaded", remote.name)
        if not options.keep_files:
            result.path.unlink(missing_ok=True)
            result.path.with_name(result.path.name + ".md5").unlink(missing_ok=True)


def _load_arriving(
    remote: RemoteFile,
    future: Future[Downloaded],
    loader: Loader,
    loading: _LoadingProcess,
    arrived: list[Downloaded],
    top_up: Any,
    stamp: dt.datetime,
) -> dict[str, Any] | None:
    """Stage ``remote`` in the loading process while it downloads; publish it if the verified MD5 matches."""
    store, folder = loader.store, loader.store / DOWNLOAD_DIR
    staged = loading.pool.submit(stage_following, folder, remote.name, store, loader.part_rows, stamp, _cancelled)
    try:
        result = future.result()
    except BaseException:
        loading.cancel.set()  # the follower stops waiting for bytes that will not come
        with contextlib.suppress(Exception):
            staged.result()
        loading.cancel.clear()
        raise
    arrived.append(result)
    top_up()
    plan = staged.result()
    if plan is not None and result.digest is not None and plan["md5"] == result.digest:
        plan["md5"] = result.md5
        record: dict[str, Any] = loading.call(publish_staged, store, plan)
        return record
    if plan is not None:  # the bytes it parsed are not the verified file's: never published
        log.info("%s: staged bytes do not match the verified download; loading it again", remote.name)
        loading.call(discard_staged, store, remote.name)
    return loader.run(
        result.path, store, part_rows=loader.part_rows, fetched_at=stamp, checked_md5=result.md5, progress=False
    )
