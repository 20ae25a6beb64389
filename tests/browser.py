"""Headless Chromium driven over the DevTools protocol, for tests of pages we write.

`open_page(url, screenshot)` loads a page in a fresh Chromium profile, waits for its
load event, saves a PNG screenshot, and returns the console errors, uncaught
exceptions and failed loads it saw, plus the state of every ``<img>``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1200,1600",
]


@dataclass
class PageVisit:
    errors: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    title: str = ""


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


async def _visit(ws_url: str, url: str, screenshot: Path) -> PageVisit:
    visit = PageVisit()
    ids = itertools.count(1)
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        pending: dict[int, asyncio.Future[Any]] = {}
        loaded = asyncio.Event()

        async def reader() -> None:
            async for msg in ws:
                data = json.loads(msg.data)
                if "id" in data and data["id"] in pending:
                    pending.pop(data["id"]).set_result(data.get("result", data.get("error")))
                    continue
                method, params = data.get("method"), data.get("params", {})
                if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                    visit.errors.append("console: " + " ".join(str(a.get("value", a)) for a in params["args"]))
                elif method == "Runtime.exceptionThrown":
                    visit.errors.append("exception: " + params["exceptionDetails"].get("text", ""))
                elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                    visit.errors.append("log: " + params["entry"].get("text", ""))
                elif method == "Page.loadEventFired":
                    loaded.set()

        async def call(method: str, **params: Any) -> Any:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            msg_id = next(ids)
            pending[msg_id] = future
            await ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
            return await asyncio.wait_for(future, 30)

        task = asyncio.create_task(reader())
        for domain in ("Runtime", "Log", "Page"):
            await call(f"{domain}.enable")
        await call("Page.navigate", url=url)
        await asyncio.wait_for(loaded.wait(), 30)
        await asyncio.sleep(0.5)
        script = (
            "JSON.stringify({title: document.title, images: Array.from(document.images).map(i => "
            "({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth}))})"
        )
        result = await call("Runtime.evaluate", expression=script, returnByValue=True)
        state = json.loads(result["result"]["value"])
        visit.title, visit.images = state["title"], state["images"]
        shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        task.cancel()
    return visit


def open_page(url: str, screenshot: Path, timeout: float = 60) -> PageVisit:
    """Load ``url`` in headless Chromium; save a screenshot; report errors and images."""
    binary = chromium_path()
    if binary is None:
        raise RuntimeError("chromium not found: install Debian's chromium (make system-deps)")
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    proc = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])

        async def run() -> PageVisit:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/json/list") as response,
            ):
                targets = await response.json()
            page = next(t for t in targets if t.get("type") == "page")
            return await _visit(page["webSocketDebuggerUrl"], url, screenshot)

        return asyncio.run(asyncio.wait_for(run(), timeout))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
