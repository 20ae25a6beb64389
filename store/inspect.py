"""What `store stats` and `store verify` compute: counts, ranges, sizes and integrity."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from store.atomic import is_temp_name
from store.reader import check_store, iter_parts, read_articles
from store.schema import ARTICLE_SCHEMA, DELETION_SCHEMA, SCHEMA_VERSION, schema_version_of
from store.writer import ARTICLES_DIR, DELETIONS_DIR


@dataclass
class StoreStats:
    path: str
    schema_version: int
    article_parts: int
    deletion_parts: int
    rows: int
    live_articles: int
    deletions: int
    with_abstract: int
    pmid_min: int | None
    pmid_max: int | None
    bytes_on_disk: int
    by_source: dict[str, int] = field(default_factory=dict)


@dataclass
class VerifyReport:
    path: str
    parts_checked: int = 0
    problems: list[str] = field(default_factory=list)
    duplicate_pmids: list[int] = field(default_factory=list)
    duplicate_rows: int = 0
    leftover_temps: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _disk_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def store_stats(store_path: str | os.PathLike[str]) -> StoreStats:
    path = check_store(store_path)
    article_parts = iter_parts(path, ARTICLES_DIR)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in article_parts)
    live = read_articles(path, columns=["abstract", "source"])
    pmids = live.column("pmid")
    has_abstract = pc.sum(pc.greater(pc.utf8_length(pc.fill_null(live.column("abstract"), "")), 0)).as_py() or 0
    sources = live.column("source").value_counts().to_pylist()
    deletion_parts = iter_parts(path, DELETIONS_DIR)
    deletions = sum(pq.ParquetFile(p).metadata.num_rows for p in deletion_parts)
    return StoreStats(
        path=str(path),
        schema_version=SCHEMA_VERSION,
        article_parts=len(article_parts),
        deletion_parts=len(deletion_parts),
        rows=rows,
        live_articles=live.num_rows,
        deletions=deletions,
        with_abstract=int(has_abstract),
        pmid_min=pc.min(pmids).as_py() if live.num_rows else None,
        pmid_max=pc.max(pmids).as_py() if live.num_rows else None,
        bytes_on_disk=_disk_size(path),
        by_source={item["values"]: item["counts"] for item in sources},
    )


def _check_part(part: Path, expected: pa.Schema, report: VerifyReport) -> pa.Table | None:
    report.parts_checked += 1
    try:
        table = pq.read_table(part)
    except (OSError, pa.ArrowException) as exc:
        report.problems.append(f"{part}: unreadable: {exc}")
        return None
    version = schema_version_of(table.schema)
    if version != SCHEMA_VERSION:
        report.problems.append(f"{part}: schema version {version}, expected {SCHEMA_VERSION}")
    elif not table.schema.remove_metadata().equals(expected.remove_metadata()):
        report.problems.append(f"{part}: columns differ from the article schema")
    return table


def verify_store(store_path: str | os.PathLike[str]) -> VerifyReport:
    """Read every part in full; report unreadable parts, schema drift, duplicates, temps."""
    path = check_store(store_path)
    report = VerifyReport(path=str(path))
    keys: list[pa.Table] = []
    for part in iter_parts(path, ARTICLES_DIR):
        table = _check_part(part, ARTICLE_SCHEMA, report)
        if table is not None and report.ok:
            keys.append(table.select(["pmid", "version"]))
    for part in iter_parts(path, DELETIONS_DIR):
        _check_part(part, DELETION_SCHEMA, report)
    for folder in (path / ARTICLES_DIR, path / DELETIONS_DIR):
        if folder.is_dir():
            report.leftover_temps += [str(p) for p in folder.iterdir() if is_temp_name(p.name)]
    if keys:
        counts = pa.concat_tables(keys).group_by(["pmid", "version"]).aggregate([("pmid", "count")])
        dup = counts.filter(pc.greater(counts.column("pmid_count"), 1))
        report.duplicate_pmids = sorted(set(dup.column("pmid").to_pylist()))
        report.duplicate_rows = int(pc.sum(pc.subtract(dup.column("pmid_count"), 1)).as_py() or 0)
    return report
