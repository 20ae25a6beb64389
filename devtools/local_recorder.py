"""A local HTTP server that answers everything and records what reached it (tests of redirects).

Point a hostile E-utilities server's redirect at it (``LocalEutils(redirect_to=...)``)
to prove that nothing, above all no form body with an API key, follows a redirect::

    with LocalRecorder() as target:
        target.url          # "http://127.0.0.1:PORT"
        target.received()   # list[Received]: method, path, headers, body

Only 127.0.0.1 is ever bound. Memory: the log of what it received (bodies cut at 64 KiB).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from types import TracebackType

from aiohttp import web

BODY_KEPT = 64 * 1024


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class LocalRecorder:
    """Answers any request with an empty 200 and records it (see module docs)."""

    def __init__(self) -> None:
        self._log: list[Received] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def received(self) -> list[Received]:
        with self._lock:
            return list(self._log)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.content.read(BODY_KEPT)
        with self._lock:
            self._log.append(Received(request.method, request.path_qs, dict(request.headers), body))
        return web.Response(text="<PubmedArticleSet></PubmedArticleSet>\n", content_type="text/xml")

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def startup() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", 0).start()
            self.port = int(self._runner.addresses[0][1])

        loop.run_until_complete(startup())
        self._started.set()
        loop.run_forever()
        loop.close()

    def start(self) -> LocalRecorder:
        self._thread = threading.Thread(target=self._serve, name="local-recorder", daemon=True)
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("local recorder did not start")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        self._loop = None

    def __enter__(self) -> LocalRecorder:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
