"""A local file server laid out like NCBI's ``/pubmed/`` baseline and update-file folders.

``/pubmed/baseline/`` and ``/pubmed/updatefiles/`` answer Apache-style index pages (the
HTML NCBI serves: one ``<a href>`` per file, then its date and size), and every listed
``.xml.gz`` and ``.xml.gz.md5`` is served from disk with HTTP Range support (206,
``Content-Range``, 416). Everything binds 127.0.0.1 only; port 0 picks a free port.

Misbehaviour on demand, per file name:

- ``drop_after[name] = k``: the next GET of ``name`` sends its headers and ``k`` body bytes,
  then closes the connection (once);
- ``corrupt``: the body is served with one byte flipped, every time (the ``.md5`` is right);
- ``missing``: the file is listed but answers 404;
- ``no_md5``: no ``.md5`` is listed or served for it;
- ``bandwidth``: bytes per second for the whole server (all connections share it);
- ``send_buffer``: each connection's socket send buffer, in bytes. Over a real link a
  client that stops reading stops taking bandwidth once the TCP window is full; on
  loopback the kernel buffers megabytes per connection, whole small files, so a
  throttled server spends its budget on bytes nobody is reading yet. A send buffer of
  tens of KiB makes a throttled loopback server behave like the link it stands for.

``max_in_flight`` is the most file bodies ever sent at once (connections in use).

Every request is logged (`Served`: path, query, Range header, status, first byte, body
bytes sent), so a test can check that a resumed download asks for the missing bytes only.
Memory: one 64 KiB chunk per connection; files are read from disk as they are sent.

    with BaselineServer({"baseline": [p1, p2], "updatefiles": [p3]}) as server:
        server.url        # "http://127.0.0.1:PORT/pubmed/"
        server.served()   # list[Served]

or from a shell: ``python -m devtools.baseline_server --baseline DIR --updates DIR --bandwidth 8e6``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import html
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

LISTINGS = ("baseline", "updatefiles")
CHUNK = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Served:
    """One request as the server saw it."""

    path: str
    query: dict[str, str]
    range: str | None
    status: int
    start: int = 0
    sent: int = 0
    user_agent: str | None = None


@dataclass
class _File:
    path: Path
    modified: dt.datetime
    md5: str = field(default="")


def _human(size: int) -> str:
    """Sizes as Apache's listing shows them: 60, 4.0K, 19M."""
    if size < 1024:
        return str(size)
    value = float(size)
    for unit in "KMG":
        value /= 1024
        if value < 1024 or unit == "G":
            break
    return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"


