"""Downloads one baseline or update file, and its ``.md5``, into the store's download folder.

`Fetcher.download` streams the body to ``<folder>/.tmp-<name>`` as it arrives (reads of
up to 1 MiB), hashing as it writes. A dropped connection, a timeout, a short body or a 5xx/429 answer is
retried with backoff, and each retry asks only for the missing bytes (HTTP ``Range``);
a server that ignores the range starts the file over (a new temp file, not the old one
truncated, so a reader of the old bytes sees it replaced). With `InOrder` the bandwidth
goes to the earliest file first. When the body is complete its MD5
is checked against the ``.md5`` NCBI lists beside it: a mismatch throws the bytes away
and downloads again, up to ``tries`` times, then fails. A good file is fsynced and
renamed to ``<folder>/<name>``, with its checksum in ``<name>.md5`` beside it; a file
already there with the right checksum is not fetched again. A 404 (or any other 4xx)
fails at once.

Every request carries the tool name and contact email NCBI asks E-utilities users for
(``tool`` / ``email`` query parameters, ``User-Agent`` and ``From`` headers). Memory:
at most 1 MiB in hand per download; thread-safe, one connection per call.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from crawler.baseline_listing import RemoteFile
from crawler.baseline_load import BaselineError, md5_from_text
from eutils import policy
from eutils.request import Identity
from store.atomic import TEMP_PREFIX, atomic_write_text, fsync_dir

log = logging.getLogger(__name__)
T = TypeVar("T")

READ_SIZE = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class DownloadError(BaselineError):
    """A file could not be downloaded; the message names the file and the reason."""


class Stopped(Exception):
    """The run is stopping (another file failed, or an interrupt): the partial file is kept."""


class _Transient(Exception):
    """Worth another attempt: the partial file is kept and resumed."""

    def __init__(self, why: str, retry_after: float | None = None) -> None:
        super().__init__(why)
        self.retry_after = retry_after


@dataclass
class Downloaded:
    """A verified file on disk; ``fetched`` is how many bytes this call took off the network.

    ``md5``: the checksum it was verified against (None when none was listed);
    ``digest``: the MD5 of its bytes, when it was computed.
    """

    path: Path
    md5: str | None
    fetched: int
    reused: bool
    digest: str | None = None


class InOrder:
    """Gives the bandwidth to the earliest file first: a later file's body waits while an earlier one is read.

    Files are ranked by their position in ``names``. A download counts as reading from its
    response headers to its last body byte; one waiting to retry does not hold the others
    back. Before each read a download waits while a file ranked before it is reading, so
    with a shared bottleneck (one link, one server budget) files complete in order, each at
    about the full rate, and the other connections wait with their requests answered.
    """

    def __init__(self, names: list[str]) -> None:
        self._rank = {name: i for i, name in enumerate(names)}
        self._reading: set[int] = set()
        self._changed = threading.Condition()

    def start(self, name: str) -> None:
        with self._changed:
            self._reading.add(self._rank.get(name, -1))

    def wait_turn(self, name: str, stop: threading.Event) -> None:
        """Return once no file ranked before ``name`` is reading (or the run stops)."""
        rank = self._rank.get(name, -1)
        with self._changed:
            while min(self._reading, default=rank) < rank and not stop.is_set():
                self._changed.wait(0.1)

    def done(self, name: str) -> None:
        """``name`` is no longer being read (complete, cut off, or stopped)."""
        with self._changed:
            self._reading.discard(self._rank.get(name, -1))
            self._changed.notify_all()


class Fetcher:
    """Fetches listing pages and data files; one instance serves every worker thread."""

    def __init__(
        self,
        identity: Identity,
        *,
        timeout: float = 60.0,
        tries: int = 3,
        retries: int = 5,
        backoff: float = 1.0,
        stop: threading.Event | None = None,
        on_bytes: Callable[[int], None] | None = None,
        in_order: InOrder | None = None,
    ) -> None:
        if tries < 1 or retries < 0:
            raise ValueError("tries must be at least 1 and retries at least 0")
        self.identity = identity
        self.timeout = timeout
        self.tries = tries
        self.retries = retries
        self.backoff = backoff
        self.stop = stop or threading.Event()
        self.on_bytes = on_bytes or (lambda n: None)
        self.in_order = in_order

    # ------------------------------------------------------------------ HTTP

    def _open(self, url: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        request = urllib.request.Request(
            self.identity.query_url(url), headers={**self.identity.headers("baseline download"), **(headers or {})}
        )
        try:
            answer: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310
            return answer
        except urllib.error.HTTPError as exc:
            exc.close()
            if policy.is_retryable(exc.code):
                wait = policy.retry_after_seconds(exc.headers.get("Retry-After"))
                raise _Transient(f"HTTP {exc.code}", wait) from None
            if exc.code == 416:
                raise
            raise DownloadError(f"{_name(url)}: HTTP {exc.code} {exc.reason} at {url}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _Transient(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None

    def _retrying(self, what: str, attempt: Callable[[], T], used: list[int]) -> T:
        """Run ``attempt`` until it succeeds, retrying transient failures (``used[0]`` counts retries)."""
        while True:
            if self.stop.is_set():
                raise Stopped(what)
            try:
                return attempt()
            except _Transient as exc:
                used[0] += 1
                if used[0] > self.retries:
                    raise DownloadError(f"{what}: {exc} (gave up after {self.retries} retries)") from None
                wait = exc.retry_after
                if wait is None:
                    wait = policy.backoff_delay(used[0], self.backoff)
                log.info("%s: %s; retry %d/%d in %.1f s", what, exc, used[0], self.retries, wait)
                if self.stop.wait(wait):
                    raise Stopped(what) from None

    def get_text(self, url: str, *, missing_ok: bool = False) -> str | None:
        """A small text document (a listing page, a .md5); ``None`` for a 404 when ``missing_ok``."""

        def attempt() -> str | None:
            try:
                with self._open(url) as answer:
                    return str(answer.read().decode("utf-8", errors="replace"))
            except DownloadError:
                if missing_ok:
                    return None
                raise
            except (OSError, http.client.HTTPException) as exc:
                raise _Transient(str(exc)) from None

        return self._retrying(url, attempt, [0])

    # ------------------------------------------------------------------ files

    def expected_md5(self, remote: RemoteFile, require_md5: bool) -> str | None:
        """The checksum NCBI lists for ``remote``; refuses a file without one when ``require_md5``."""
        text = self.get_text(remote.md5_url, missing_ok=True) if remote.md5_url else None
        if text is None:
            if require_md5:
                why = "could not be fetched" if remote.md5_url else "is not listed"
                raise DownloadError(
                    f"{remote.name}: no checksum ({remote.name}.md5 {why}); not downloaded. "
                    "Rerun with --no-require-md5 to load files without a checksum"
                )
            log.warning("%s: no checksum listed; loading it unchecked (--no-require-md5)", remote.name)
            return None
        return md5_from_text(text, f"{remote.md5_url}")

    def download(self, remote: RemoteFile, folder: Path, *, require_md5: bool = True) -> Downloaded:
        """Fetch ``remote`` into ``folder`` (resuming a partial file), verified; see the module docs."""
        folder.mkdir(parents=True, exist_ok=True)
        want = self.expected_md5(remote, require_md5)
        target = folder / remote.name
        if target.is_file() and (want is None or _file_md5(target) == want):
            log.info("%s: already downloaded", remote.name)
            self._write_md5(target, want)
            return Downloaded(target, want, 0, True, want)
        partial = folder / f"{TEMP_PREFIX}{remote.name}"
        fetched = 0
        retries = [0]
        got = ""
        for attempt in range(1, self.tries + 1):
            received, got = self._retrying(remote.name, lambda: self._stream(remote, partial), retries)
            fetched += received
            if want is None or got == want:
                _publish(partial, target)
                self._write_md5(target, want)
                return Downloaded(target, want, fetched, False, got)
            partial.unlink()
            if attempt < self.tries:
                log.warning(
                    "%s: MD5 mismatch (file %s, .md5 says %s); downloading again (%d/%d)",
                    remote.name,
                    got,
                    want,
                    attempt + 1,
                    self.tries,
                )
        raise DownloadError(
            f"{remote.name}: MD5 mismatch after {self.tries} downloads (last {got}, .md5 says {want}); not loaded"
        )

    def _stream(self, remote: RemoteFile, partial: Path) -> tuple[int, str]:
        """One GET of the bytes ``partial`` lacks; returns (bytes received, MD5 of the whole file).

        Raises `_Transient` when the body is cut short; what arrived stays in ``partial``.
        """
        have = partial.stat().st_size if partial.exists() else 0
        try:
            answer = self._open(remote.url, {"Range": f"bytes={have}-"} if have else None)
        except urllib.error.HTTPError as exc:  # 416: nothing after ``have``; the partial is complete or stale
            if exc.code != 416:
                raise
            if _total(exc.headers.get("Content-Range")) == have:
                return 0, _file_md5(partial)
            partial.unlink()
            raise _Transient("HTTP 416 for a partial file; starting over") from None
        with answer:
            length = answer.headers.get("Content-Length")
            if answer.status == 206:
                match = _CONTENT_RANGE.match(answer.headers.get("Content-Range", ""))
                if not match or int(match.group(1)) != have:
                    raise _Transient(f"unexpected Content-Range {answer.headers.get('Content-Range')!r}")
                log.info("%s: resuming at byte %d", remote.name, have)
                digest, mode = _seed(partial), "ab"
            else:  # the whole file: a first request, or a server that ignored the range
                if have:
                    log.info("%s: server ignored the Range request; starting over", remote.name)
                # a new file, not the old one truncated: a reader of the old bytes sees it replaced
                partial.unlink(missing_ok=True)
                have, mode = 0, "wb"
                digest = hashlib.md5(usedforsecurity=False)
            expected = int(length) if length is not None else None
            with open(partial, mode) as out:
                received = self._read_body(remote.name, answer, out, digest, have)
        if expected is not None and received < expected:
            raise _Transient(f"connection closed after {have + received:,} of {have + expected:,} bytes")
        return received, digest.hexdigest()

    def _read_body(self, name: str, answer: http.client.HTTPResponse, out: Any, digest: Any, have: int) -> int:
        """Copy the body to ``out`` as it arrives, hashing it; returns how many bytes arrived."""
        received = 0
        if self.in_order is not None:
            self.in_order.start(name)
        try:
            while True:
                if self.in_order is not None:
                    self.in_order.wait_turn(name, self.stop)
                if self.stop.is_set():
                    raise Stopped(name)
                block = answer.read1(READ_SIZE)  # what has arrived, up to READ_SIZE: no waiting to fill
                if not block:
                    break
                out.write(block)
                digest.update(block)
                received += len(block)
                self.on_bytes(len(block))
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(f"connection lost after {have + received:,} bytes: {exc}") from None
        finally:
            if self.in_order is not None:
                self.in_order.done(name)
        return received

    def _write_md5(self, target: Path, md5: str | None) -> None:
        if md5 is not None:
            atomic_write_text(target.with_name(target.name + ".md5"), f"MD5({target.name})= {md5}\n")


def _publish(partial: Path, target: Path) -> None:
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, target)
    fsync_dir(target.parent)


def _seed(partial: Path) -> hashlib._Hash:
    """An MD5 of the bytes already in ``partial`` (empty when there is none)."""
    digest = hashlib.md5(usedforsecurity=False)
    if partial.exists():
        with open(partial, "rb") as handle:
            while block := handle.read(READ_SIZE):
                digest.update(block)
    return digest


def _file_md5(path: Path) -> str:
    return _seed(path).hexdigest()


def _total(content_range: str | None) -> int | None:
    if content_range and (match := re.match(r"^bytes \*/(\d+)$", content_range.strip())):
        return int(match.group(1))
    return None


def _name(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]) or url
