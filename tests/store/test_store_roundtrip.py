"""Writer and reader: round trip of real records, newest version wins, deletions, bad rows."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from store.reader import StoreError, deleted_pmids, iter_parts, read_articles, stored_pmids
from store.schema import ARTICLE_SCHEMA, SchemaError, validate_article
from store.writer import ArticleWriter

PUBMED = Path(__file__).resolve().parents[1] / "data" / "pubmed"


def _real_records(name: str) -> list[dict]:
    from eutils.pubmed_xml import parse_efetch

    return parse_efetch((PUBMED / name).read_bytes()).articles


def _row(pmid: int, **fields: object) -> dict:
    return {"pmid": pmid, "title": f"title {pmid}", "source": "efetch", **fields}


def test_round_trip_of_real_records(tmp_path: Path) -> None:
    records = _real_records("biopython/pubmed6.xml") + _real_records("metapub/pmid_28731372.xml")
    records += _real_records("ncbiutils/double.xml")
    with ArticleWriter(tmp_path, part_rows=2) as writer:
        writer.write_many(records)
    assert len(iter_parts(tmp_path)) == 2  # 4 records in parts of 2
    table = read_articles(tmp_path)
    assert table.schema.names == ARTICLE_SCHEMA.names
    by_pmid = {row["pmid"]: row for row in table.to_pylist()}
    assert sorted(by_pmid) == sorted(r["pmid"] for r in records)
    for record in records:
        stored = by_pmid[record["pmid"]]
        expected = validate_article(record)
        for key in ("title", "abstract", "abstract_sections", "authors", "mesh_terms", "language", "doi", "pub_year"):
            assert stored[key] == expected[key], key
    # Non-ASCII text survives the trip untouched.
    assert any(any(ord(ch) > 127 for ch in (row["abstract"] or "")) for row in by_pmid.values())


def test_newest_version_wins_then_newest_fetch(tmp_path: Path) -> None:
    early = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    late = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    with ArticleWriter(tmp_path, part_rows=1) as writer:
        writer.write(_row(31383287, version=2, title="v2", fetched_at=early))
        writer.write(_row(31383287, version=1, title="v1 fetched later", fetched_at=late))
        writer.write(_row(31383287, version=3, title="v3", fetched_at=early))
        writer.write(_row(42, title="first fetch", fetched_at=early))
        writer.write(_row(42, title="second fetch", fetched_at=late))
    rows = read_articles(tmp_path, columns=["title", "version"]).to_pylist()
    assert rows == [
        {"pmid": 42, "title": "second fetch", "version": 1},
        {"pmid": 31383287, "title": "v3", "version": 3},
    ]


def test_deletions_apply_to_older_fetches_only(tmp_path: Path) -> None:
    with ArticleWriter(tmp_path) as writer:
        writer.write_many([_row(1), _row(2), _row(3)])
    with ArticleWriter(tmp_path) as writer:
        writer.delete([2, 3, 99], source="baseline")
    assert stored_pmids(tmp_path) == {1}
    assert deleted_pmids(tmp_path) == {2, 3, 99}
    with ArticleWriter(tmp_path) as writer:  # fetched again after its deletion: live again
        writer.write(_row(3, title="back"))
    assert read_articles(tmp_path, columns=["title"]).to_pylist() == [
        {"pmid": 1, "title": "title 1"},
        {"pmid": 3, "title": "back"},
    ]
    # Every column, list<struct> sections included, goes through the deletion filter.
    assert read_articles(tmp_path).column("pmid").to_pylist() == [1, 3]


def test_pmids_filter_and_columns(tmp_path: Path) -> None:
    with ArticleWriter(tmp_path) as writer:
        writer.write_many([_row(n) for n in range(1, 11)])
    table = read_articles(tmp_path, columns=["title"], pmids=[3, 7, 12])
    assert table.to_pylist() == [{"pmid": 3, "title": "title 3"}, {"pmid": 7, "title": "title 7"}]
    with pytest.raises(StoreError, match="unknown article column 'nope'"):
        read_articles(tmp_path, columns=["nope"])


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"pmid": "12", "source": "efetch"}, "pmid"),
        ({"pmid": 12, "source": "efetch", "title": 5}, "title"),
        ({"pmid": 12, "source": "efetch", "pub_year": "2020"}, "pub_year"),
        ({"pmid": 12, "source": "efetch", "authors": "Smith J"}, "authors"),
        ({"pmid": 12, "source": "web"}, "source"),
        ({"pmid": 12, "source": "efetch", "abstract_sections": [{"label": "A"}]}, "abstract_sections[0]"),
        ({"pmid": 12, "source": "efetch", "color": "red"}, "color"),
        ({"pmid": 12, "source": "efetch", "version": 0}, "version"),
    ],
)
def test_bad_rows_rejected_naming_the_field(tmp_path: Path, row: dict, field: str) -> None:
    writer = ArticleWriter(tmp_path)
    with pytest.raises(SchemaError, match=f"'{field}'".replace("[", r"\[").replace("]", r"\]")):
        writer.write(row)
    writer.close()
    assert iter_parts(tmp_path) == []


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store here"):
        read_articles(tmp_path / "absent")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a store"):
        read_articles(tmp_path / "plain")
    assert stored_pmids(tmp_path / "absent") == set()


def test_writer_killed_mid_part_leaves_published_parts_readable(tmp_path: Path) -> None:
    with ArticleWriter(tmp_path) as writer:
        writer.write_many([_row(n) for n in range(1, 6)])
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        import store.writer as w
        real = w.atomic_write
        def slow(path, mode="wb"):
            ctx = real(path, mode)
            handle = ctx.__enter__()
            handle.write(b"PAR1 partial bytes")
            handle.flush()
            Path({str(ready)!r}).write_text("1")
            time.sleep(60)
        w.atomic_write = slow
        writer = w.ArticleWriter({str(tmp_path)!r})
        writer.write_many([{{"pmid": n, "source": "efetch"}} for n in range(100, 200)])
        writer.flush()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert stored_pmids(tmp_path) == {1, 2, 3, 4, 5}
    parts = iter_parts(tmp_path)
    assert len(parts) == 1 and pq.read_table(parts[0]).num_rows == 5


def test_the_first_flush_imports_nothing(tmp_path: Path) -> None:
    """pyarrow's row conversion (it imports pandas, about 0.4 s) is loaded when the writer is made, so the
    first flush of a crawl does not stall its event loop in mid-flight."""
    script = textwrap.dedent(
        f"""
        import sys
        from store.writer import ArticleWriter
        writer = ArticleWriter({str(tmp_path)!r})
        before = set(sys.modules)
        writer.write({{"pmid": 1, "title": "t", "source": "efetch"}})
        writer.flush()
        print(sorted(set(sys.modules) - before))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout
    assert len(read_articles(tmp_path)) == 1