class _Throttle:
    """One bandwidth budget for all connections: each chunk books its slot on a shared timeline."""

    def __init__(self, bytes_per_s: float | None) -> None:
        self.rate = bytes_per_s
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, n: int) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + n / self.rate
            until = self._next
        delay = until - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class BaselineServer:
    """NCBI-like baseline / update-file folders on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        files: Mapping[str, Iterable[Path]] | None = None,
        *,
        bandwidth: float | None = None,
        corrupt: Iterable[str] = (),
        missing: Iterable[str] = (),
        no_md5: Iterable[str] = (),
        port: int = 0,
        send_buffer: int | None = None,
    ) -> None:
        self._files: dict[str, dict[str, _File]] = {name: {} for name in LISTINGS}
        self.corrupt = set(corrupt)
        self.missing = set(missing)
        self.no_md5 = set(no_md5)
        self.drop_after: dict[str, int] = {}
        self.throttle = _Throttle(bandwidth)
        self.send_buffer = send_buffer
        self._lock = threading.Lock()
        self._log: list[Served] = []
        self._in_flight = 0
        self.max_in_flight = 0  # the most data-file bodies ever being sent at once
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for listing, paths in (files or {}).items():
            for path in paths:
                self.add(listing, path)

    # ------------------------------------------------------------------ control

    def add(self, listing: str, path: Path, modified: dt.datetime | None = None) -> None:
        """List ``path`` in ``listing`` (``baseline`` or ``updatefiles``), dated ``modified`` (default: its mtime)."""
        if listing not in LISTINGS:
            raise ValueError(f"listing must be one of {LISTINGS}, not {listing!r}")
        path = Path(path)
        stamp = modified or dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
        digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        with self._lock:
            self._files[listing][path.name] = _File(path, stamp, digest)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/pubmed/"

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else 0

    def served(self) -> list[Served]:
        """A copy of the request log."""
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        with self._lock:
            self._log.clear()

    def bytes_sent(self, name: str) -> int:
        """Body bytes of ``name`` (the data file, not its .md5) sent so far, over all requests."""
        return sum(s.sent for s in self.served() if s.path.endswith("/" + name))

    def start(self) -> BaselineServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="baseline-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> BaselineServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ content

    def _log_entry(self, entry: Served) -> None:
        with self._lock:
            self._log.append(entry)

    def listing_page(self, listing: str) -> bytes:
        with self._lock:
            files = sorted(self._files[listing].items())
        rows = ['<a href="/pubmed/">Parent Directory</a>                                       -   ']
        for name, f in files:
            when = f.modified.strftime("%Y-%m-%d %H:%M")
            rows.append(
                f'<a href="{html.escape(name)}">{html.escape(name)}</a>   {when}  {_human(f.path.stat().st_size)}'
            )
            if name not in self.no_md5:
                rows.append(f'<a href="{html.escape(name)}.md5">{html.escape(name)}.md5</a>   {when}  60')
        rows.append('<a href="README.txt">README.txt</a>   2024-12-18 16:09  4.0K')
        body = (
            f"<html>\n<head><title>Index of /pubmed/{listing}</title></head>\n<body>\n"
            f"<h1>Index of /pubmed/{listing}</h1>\n"
            "<pre>Name                        Last modified      Size  </pre><hr><pre>\n"
            + "\n".join(rows)
            + "\n</pre><hr></body>\n</html>\n"
        )
        return body.encode()

    def lookup(self, listing: str, name: str) -> tuple[_File, bool] | None:
        """The file behind ``name`` and whether ``name`` asks for its .md5."""
        with self._lock:
            files = self._files.get(listing, {})
            if name in files:
                return files[name], False
            if name.endswith(".md5") and name[:-4] in files and name[:-4] not in self.no_md5:
                return files[name[:-4]], True
        return None


class _Handler(BaseHTTPRequestHandler):
    owner: BaselineServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        if self.owner.send_buffer:
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.owner.send_buffer)
        super().setup()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        entry = Served(parsed.path, query, self.headers.get("Range"), 200, user_agent=self.headers.get("User-Agent"))
        parts = [p for p in parsed.path.split("/") if p]
        self.owner._log_entry(entry)  # logged on arrival; status and bytes are filled in as it is answered
        try:
            if len(parts) == 2 and parts[0] == "pubmed" and parts[1] in LISTINGS:
                self._send(entry, 200, self.owner.listing_page(parts[1]), "text/html")
            elif len(parts) == 3 and parts[0] == "pubmed" and (found := self.owner.lookup(parts[1], parts[2])):
                file, is_md5 = found
                if is_md5:
                    self._send(entry, 200, f"MD5({file.path.name})= {file.md5}\n".encode(), "text/plain")
                elif file.path.name in self.owner.missing:
                    self._send(entry, 404, b"Not Found\n", "text/plain")
                else:
                    self._send_file(entry, file.path)
            else:
                self._send(entry, 404, b"Not Found\n", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(self, entry: Served, status: int, body: bytes, content_type: str) -> None:
        entry.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        entry.sent = len(body)

    def _send_file(self, entry: Served, path: Path) -> None:
        size = path.stat().st_size
        start, end = 0, size - 1
        status = 200
        if entry.range:
            match = _RANGE.match(entry.range.strip())
            if not match or int(match.group(1)) >= size:
                entry.status = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = int(match.group(1))
            end = min(size - 1, int(match.group(2))) if match.group(2) else size - 1
            status = 206
        entry.status, entry.start = status, start
        self.send_response(status)
        self.send_header("Content-Type", "application/x-gzip")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        with self.owner._lock:
            drop = self.owner.drop_after.pop(path.name, None)
        corrupt = path.name in self.owner.corrupt
        todo = end - start + 1
        with self.owner._lock:
            self.owner._in_flight += 1
            self.owner.max_in_flight = max(self.owner.max_in_flight, self.owner._in_flight)
        try:
            self._send_body(entry, path, start, size, todo, drop, corrupt)
        finally:
            with self.owner._lock:
                self.owner._in_flight -= 1

    def _send_body(
        self, entry: Served, path: Path, start: int, size: int, todo: int, drop: int | None, corrupt: bool
    ) -> None:
        with open(path, "rb") as handle:
            handle.seek(start)
            while todo > 0:
                n = min(CHUNK, todo) if drop is None else min(CHUNK, todo, drop - entry.sent)
                if n <= 0:  # the injected drop: what was sent arrives, then the connection ends
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                block = handle.read(n)
                if corrupt and start + entry.sent <= size // 2 < start + entry.sent + len(block):
                    i = size // 2 - start - entry.sent
                    block = block[:i] + bytes([block[i] ^ 0xFF]) + block[i + 1 :]
                self.owner.throttle.wait(len(block))
                self.wfile.write(block)
                entry.sent += len(block)
                todo -= len(block)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve NCBI-like /pubmed/baseline/ and /pubmed/updatefiles/ folders.")
    parser.add_argument("--baseline", type=Path, help="folder of baseline .xml.gz files")
    parser.add_argument("--updates", type=Path, help="folder of update .xml.gz files")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--bandwidth", type=float, default=None, help="bytes/second for the whole server")
    parser.add_argument("--send-buffer", type=int, default=None, help="socket send buffer per connection, bytes")
    args = parser.parse_args()
    files = {
        listing: sorted(folder.glob("*.xml.gz"))
        for listing, folder in (("baseline", args.baseline), ("updatefiles", args.updates))
        if folder is not None
    }
    with BaselineServer(files, bandwidth=args.bandwidth, port=args.port, send_buffer=args.send_buffer) as server:
        print(server.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
