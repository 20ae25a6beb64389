"""The local E-utilities server answers like NCBI and misbehaves exactly as configured."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from devtools.local_eutils import LocalEutils
from eutils.pubmed_xml import MalformedXMLError, parse_efetch
from eutils.responses import EutilsError, parse_esearch


def call(
    server: LocalEutils, utility: str, *, get: bool = False, **params: object
) -> tuple[int, dict[str, str], bytes]:
    data = urllib.parse.urlencode({"db": "pubmed", **params}).encode()
    url = f"{server.url}/{utility}.fcgi"
    request = urllib.request.Request(f"{url}?{data.decode()}") if get else urllib.request.Request(url, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_efetch_returns_exactly_the_requested_pmids_it_has(eutils, records):
    server = eutils()
    wanted = sorted(records)[:5]
    status, _, body = call(server, "efetch", id=",".join(map(str, [*wanted, 99999999])))
    assert status == 200
    assert sorted(a["pmid"] for a in parse_efetch(body).articles) == wanted
    status, _, body = call(server, "efetch", get=True, id=str(wanted[0]))
    assert [a["pmid"] for a in parse_efetch(body).articles] == [wanted[0]]
    assert parse_efetch(call(server, "efetch", id="99999999")[2]).articles == []
    assert server.requests()[0].ids == [*wanted, 99999999]


def test_synthesized_records_carry_the_requested_pmid(eutils):
    server = eutils(synthesize=True, unavailable=[123456788])
    body = call(server, "efetch", id="123456787,123456788,123456789")[2]
    articles = parse_efetch(body).articles
    assert [a["pmid"] for a in articles] == [123456787, 123456789]
    assert articles[0]["title"] == articles[1]["title"] and articles[0]["title"]


def test_esearch_counts_pages_restricts_by_uid_range_and_caps_retstart(eutils):
    server = eutils(queries={"q": range(1, 20_001)})
    whole = parse_esearch(call(server, "esearch", term="q", retmax=5)[2])
    assert whole.count == 20_000 and whole.ids == [20_000, 19_999, 19_998, 19_997, 19_996]
    part = parse_esearch(call(server, "esearch", term="(q) AND 101:200[uid]", retstart=90, retmax=50)[2])
    assert part.count == 100 and part.ids == list(range(110, 100, -1))
    deep = parse_esearch(call(server, "esearch", term="q", retstart=9990, retmax=100)[2])
    assert len(deep.ids) == 9  # only the first 9,999 can be listed
    with pytest.raises(EutilsError, match="9998"):
        parse_esearch(call(server, "esearch", term="q", retstart=9999)[2])
    assert parse_esearch(call(server, "esearch", term="nothing")[2]).count == 0
    as_json = json.loads(call(server, "esearch", term="q", retmode="json", retmax=2)[2])
    assert as_json["esearchresult"]["count"] == "20000"


def test_rate_limit_answers_429_above_it_with_headers(eutils, records):
    server = eutils(rate_limit=2)
    pmid = str(min(records))
    answers = [call(server, "efetch", id=pmid) for _ in range(3)]
    assert [a[0] for a in answers] == [200, 200, 429]
    assert answers[0][1]["X-RateLimit-Limit"] == "2" and answers[0][1]["X-RateLimit-Remaining"] == "1"
    assert answers[2][1]["Retry-After"] == "1" and b"API rate limit exceeded" in answers[2][2]
    assert server.rate_limited == 1
    time.sleep(1.05)
    assert call(server, "efetch", id=pmid)[0] == 200


def test_faults_by_request_number(eutils, records):
    faults = {1: "429", 2: "503", 3: "truncated", 4: "error_xml", 5: "error_json", 6: "short", 7: "drop", 8: "hang"}
    server = eutils(faults=faults, retry_after=7, hang_seconds=2)
    ids = ",".join(map(str, sorted(records)[:6]))
    status, headers, _ = call(server, "efetch", id=ids)
    assert (status, headers["Retry-After"]) == (429, "7")
    assert call(server, "efetch", id=ids)[0] == 503
    with pytest.raises(MalformedXMLError):
        parse_efetch(call(server, "efetch", id=ids)[2])
    with pytest.raises(EutilsError):
        parse_efetch(call(server, "efetch", id=ids)[2])
    with pytest.raises(EutilsError):
        parse_efetch(call(server, "efetch", id=ids)[2])
    assert len(parse_efetch(call(server, "efetch", id=ids)[2]).articles) == 4  # a third left out
    with pytest.raises((http.client.RemoteDisconnected, urllib.error.URLError, ConnectionError)):
        call(server, "efetch", id=ids)
    started = time.monotonic()
    assert len(parse_efetch(call(server, "efetch", id=ids)[2]).articles) == 6
    assert time.monotonic() - started >= 2
    assert len(parse_efetch(call(server, "efetch", id=ids)[2]).articles) == 6  # faults are one-off
    assert [r.fault for r in server.requests()] == [*faults.values(), None]


def test_random_faults_follow_the_rate_and_seed(eutils, records):
    server = eutils(fault_rate=0.5, fault_kinds=["500"], seed=1)
    statuses = [call(server, "efetch", id=str(min(records)))[0] for _ in range(40)]
    assert 10 <= statuses.count(500) <= 30 and statuses.count(200) == 40 - statuses.count(500)
    with pytest.raises(ValueError, match="unknown fault kind"):
        LocalEutils({}, faults={1: "teapot"})
