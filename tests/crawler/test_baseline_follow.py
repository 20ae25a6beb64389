"""Staging a baseline file while it downloads (`crawler.baseline_follow`) and bandwidth in file order."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from pathlib import Path

from crawl_helpers import REPO

from crawler.baseline_fetch import InOrder
from crawler.baseline_follow import stage_following
from crawler.baseline_load import STAGING_DIR
from store.writer import ARTICLES_DIR

FIXTURE = REPO / "tests" / "data" / "pubmed" / "tipplerow_pubmed" / "pubmed20n0001.xml.gz"
NAME = FIXTURE.name
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _writer(folder: Path, data: bytes, *, finish: str) -> threading.Thread:
    """Writes ``data`` into ``.tmp-NAME`` in slices; then renames it (``finish="rename"``) or deletes it."""
    partial = folder / f".tmp-{NAME}"
    partial.write_bytes(b"")

    def write() -> None:
        with open(partial, "ab") as out:
            for i in range(0, len(data), 4096):
                out.write(data[i : i + 4096])
                out.flush()
                time.sleep(0.002)
        if finish == "rename":
            partial.rename(folder / NAME)
        else:
            partial.unlink()

    return threading.Thread(target=write)


def test_a_file_is_staged_as_it_arrives_hashed_and_not_published(tmp_path):
    folder, store = tmp_path / "dl", tmp_path / "store"
    folder.mkdir()
    data = FIXTURE.read_bytes()
    writer = _writer(folder, data, finish="rename")
    writer.start()

    plan = stage_following(folder, NAME, store, 100, NOW, lambda: False)

    writer.join()
    assert plan is not None
    assert plan["md5"] == hashlib.md5(data, usedforsecurity=False).hexdigest()  # every byte read, none twice
    assert plan["articles"] > 0 and plan["parts"]["articles"]
    assert (store / STAGING_DIR / NAME).is_dir()
    assert not (store / ARTICLES_DIR).exists()  # staged only: nothing is visible until the caller publishes


def test_a_partial_download_that_is_deleted_is_abandoned_and_its_parts_dropped(tmp_path):
    folder, store = tmp_path / "dl", tmp_path / "store"
    folder.mkdir()
    writer = _writer(folder, FIXTURE.read_bytes()[:100_000], finish="delete")  # e.g. an MD5 mismatch
    writer.start()
    # On a loaded machine the writer can finish and delete the file before the follower opens
    # it; the follower then waits for a download that never comes, until it is cancelled.
    deadline = time.monotonic() + 10

    plan = stage_following(folder, NAME, store, 100, NOW, lambda: time.monotonic() > deadline)

    writer.join()
    assert plan is None
    assert not (store / STAGING_DIR / NAME).exists()
    assert not (store / ARTICLES_DIR).exists()


def test_a_cancelled_follower_stops_waiting(tmp_path):
    folder, store = tmp_path / "dl", tmp_path / "store"
    folder.mkdir()
    (folder / f".tmp-{NAME}").write_bytes(FIXTURE.read_bytes()[:50_000])  # a download that never goes on
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()

    assert stage_following(folder, NAME, store, 100, NOW, stop.is_set) is None
    assert not (store / STAGING_DIR / NAME).exists()


def test_in_order_holds_a_later_file_while_an_earlier_one_is_read():
    order = InOrder(["a", "b"])
    stop = threading.Event()
    order.start("b")
    order.start("a")
    passed = threading.Event()
    waiter = threading.Thread(target=lambda: (order.wait_turn("b", stop), passed.set()))
    waiter.start()
    order.wait_turn("a", stop)  # the earliest file never waits

    assert not passed.wait(0.3)  # "b" waits while "a" is being read
    order.done("a")
    assert passed.wait(5)
    waiter.join()
