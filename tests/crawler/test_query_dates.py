"""EDirect's date filters of a query crawl: checked up front, sent with every esearch."""

from __future__ import annotations

import pytest
from crawl_helpers import raw_pmids

from crawler.query_dates import DateFilterError, date_filters


def test_date_filters_become_esearch_parameters():
    assert date_filters({}) == {}
    assert date_filters({"mindate": "2020", "maxdate": "2021-3-7", "datetype": "EDAT"}) == {
        "mindate": "2020",
        "maxdate": "2021/03/07",
        "datetype": "edat",
    }
    assert date_filters({"reldate": "30", "datetype": "mdat"}) == {"reldate": "30", "datetype": "mdat"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"mindate": "2020/13/01", "maxdate": "2021"}, "-a mindate='2020/13/01': month must be in 1..12"),
        ({"mindate": "June 2020", "maxdate": "2021"}, "expected YYYY, YYYY/MM or YYYY/MM/DD"),
        ({"mindate": "2020"}, "-a mindate and -a maxdate go together"),
        ({"mindate": "2022", "maxdate": "2021/12/31"}, "is after -a maxdate"),
        ({"reldate": "-3"}, "-a reldate='-3': expected a whole number of days"),
        ({"reldate": "3", "mindate": "2020", "maxdate": "2021"}, "not both"),
        ({"datetype": "pdat"}, "-a datetype needs -a reldate"),
        ({"reldate": "3", "datetype": "xdat"}, "expected one of pdat, edat, mdat, crdt"),
    ],
)
def test_bad_date_filters_are_refused(args, message):
    with pytest.raises(DateFilterError) as info:
        date_filters(args)
    assert message in str(info.value)


def test_date_filters_reach_the_server_with_every_esearch(eutils, crawl, records, tmp_path):
    hits = sorted(records)[:5]
    server = eutils(queries={"crispr": hits})
    store = tmp_path / "store"

    done = crawl(server, "query=crispr", "mindate=2020/01", "maxdate=2021/06/30", "datetype=edat", store=store)
    relative = crawl(server, "query=crispr", "reldate=7", store=tmp_path / "store2")

    assert done.returncode == 0 and relative.returncode == 0, done.stderr[-2000:] + relative.stderr[-2000:]
    searches = [r for r in server.requests() if r.endpoint == "esearch"]
    assert len(searches) == 2
    assert {k: searches[0].params.get(k) for k in ("mindate", "maxdate", "datetype", "term")} == {
        "mindate": "2020/01",
        "maxdate": "2021/06/30",
        "datetype": "edat",
        "term": "crispr",
    }
    assert searches[1].params.get("reldate") == "7" and "mindate" not in searches[1].params
    assert sorted(raw_pmids(store)) == hits


def test_bad_date_filter_is_a_usage_error_before_any_request(eutils, crawl, tmp_path):
    server = eutils()
    bad = crawl(server, "query=crispr", "mindate=2020-02-30", "maxdate=2021")
    not_a_query = crawl(server, f"pmids={tmp_path / 'ids.txt'}", "reldate=3")
    assert bad.returncode == 2 and "-a mindate='2020-02-30': day is out of range for month" in bad.stderr
    assert not_a_query.returncode == 2 and "it needs -a query, not -a pmids" in not_a_query.stderr
    assert "Traceback" not in bad.stderr + not_a_query.stderr
    assert server.requests() == []
