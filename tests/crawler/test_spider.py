"""`scrapy crawl pubmed` end to end against the local E-utilities server: inputs and results."""

from __future__ import annotations

import json
from pathlib import Path

from crawl_helpers import raw_pmids, summary, write_ids

from devtools.local_eutils import synthetic_pmids
from eutils.inputs import bioasq_pmids
from eutils.pubmed_xml import parse_efetch
from store.reader import read_articles, stored_pmids

REPO_DATA = Path(__file__).resolve().parents[1] / "data"

UNKNOWN = [99999901, 99999902, 99999903]


def test_pmids_file_stores_exactly_the_known_articles_and_reports_the_rest(eutils, crawl, records, tmp_path):
    server = eutils()
    known = sorted(records)[:25]
    lines = [
        *known[:20],
        f"http://www.ncbi.nlm.nih.gov/pubmed/{known[20]}",
        f"https://pubmed.ncbi.nlm.nih.gov/{known[21]}/",
        "",
        "# a comment",
        *known[22:],
        *UNKNOWN,
        known[0],  # repeated: fetched once
    ]
    ids = write_ids(tmp_path / "ids.txt", lines)
    store = tmp_path / "store"

    done = crawl(server, f"pmids={ids}", store=store)

    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(raw_pmids(store)) == known
    result = summary(store)
    assert result["missing_pmids"] == UNKNOWN
    assert result["stored"] == len(known)
    assert (store / "crawl-missing.txt").read_text().splitlines()[0].startswith(f"{UNKNOWN[0]}\t")
    assert f"not in PubMed 3 [{', '.join(map(str, UNKNOWN))}" in done.stderr
    # Unknown PMIDs are asked for a bounded number of times (PUBMED_FETCH_ROUNDS = 3), not forever.
    for pmid in UNKNOWN:
        assert sum(pmid in r.ids for r in server.requests()) == 3
    assert all(r.method == "POST" and r.endpoint == "efetch" and len(r.ids) <= 10 for r in server.requests())
    # What was stored is what the parser makes of the served records.
    expected = parse_efetch(b"<PubmedArticleSet>" + b"".join(records[p] for p in known) + b"</PubmedArticleSet>")
    table = read_articles(store, columns=["pmid", "title", "abstract", "source"]).to_pylist()
    assert {r["pmid"]: (r["title"], r["abstract"]) for r in table} == {
        a["pmid"]: (a["title"], a["abstract"]) for a in expected.articles
    }
    assert {r["source"] for r in table} == {"efetch"}


def test_bioasq_file_fetches_documents_and_snippet_documents(eutils, crawl, records, tmp_path):
    server = eutils()
    pmids = sorted(records)[-6:]
    questions = {
        "questions": [
            {
                "id": "q1",
                "type": "yesno",
                "body": "Is it?",
                "documents": [f"http://www.ncbi.nlm.nih.gov/pubmed/{p}" for p in pmids[:3]],
                "snippets": [{"document": f"http://www.ncbi.nlm.nih.gov/pubmed/{pmids[3]}", "text": "x"}],
            },
            {
                "id": "q2",
                "type": "yesno",
                "body": "Is it not?",
                "documents": [f"http://www.ncbi.nlm.nih.gov/pubmed/{pmids[4]}"],
                "snippets": [{"document": f"http://www.ncbi.nlm.nih.gov/pubmed/{pmids[5]}", "text": "y"}],
            },
        ]
    }
    path = tmp_path / "bioasq.json"
    path.write_text(json.dumps(questions))
    store = tmp_path / "store"

    done = crawl(server, f"bioasq={path}", store=store)

    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(raw_pmids(store)) == pmids


def test_bioasq_2024_file_with_new_site_urls_fetches_every_cited_pmid(eutils, crawl, records, tmp_path):
    # 2024+ BioASQ files cite https://pubmed.ncbi.nlm.nih.gov/N/; list and summary questions count
    # too, and a snippet without a document adds no PMID.
    bioasq = REPO_DATA / "bioasq" / "yesno-2024.json"
    cited = bioasq_pmids(bioasq)
    assert set(cited) <= set(records)
    server = eutils()
    store = tmp_path / "store"

    done = crawl(server, f"bioasq={bioasq}", store=store)

    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(raw_pmids(store)) == sorted(cited)
    assert summary(store)["requested"] == len(cited) == 17


def test_query_above_9999_hits_is_split_by_pmid_range_and_checked_against_count(eutils, crawl, tmp_path):
    hits = synthetic_pmids(12_345, seed=7)
    server = eutils(synthesize=True, queries={"big query": hits})
    store = tmp_path / "store"

    done = crawl(server, "query=big query", store=store, PUBMED_BATCH_SIZE="1000", PUBMED_FLUSH_ITEMS="5000")

    assert done.returncode == 0, done.stderr[-3000:]
    searches = [r for r in server.requests() if r.endpoint == "esearch"]
    assert searches[0].term == "big query"
    assert len(searches) >= 3 and all("[uid]" in (r.term or "") for r in searches[1:])
    assert sorted(raw_pmids(store)) == hits
    result = summary(store)
    assert result["search_problems"] == []
    assert result["requested"] == len(hits)
    assert "Count 12345" in done.stderr
    assert f"{len(hits)} PMIDs collected (Count {len(hits)})" in done.stderr


def test_rerun_skips_what_the_store_already_has(eutils, crawl, records, tmp_path):
    server = eutils()
    known = sorted(records)[:12]
    store = tmp_path / "store"
    assert crawl(server, f"pmids={write_ids(tmp_path / 'a.txt', known[:6])}", store=store).returncode == 0
    server.reset()

    done = crawl(server, f"pmids={write_ids(tmp_path / 'b.txt', known)}", store=store)

    assert done.returncode == 0, done.stderr[-3000:]
    assert {p for r in server.requests() for p in r.ids} == set(known[6:])
    assert sorted(raw_pmids(store)) == known
    assert stored_pmids(store) == set(known)


def test_usage_errors_are_one_line_and_exit_nonzero(eutils, crawl, tmp_path):
    server = eutils()
    ids = write_ids(tmp_path / "ids.txt", ["123", "not a pmid"])

    none = crawl(server)
    both = crawl(server, f"pmids={ids}", "query=x")
    absent = crawl(server, f"pmids={tmp_path / 'absent.txt'}")
    bad_line = crawl(server, f"pmids={ids}")

    assert none.returncode == 2 and "exactly one of -a pmids=FILE" in none.stderr
    assert both.returncode == 2 and "got -a pmids, -a query" in both.stderr
    assert absent.returncode == 2 and "absent.txt: no such file" in absent.stderr
    assert bad_line.returncode == 1 and f"{ids}:2: not a PMID or PubMed URL: 'not a pmid'" in bad_line.stderr
    for done in (none, both, absent, bad_line):
        assert "Traceback" not in done.stderr
    assert server.requests() == []
    assert not (tmp_path / "store").exists()


def test_settings_module_keeps_scrapy_from_setting_the_pace():
    from crawler import settings

    assert settings.DOWNLOAD_DELAY == 0 and settings.DOWNLOAD_DELAY_JITTER == 0
    assert settings.AUTOTHROTTLE_ENABLED is False and settings.ROBOTSTXT_OBEY is False
    assert settings.PUBMED_BATCH_SIZE >= 200
    assert settings.CONCURRENT_REQUESTS_PER_DOMAIN >= 2 * settings.PUBMED_RATE
    assert Path(settings.__file__).parent.name == "crawler"
