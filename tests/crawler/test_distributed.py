"""Distributed crawl: several `scrapy crawl pubmed` processes sharing one job through a real Redis."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import time
from pathlib import Path

from crawl_helpers import REPO, crawl_command, crawl_env, raw_pmids, write_ids

from devtools.local_eutils import LocalEutils, max_in_any_window, synthetic_pmids
from store.reader import read_articles

RATE = 3
FINISHED = re.compile(r"pubmed crawl finished: .*?, (\d+) requests in")


def _workers(command: list[str], n: int) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            command, cwd=REPO, env=crawl_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(n)
    ]


def _job_state(url: str) -> dict[str, int]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = [k.decode() for k in client.keys("pubmed:pubmed-*")]
        return {
            "queued": sum(int(client.zcard(k)) for k in keys if k.endswith(":requests")),
            "leased": sum(int(client.zcard(k)) for k in keys if k.endswith(":leases")),
            "leases_taken": sum(int(client.get(k) or 0) for k in keys if k.endswith(":lease_ids")),
        }
    finally:
        client.close()


def _rows_published(store: Path) -> int:
    import pyarrow.parquet as pq

    total = 0
    for part in (store / "articles").glob("part-*.parquet") if (store / "articles").is_dir() else []:
        with contextlib.suppress(OSError):
            total += pq.read_metadata(part).num_rows
    return total


def _arrivals(server: LocalEutils) -> str:
    log = server.requests()
    return " ".join(f"{r.time - log[0].time:.3f}:{r.status}" for r in log)


def test_three_workers_share_one_queue_and_one_rate_limit(eutils, redis_url, tmp_path: Path) -> None:
    pmids = synthetic_pmids(600, seed=11)
    server: LocalEutils = eutils(synthesize=True, rate_limit=RATE)
    store = tmp_path / "store"
    settings = {
        "PUBMED_RATE": str(RATE),
        "PUBMED_BATCH_SIZE": "20",
        "PUBMED_REDIS_URL": redis_url,
    }
    command = crawl_command(server, store, [f"pmids={write_ids(tmp_path / 'ids.txt', pmids)}"], settings)

    workers = _workers(command, 3)
    logs = [w.communicate(timeout=90)[1] for w in workers]

    assert [w.returncode for w in workers] == [0, 0, 0], "\n".join(log[-2000:] for log in logs)
    for text in logs:  # PUBMED_REDIS_URL alone switched the add-on and the shared queue on
        assert "crawler.distributed.DistributedCrawl object" in text and "distributed crawl job pubmed-" in text
    assert sorted(raw_pmids(store)) == pmids  # every PMID exactly once, across all workers' parts
    assert server.rate_limited == 0, _arrivals(server)
    log = server.requests()
    assert all(r.status == 200 for r in log)
    assert max_in_any_window([r.time for r in log]) <= RATE
    assert len(log) == len(pmids) // 20  # each start batch fetched once by one of the workers
    per_worker = [int(m.group(1)) for text in logs for m in FINISHED.finditer(text)]
    assert len(per_worker) == 3 and sum(per_worker) == len(log)
    assert sum(1 for n in per_worker if n > 0) >= 2  # the work was shared
    assert _job_state(redis_url)["queued"] == 0 and _job_state(redis_url)["leased"] == 0


def test_worker_killed_mid_crawl_loses_nothing(eutils, redis_url, tmp_path: Path) -> None:
    pmids = synthetic_pmids(900, seed=12)
    server: LocalEutils = eutils(synthesize=True, rate_limit=RATE)
    store = tmp_path / "store"
    settings = {
        "PUBMED_RATE": str(RATE),
        "PUBMED_BATCH_SIZE": "20",
        "PUBMED_REDIS_URL": redis_url,
        "PUBMED_REDIS_LEASE_SECONDS": "2",
        "PUBMED_FLUSH_SECONDS": "2",
    }
    command = crawl_command(server, store, [f"pmids={write_ids(tmp_path / 'ids.txt', pmids)}"], settings)

    victim, *others = _workers(command, 3)
    try:
        deadline = time.monotonic() + 60
        # Parquet footers only: the server runs in this process, and reading whole parts here would take the
        # GIL from it and delay the arrival times it logs.
        while _rows_published(store) < 200:
            assert time.monotonic() < deadline and victim.poll() is None, "crawl ended before it could be killed"
            time.sleep(0.25)
        held = _job_state(redis_url)["leased"]
        victim.send_signal(signal.SIGKILL)
    finally:
        victim.wait(30)
    logs = [w.communicate(timeout=90)[1] for w in others]

    assert victim.returncode == -signal.SIGKILL
    assert [w.returncode for w in others] == [0, 0], "\n".join(log[-2000:] for log in logs)
    assert held > 0
    stored = read_articles(store, columns=["pmid"]).column("pmid").to_pylist()
    assert sorted(stored) == pmids  # nothing lost
    assert set(raw_pmids(store)) == set(pmids)
    assert server.rate_limited == 0, _arrivals(server)
    assert max_in_any_window([r.time for r in server.requests()]) <= RATE
    state = _job_state(redis_url)
    assert state["queued"] == 0 and state["leased"] == 0
    assert state["leases_taken"] > len(pmids) // 20  # the victim's leased batches expired and were leased again


def test_an_entry_that_is_not_valid_json_is_dropped_and_never_runs(eutils, redis_url, tmp_path: Path) -> None:
    import pickle

    import redis

    marker = tmp_path / "owned"

    class Exploit:
        def __reduce__(self):  # what picklecompat.loads would run
            import os

            return (os.system, (f"touch {marker}",))

    pmids = synthetic_pmids(60, seed=13)
    server: LocalEutils = eutils(synthesize=True)
    store = tmp_path / "store"
    client = redis.Redis.from_url(redis_url)
    client.zadd("pubmed:hostile:requests", {pickle.dumps(Exploit()): -100, b"{not json": -100})
    client.close()
    settings = {"PUBMED_BATCH_SIZE": "20", "PUBMED_REDIS_URL": redis_url, "PUBMED_REDIS_JOB": "hostile"}
    command = crawl_command(server, store, [f"pmids={write_ids(tmp_path / 'ids.txt', pmids)}"], settings)

    (worker,) = _workers(command, 1)
    log = worker.communicate(timeout=90)[1]

    assert worker.returncode == 0, log[-3000:]
    assert not marker.exists()
    assert log.count("dropped an invalid entry of the shared queue pubmed:hostile:requests") == 2
    assert sorted(raw_pmids(store)) == pmids
    assert _job_state(redis_url)["queued"] == 0 and _job_state(redis_url)["leased"] == 0
