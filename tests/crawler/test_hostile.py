"""`scrapy crawl pubmed` against a hostile or broken E-utilities server, a full disk and bad usage.

Every test bounds its time, and asserts the exit code and that each PMID was either
stored or listed as failed (crawl-failed.txt), never lost silently.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from crawl_helpers import raw_pmids, summary, write_ids

from crawler.spiders.pubmed import InputError, check_arguments
from devtools.local_eutils import max_in_any_window
from devtools.local_recorder import LocalRecorder

SECRET = "k3y-that-must-stay-home"


def failed_pmids(store: Path) -> list[int]:
    path = store / "crawl-failed.txt"
    return sorted(int(line.split("\t")[0]) for line in path.read_text().splitlines()) if path.exists() else []


def run(crawl, server, store: Path, pmids: list[int], tmp_path: Path, limit: float = 60, **settings: str):
    started = time.monotonic()
    done = crawl(server, f"pmids={write_ids(tmp_path / 'ids.txt', pmids)}", store=store, timeout=limit, **settings)
    return done, time.monotonic() - started


def test_arrival_jitter_of_0_to_80_ms_never_shows_the_server_more_than_the_rate(eutils, crawl, records, tmp_path):
    rate = 3
    server = eutils(rate_limit=rate, jitter=0.08, seed=7)
    known = sorted(records)[:32]
    store = tmp_path / "store"

    settings = {"PUBMED_RATE": str(rate), "PUBMED_BATCH_SIZE": "2", "PUBMED_RATE_MARGIN": "0.08"}  # tolerates 80 ms
    done, _ = run(crawl, server, store, known, tmp_path, **settings)

    assert done.returncode == 0, done.stderr[-3000:]
    assert server.rate_limited == 0
    assert max_in_any_window([r.time for r in server.requests()]) <= rate
    assert sorted(raw_pmids(store)) == known


def test_a_redirect_is_a_failed_request_and_nothing_reaches_its_target(eutils, crawl, records, tmp_path):
    known = sorted(records)[:6]
    store = tmp_path / "store"
    with LocalRecorder() as target:
        server = eutils(redirect_to=target.url)
        done, seconds = run(crawl, server, store, known, tmp_path, env={"NCBI_API_KEY": SECRET})
        assert target.received() == []  # not even a GET: no body, no key went there
    assert done.returncode == 1, done.stderr[-3000:]
    assert seconds < 60
    assert f"redirects to '{target.url}/entrez/eutils/efetch.fcgi'" in done.stderr
    assert raw_pmids(store) == [] and failed_pmids(store) == known
    assert "not in PubMed 0, failed 6" in done.stderr
    assert SECRET not in done.stderr
    assert {r.api_key for r in server.requests()} == {SECRET}


def test_retry_after_of_a_billion_seconds_is_capped(eutils, crawl, records, tmp_path):
    server = eutils(faults={1: "429"}, retry_after=1e9)
    known = sorted(records)[:6]
    store = tmp_path / "store"

    done, seconds = run(crawl, server, store, known, tmp_path, PUBMED_RETRY_AFTER_MAX="1.5")

    assert done.returncode == 0, done.stderr[-3000:]
    assert seconds < 40
    assert "Retry-After '1000000000' is out of range; using 1.5" in done.stderr
    assert sorted(raw_pmids(store)) == known
    first, second, *_ = server.requests()
    assert first.status == 429 and 1.4 <= second.time - first.time < 10


def test_records_nobody_asked_for_are_dropped(eutils, crawl, records, tmp_path):
    server = eutils(fault_all="foreign_pmid")
    known = sorted(records)[:8]
    store = tmp_path / "store"

    done, _ = run(crawl, server, store, known, tmp_path, PUBMED_BATCH_SIZE="4")

    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(raw_pmids(store)) == known
    assert "PMIDs the batch did not ask for (dropped)" in done.stderr
    assert summary(store)["unexpected_pmids"] == 2


@pytest.mark.parametrize("kind", ["huge_pmid", "deep"])
def test_an_unusable_answer_is_retried_and_then_a_failure_never_a_silent_loss(eutils, crawl, records, tmp_path, kind):
    known = sorted(records)[:8]
    once = eutils(faults={1: kind})
    store = tmp_path / "once"
    done, _ = run(crawl, once, store, known, tmp_path, PUBMED_BATCH_SIZE="8")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(raw_pmids(store)) == known

    always = eutils(fault_all=kind)
    store = tmp_path / "always"
    done, seconds = run(crawl, always, store, known, tmp_path, PUBMED_BATCH_SIZE="8")
    assert done.returncode == 1, done.stderr[-3000:]
    assert seconds < 60
    assert raw_pmids(store) == [] and failed_pmids(store) == known
    assert "stored 0, not in PubMed 0, failed 8" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_gzip_bomb_is_refused_at_the_size_cap(eutils, crawl, records, tmp_path):
    server = eutils(fault_all="gzip_bomb")
    known = sorted(records)[:4]
    store = tmp_path / "store"

    done, seconds = run(crawl, server, store, known, tmp_path, PUBMED_FETCH_ROUNDS="1", RETRY_TIMES="1")

    assert done.returncode == 1, done.stderr[-3000:]
    assert seconds < 60
    assert failed_pmids(store) == known
    assert "exceeded DOWNLOAD_MAXSIZE (33554432 B) during decompression" in done.stderr


def test_a_count_that_is_always_too_large_stops_at_the_split_cap(eutils, crawl, tmp_path):
    server = eutils(fault_all="count_too_large", queries={"anything": [1, 2, 3]})
    store = tmp_path / "store"

    started = time.monotonic()
    done = crawl(server, "query=anything", store=store, timeout=60, PUBMED_ESEARCH_MAX_SPLITS="10")

    assert done.returncode == 1, done.stderr[-3000:]
    assert time.monotonic() - started < 60
    assert "needed more than PUBMED_ESEARCH_MAX_SPLITS=10 PMID-range splits" in done.stderr
    assert len(server.requests()) <= 1 + 2 * 10


def test_a_corrupt_store_fails_the_crawl_before_any_request(eutils, crawl, records, tmp_path):
    server = eutils()
    store = tmp_path / "store"
    (store / "articles").mkdir(parents=True)
    (store / "articles" / "part-00000000T000000000000Z-1-deadbeef.parquet").write_bytes(b"not parquet at all")

    done, _ = run(crawl, server, store, sorted(records)[:3], tmp_path)

    assert done.returncode == 1, done.stderr[-3000:]
    assert "cannot read the store" in done.stderr
    assert server.requests() == []


def _mount_small_tmpfs(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_a_full_disk_fails_the_crawl_reports_nothing_stored_and_a_rerun_completes(eutils, crawl, records, tmp_path):
    server = eutils()
    known = sorted(records)[:30]
    disk = tmp_path / "disk"
    store = disk / "store"
    mounted = _mount_small_tmpfs(disk)
    try:
        if mounted:
            store.mkdir()
            filler = disk / "filler"
            try:  # fill the disk, leaving no room for a part
                with open(filler, "wb") as handle:
                    while True:
                        handle.write(b"\0" * 4096)
                        handle.flush()
            except OSError:
                pass
            full = run(crawl, server, store, known, tmp_path)[0]
            filler.unlink()
        else:  # no tmpfs here: every part write fails with ENOSPC instead
            extensions = json.dumps({"tests.crawler.full_disk.FullDisk": 0, "crawler.progress.CrawlProgress": 500})
            full = run(crawl, server, store, known, tmp_path, EXTENSIONS=extensions)[0]

        assert full.returncode == 1, full.stderr[-3000:]
        assert "No space left on device" in full.stderr
        assert "stored 0," in full.stderr  # nothing reported stored that is not
        assert raw_pmids(store) == []

        rerun = run(crawl, server, store, known, tmp_path)[0]
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert sorted(raw_pmids(store)) == known
        assert "stored 30," in rerun.stderr
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=False)


def test_unknown_empty_and_pmid_less_arguments_are_usage_errors(eutils, crawl, tmp_path):
    server = eutils()
    empty = write_ids(tmp_path / "empty.txt", ["# nothing here", ""])
    ids = write_ids(tmp_path / "ids.txt", ["9997"])

    typo = crawl(server, f"pmid={ids}")
    blank = crawl(server, "pmids=")
    nothing = crawl(server, f"pmids={empty}")
    unknown = crawl(server, f"pmids={ids}", "colour=blue")

    assert typo.returncode == 2 and "unknown argument -a pmid" in typo.stderr
    assert blank.returncode == 2 and "argument -a pmids is empty" in blank.stderr
    assert nothing.returncode == 2 and "holds no PMID" in nothing.stderr
    assert unknown.returncode == 2 and "unknown argument -a colour" in unknown.stderr
    assert server.requests() == []
    for done in (typo, blank, nothing, unknown):
        assert "Traceback" not in done.stderr
    check_arguments({"query": "x", "mindate": "2020/01/01", "maxdate": "2021", "reldate": "30", "datetype": "pdat"})
    with pytest.raises(InputError, match="-a mindate is empty"):
        check_arguments({"query": "x", "mindate": " "})


def test_an_unreachable_server_is_a_failure_not_missing_and_email_unset_warns_once(crawl, records, tmp_path):
    class Gone:
        url = "http://127.0.0.1:9/entrez/eutils"  # discard port: nothing listens

    store = tmp_path / "store"
    done = crawl(Gone(), f"pmids={write_ids(tmp_path / 'ids.txt', [9997, 12091962])}", store=store, timeout=60)  # type: ignore[arg-type]

    assert done.returncode == 1, done.stderr[-3000:]
    assert "not in PubMed 0, failed 2" in done.stderr
    assert failed_pmids(store) == [9997, 12091962]
    assert not (store / "crawl-missing.txt").exists()
    assert done.stderr.count("NCBI_EMAIL is not set") == 1
