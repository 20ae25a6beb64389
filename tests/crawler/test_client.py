"""The aiohttp client against the local E-utilities server (real HTTP on 127.0.0.1, port 0)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.client import FetchError, fetch_pubmed, fetch_pubmed_sync
from devtools.local_eutils import LocalEutils, load_records, max_in_any_window
from store.schema import validate_article

DATA = Path(__file__).resolve().parents[1] / "data" / "pubmed"
FAST = {"backoff": 0.02, "rate": 50.0, "timeout": 5.0}


@pytest.fixture(scope="module")
def records() -> dict[int, bytes]:
    return load_records([DATA / "biopython", DATA / "metapub", DATA / "tipplerow_pubmed", DATA / "ncbiutils"])


@pytest.fixture
def server(records: dict[int, bytes]) -> Iterator[LocalEutils]:
    with LocalEutils(records) as srv:
        yield srv


def efetches(server: LocalEutils) -> list:
    return [r for r in server.requests() if r.endpoint == "efetch"]


def test_fetches_and_parses_real_records(server: LocalEutils, records: dict[int, bytes]) -> None:
    pmids = sorted(records)
    result = fetch_pubmed_sync(pmids, eutils_url=server.url, batch_size=10, email="me@example.org", **FAST)
    assert sorted({r["pmid"] for r in result.articles}) == pmids
    assert result.missing == []
    for row in result.articles:
        assert validate_article(row) == row and row["source"] == "efetch"
    by_pmid = {r["pmid"]: r for r in result.articles}
    assert by_pmid[27797938]["title"].startswith("Leucocyte telomere length, genetic variants at the TERT gene")
    sent = efetches(server)
    assert len(sent) == -(-len(pmids) // 10)
    assert all(r.method == "POST" and r.tool == "pubmed-pipeline" and r.email == "me@example.org" for r in sent)
    assert sorted(p for r in sent for p in r.ids) == pmids


def test_api_key_sent_but_never_logged(
    server: LocalEutils, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NCBI_API_KEY", "k3y-that-must-stay-secret")
    caplog.set_level(logging.DEBUG)
    server.set_faults({1: "500"})
    result = fetch_pubmed_sync([9997, 12091962], eutils_url=server.url, **FAST)
    assert len(result.articles) == 2
    assert {r.api_key for r in efetches(server)} == {"k3y-that-must-stay-secret"}
    assert "k3y-that-must-stay-secret" not in caplog.text
    assert "retrying" in caplog.text


def test_unknown_pmids_are_asked_again_once_then_reported(server: LocalEutils) -> None:
    pmids = [9997, 12091962, 11748933, 999999991, 999999992]
    result = fetch_pubmed_sync(pmids, eutils_url=server.url, **FAST)
    assert sorted(r["pmid"] for r in result.articles) == [9997, 11748933, 12091962]
    assert result.missing == [999999991, 999999992]
    sent = [r.ids for r in efetches(server)]
    assert sent == [pmids, [999999991, 999999992]]


def test_whole_batch_missing_is_retried_in_smaller_batches(server: LocalEutils) -> None:
    result = fetch_pubmed_sync([999999991, 999999992, 999999993], eutils_url=server.url, **FAST)
    assert result.articles == [] and result.missing == [999999991, 999999992, 999999993]
    assert [r.ids for r in efetches(server)] == [[999999991, 999999992, 999999993], [999999991, 999999992], [999999993]]


@pytest.mark.parametrize("fault", ["500", "502", "503", "truncated", "error_xml", "error_json", "drop", "short"])
def test_recovers_from_fault(server: LocalEutils, records: dict[int, bytes], fault: str) -> None:
    pmids = sorted(records)[:12]
    server.set_faults({1: fault})
    result = fetch_pubmed_sync(pmids, eutils_url=server.url, batch_size=12, **FAST)
    assert sorted(r["pmid"] for r in result.articles) == pmids
    assert result.missing == []
    assert server.faults_served[fault] == 1
    assert len(efetches(server)) == 2


def test_429_honours_retry_after(records: dict[int, bytes]) -> None:
    with LocalEutils(records, faults={1: "429"}, retry_after=0.6) as server:
        result = fetch_pubmed_sync([9997], eutils_url=server.url, **FAST)
        assert [r["pmid"] for r in result.articles] == [9997]
        first, second = efetches(server)
        assert first.status == 429
        assert second.time - first.time >= 0.55


def test_hang_times_out_and_is_retried(records: dict[int, bytes]) -> None:
    with LocalEutils(records, faults={1: "hang"}, hang_seconds=3) as server:
        result = fetch_pubmed_sync([9997, 12091962], eutils_url=server.url, **{**FAST, "timeout": 0.5})
        assert len(result.articles) == 2
        assert [r.fault for r in efetches(server)] == ["hang", None]


def test_never_exceeds_the_rate(records: dict[int, bytes]) -> None:
    pmids = sorted(records)[:16]
    with LocalEutils(records, rate_limit=4) as server:
        result = fetch_pubmed_sync(pmids, eutils_url=server.url, batch_size=2, rate=4, backoff=0.02)
        assert len(result.articles) == 16
        assert server.rate_limited == 0
        times = sorted(r.time for r in efetches(server))
        assert len(times) == 8
        assert max_in_any_window(times) <= 4
        assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.2  # 1/4 s, minus timer slack


def test_gives_up_after_max_attempts(records: dict[int, bytes]) -> None:
    with LocalEutils(records, faults={n: "503" for n in range(1, 10)}) as server:
        with pytest.raises(FetchError, match=r"efetch of 1 PMIDs \(9997..9997\) failed after 3 attempts: .*503"):
            fetch_pubmed_sync([9997], eutils_url=server.url, max_attempts=3, **FAST)
        assert len(efetches(server)) == 3


def test_async_api_and_bad_arguments(server: LocalEutils) -> None:
    result = asyncio.run(fetch_pubmed(["9997", 9997], eutils_url=server.url, **FAST))
    assert [r["pmid"] for r in result.articles] == [9997]
    assert asyncio.run(fetch_pubmed([], eutils_url=server.url)).articles == []
    with pytest.raises(ValueError, match="batch_size"):
        fetch_pubmed_sync([1], eutils_url=server.url, batch_size=0)
    with pytest.raises(ValueError, match="not a PMID"):
        fetch_pubmed_sync([0], eutils_url=server.url)


def test_a_redirect_is_refused_and_nothing_reaches_its_target(records: dict[int, bytes]) -> None:
    from devtools.local_recorder import LocalRecorder

    with LocalRecorder() as target, LocalEutils(records, redirect_to=target.url) as server:
        with pytest.raises(FetchError, match=r"HTTP 307 redirecting to 'http://127\.0\.0\.1:\d+/entrez/eutils/efetch"):
            fetch_pubmed_sync([9997], eutils_url=server.url, api_key="k3y-that-must-stay-home", **FAST)
        assert target.received() == []
        assert [r.api_key for r in efetches(server)] == ["k3y-that-must-stay-home"]


def test_a_billion_second_retry_after_is_capped(records: dict[int, bytes]) -> None:
    with LocalEutils(records, faults={1: "429"}, retry_after=1e9) as server:
        result = fetch_pubmed_sync([9997], eutils_url=server.url, retry_after_max=0.5, **FAST)
        assert [r["pmid"] for r in result.articles] == [9997]
        first, second = efetches(server)
        assert 0.45 <= second.time - first.time < 5


def test_a_gzip_bomb_stops_at_the_read_cap(records: dict[int, bytes]) -> None:
    with (
        LocalEutils(records, fault_all="gzip_bomb") as server,
        pytest.raises(FetchError, match="larger than 1048576 bytes"),
    ):
        fetch_pubmed_sync([9997], eutils_url=server.url, max_bytes=1 << 20, **FAST)


def test_foreign_records_are_dropped_and_unusable_answers_fail(records: dict[int, bytes]) -> None:
    with LocalEutils(records, fault_all="foreign_pmid") as server:
        result = fetch_pubmed_sync([9997, 12091962], eutils_url=server.url, **FAST)
        assert sorted(r["pmid"] for r in result.articles) == [9997, 12091962]
    for kind in ("huge_pmid", "deep"):
        with LocalEutils(records, fault_all=kind) as server, pytest.raises(FetchError, match="MalformedXMLError"):
            fetch_pubmed_sync([9997], eutils_url=server.url, max_attempts=2, **FAST)
    with pytest.raises(ValueError, match="not a PMID"):
        fetch_pubmed_sync([10**20], eutils_url="http://127.0.0.1:9")


def test_the_rate_holds_under_arrival_jitter(records: dict[int, bytes]) -> None:
    pmids = sorted(records)[:24]
    with LocalEutils(records, rate_limit=4, jitter=0.08, seed=3) as server:
        result = fetch_pubmed_sync(pmids, eutils_url=server.url, batch_size=2, rate=4, backoff=0.02, jitter_margin=0.08)
        assert len(result.articles) == 24
        assert server.rate_limited == 0
