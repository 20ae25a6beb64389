"""Downloads NCBI's baseline and update files and loads each into the store as it arrives.

`download_and_load` reads the ``baseline/`` listing (unless ``updates_only``) and the
``updatefiles/`` listing, keeps files listed on or after ``since``, and drops those the
store already marks done (``<store>/_loaded/<name>.done``), so a rerun fetches and loads
only what is new or unfinished. ``workers`` threads (default 3: at most three connections
to NCBI) download files in file order through `crawler.baseline_fetch.Fetcher` into
``<store>/_download/``; the calling thread loads them strictly in file order with
`crawler.baseline_load.Loader` (baseline first, then updates with their deletions), each
as soon as it and every file before it are in. The parsing and writing runs in one
separate process, so that CPU work does not hold the interpreter lock against the
download threads: loading overlaps downloading, and the run takes about as long as the
slower of the two.

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
from pathlib import Path
from typing import Any

from tqdm import tqdm

from crawler.baseline_fetch import Downloaded, Fetcher, Stopped
from crawler.baseline_listing import (
    BASELINE,
    DEFAULT_BASE_URL,
    UPDATES,
    RemoteFile,
    listing_url,
    parse_listing,
    since_filter,
)
from crawler.baseline_load import LOADED_DIR, BaselineError, Loader, load_file
from eutils.request import Identity

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


def _die_with_parent(parent: int) -> None:
    """Linux: the loading process is killed with this one (SIGKILL included), never left loading alone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _warm_up() -> None:
    """Nothing: the loading process has imported `crawler.baseline_load` by now."""


def _publishing(store: Path, name: str) -> bool:
    return (store / LOADED_DIR / f"{name}.publishing.json").exists()


def download_and_load(store: Path, options: DownloadOptions) -> DownloadSummary:
    """Fetch what the store lacks of the listings and load it in file order; see the module docs."""
    started = time.perf_counter()
    store = Path(store)
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
        summary.seconds = time.perf_counter() - started
        return summary
    summary.listed = len(listed)
    todo = [f for f in listed if not (store / LOADED_DIR / f"{f.name}.done").exists()]
    summary.already_loaded = len(listed) - len(todo)
    progress = _Progress(len(todo), sum(f.size_hint or 0 for f in todo), options.progress_interval)
    fetcher.on_bytes = progress.add
    folder = store / DOWNLOAD_DIR
    # Loading is CPU work that would hold the GIL against the download threads: it runs in a
    # process of its own (one, so files still load strictly in order), started now so its
    # imports overlap the first download.
    spawn = multiprocessing.get_context("spawn")
    loading = (
        ProcessPoolExecutor(max_workers=1, mp_context=spawn, initializer=_die_with_parent, initargs=(os.getpid(),))
        if todo
        else None
    )
    if loading is not None:
        loading.submit(_warm_up)

    def load_elsewhere(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
        assert loading is not None
        return loading.submit(load_file, *args, **kwargs).result()

    loader = Loader(store, part_rows=options.part_rows, progress=False, run=load_elsewhere)

    def fetch(remote: RemoteFile) -> Downloaded:
        if _publishing(store, remote.name):  # its parts are staged: the loader finishes it without the file
            return Downloaded(folder / remote.name, None, 0, True)
        result = fetcher.download(remote, folder, require_md5=options.require_md5)
        progress.file_done(loaded=False)
        return result

    try:
        with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="baseline-download") as pool:
            try:
                _run(todo, pool, fetch, loader, summary, options, progress, stop)
            finally:
                stop.set()  # downloads still running stop at their next read and keep their partial files
    finally:
        progress.close()
        if loading is not None:
            loading.shutdown(wait=True, cancel_futures=True)
    summary.bytes = progress.bytes
    summary.loaded = loader.summary.files
    summary.articles = loader.summary.articles
    summary.deletions = loader.summary.deletions
    summary.seconds = time.perf_counter() - started
    return summary


def _run(
    todo: list[RemoteFile],
    pool: ThreadPoolExecutor,
    fetch: Any,
    loader: Loader,
    summary: DownloadSummary,
    options: DownloadOptions,
    progress: _Progress,
    stop: threading.Event,
) -> None:
    """Keep up to ``2 * workers`` files in flight; load each, in order, when it has arrived."""
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
        try:
            result = future.result()
        except Stopped:
            return
        except BaselineError as exc:
            summary.failures.append(str(exc))
            return
        if result.reused and result.fetched == 0 and not _publishing(loader.store, remote.name):
            summary.reused += 1
        elif not result.reused:
            summary.downloaded += 1
        top_up()
        try:
            loader.load(result.path, checked_md5=result.md5)
        except (BaselineError, ValueError, OSError) as exc:  # ValueError: MalformedXMLError, SchemaError
            summary.failures.append(str(exc) if remote.name in str(exc) else f"{remote.name}: {exc}")
            return
        progress.file_done(loaded=True)
        log.info("%s: loaded", remote.name)
        if not options.keep_files:
            result.path.unlink(missing_ok=True)
            result.path.with_name(result.path.name + ".md5").unlink(missing_ok=True)
