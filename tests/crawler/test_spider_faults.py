"""`scrapy crawl pubmed` under misbehaviour: rate limits, 429, errors, hangs, kills, secrets."""

from __future__ import annotations

import signal
import subprocess
import time

from crawl_helpers import REPO, crawl_command, crawl_env, raw_pmids, summary, write_ids

from devtools.local_eutils import LocalEutils, max_in_any_window, synthetic_pmids


def test_injected_429_pauses_for_retry_after_and_the_rate_is_never_exceeded(eutils, crawl, records, tmp_path):
    rate = 4
    server = eutils(rate_limit=rate, faults={3: "429"}, retry_after=1.5)
    known = sorted(records)[:60]
    store = tmp_path / "store"

    done = crawl(
        server,
        f"pmids={write_ids(tmp_path / 'ids.txt', known)}",
        store=store,
        PUBMED_RATE=str(rate),
        PUBMED_BATCH_SIZE="5",
    )

    assert done.returncode == 0, done.stderr[-3000:]
    log = server.requests()
    assert server.rate_limited == 0  # the server's own limit never had to refuse us
    assert max_in_any_window([r.time for r in log]) <= rate
    injected = next(i for i, r in enumerate(log) if r.status == 429)
    assert log[injected + 1].time - log[injected].time >= 1.5 - 0.05  # Retry-After honoured by every request
    assert sorted(raw_pmids(store)) == known
    assert summary(store)["http_429"] == 1


def test_server_rate_limit_is_respected_when_the_crawl_rate_is_set_too_high(eutils, crawl, records, tmp_path):
    server = eutils(rate_limit=3)
    known = sorted(records)[:40]
    store = tmp_path / "store"

    done = crawl(
        server, f"pmids={write_ids(tmp_path / 'ids.txt', known)}", store=store, PUBMED_RATE="6", PUBMED_BATCH_SIZE="4"
    )

    assert done.returncode == 0, done.stderr[-3000:]
    # X-RateLimit-Limit: 3 lowers the crawl's rate; at most the first window can be over.
    assert server.rate_limited <= 3
    late = [r.time for r in server.requests()][6:]
    assert max_in_any_window(late) <= 3
    assert sorted(raw_pmids(store)) == known


def test_errors_bad_bodies_short_batches_hangs_and_drops_end_with_every_article_once(eutils, crawl, records, tmp_path):
    faults = {
        1: "500",
        2: "truncated",
        3: "error_xml",
        4: "error_json",
        5: "short",
        6: "drop",
        7: "502",
        8: "hang",
        9: "503",
        11: "short",
        12: "truncated",
    }
    server = eutils(faults=faults, hang_seconds=4)
    known = sorted(records)
    store = tmp_path / "store"

    done = crawl(server, f"pmids={write_ids(tmp_path / 'ids.txt', known)}", store=store, DOWNLOAD_TIMEOUT="1")

    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(raw_pmids(store)) == known  # each exactly once
    result = summary(store)
    assert result["missing_pmids"] == []
    assert result["retries"] >= 9  # one per failed request (short batches are re-requests, not retries)
    assert result["refetched"] > 0
    assert server.faults_served == {k: sum(1 for f in faults.values() if f == k) for k in set(faults.values())}


def test_pmids_a_short_answer_lacked_ride_along_in_a_batch_still_to_be_cut(eutils, crawl, tmp_path):
    pmids = synthetic_pmids(190, seed=5)  # 9 batches of 20 and a last one of 10
    server: LocalEutils = eutils(synthesize=True, faults={2: "short"})
    store = tmp_path / "store"

    done = crawl(
        server,
        f"pmids={write_ids(tmp_path / 'ids.txt', pmids)}",
        store=store,
        PUBMED_RATE="20",
        PUBMED_BATCH_SIZE="20",
        CONCURRENT_REQUESTS="2",  # cut batches only two requests ahead
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(raw_pmids(store)) == sorted(pmids)
    log = server.requests()
    short = log[1]
    assert short.fault == "short" and short.returned < len(short.ids)
    lacked = set(short.ids) & {p for r in log[2:] for p in r.ids}
    assert len(lacked) == len(short.ids) - short.returned  # exactly those were asked for again
    assert len(log) == 10  # no request of their own: the floor ceil(190 / 20)
    assert lacked <= set(log[-1].ids) and len(log[-1].ids) == 10 + len(lacked) <= 20
    assert summary(store)["refetched"] == len(lacked)


def test_sigkill_mid_crawl_then_rerun_stores_every_pmid_exactly_once(eutils, tmp_path):
    pmids = synthetic_pmids(3000, seed=3)
    server: LocalEutils = eutils(synthesize=True)
    ids = write_ids(tmp_path / "ids.txt", pmids)
    store = tmp_path / "store"
    settings = {"PUBMED_RATE": "15", "PUBMED_BATCH_SIZE": "50", "PUBMED_FLUSH_ITEMS": "100"}
    command = crawl_command(server, store, [f"pmids={ids}"], settings)

    first = subprocess.Popen(command, cwd=REPO, env=crawl_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(raw_pmids(store)) < 300:
            assert time.monotonic() < deadline and first.poll() is None, "crawl ended before it could be killed"
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(30)
    kept = raw_pmids(store)
    assert 300 <= len(kept) < len(pmids)
    assert len(set(kept)) == len(kept)
    server.reset()

    second = subprocess.run(command, cwd=REPO, env=crawl_env(), capture_output=True, text=True, timeout=90)

    assert second.returncode == 0, second.stderr[-3000:]
    final = raw_pmids(store)
    assert sorted(final) == pmids  # nothing lost, nothing twice
    refetched = {p for r in server.requests() for p in r.ids}
    assert refetched == set(pmids) - set(kept)  # only what was missing
    assert f"already in {store}" in second.stderr


def test_api_key_is_sent_in_the_post_body_and_never_logged(eutils, crawl, records, tmp_path):
    key = "k3y-0f-the-test-5ecret"
    server = eutils(faults={1: "500", 2: "error_xml", 3: "drop"})
    known = sorted(records)[:20]
    store = tmp_path / "store"

    done = crawl(
        server,
        f"pmids={write_ids(tmp_path / 'ids.txt', known)}",
        store=store,
        env={"NCBI_API_KEY": key},
        LOG_LEVEL="DEBUG",
        NCBI_EMAIL="crawler@example.org",
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert "DEBUG" in done.stderr and "Retrying" in done.stderr
    assert key not in done.stderr and key not in done.stdout
    assert key not in (store / "crawl-summary.json").read_text()
    log = server.requests()
    assert all(r.api_key == key and r.method == "POST" and r.email == "crawler@example.org" for r in log)
    assert all(r.tool == "pubmed-pipeline" for r in log)
    assert sorted(raw_pmids(store)) == known
