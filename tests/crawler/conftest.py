"""Fixtures for crawler tests: the local E-utilities server and `scrapy crawl` in a subprocess."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from crawl_helpers import FIXTURES, REPO, crawl_command, crawl_env

from devtools.local_eutils import LocalEutils, load_records


@pytest.fixture(scope="session")
def records() -> dict[int, bytes]:
    """Real PubMed records (PMID -> XML) from the fixture files."""
    found = load_records([FIXTURES])
    assert len(found) >= 30, "fixture records missing from tests/data/pubmed"
    return found


@pytest.fixture
def eutils(records: dict[int, bytes]) -> Iterator[Callable[..., LocalEutils]]:
    """Factory starting a LocalEutils on 127.0.0.1:0; every server is stopped afterwards."""
    servers: list[LocalEutils] = []

    def start(**kwargs: Any) -> LocalEutils:
        server = LocalEutils(kwargs.pop("records", records), **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def crawl(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``scrapy crawl pubmed`` against a server in a subprocess; returns the finished process."""

    def run(
        server: LocalEutils,
        *args: str,
        store: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 90,
        **settings: str,
    ) -> subprocess.CompletedProcess[str]:
        command = crawl_command(server, store or tmp_path / "store", args, settings)
        return subprocess.run(
            command, cwd=REPO, env=crawl_env(env), capture_output=True, text=True, timeout=timeout, check=False
        )

    return run


def _require(module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: {install}")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, stopped afterwards."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server not found: install it with `apt-get install -y redis-server`")
    _require("redis", "pip install redis")
    _require("scrapy_redis", "pip install scrapy-redis")
    import redis

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [server, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(10)
