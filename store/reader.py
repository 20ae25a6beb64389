"""Reads a store back as one row per PMID: the newest version wins, deletions applied.

"Newest" is the highest PMID version, then the latest ``fetched_at``. A deletion
removes a PMID whose newest row was fetched at or before the deletion was recorded; an
article fetched again after its deletion is live again. Temp files of writers still at
work are never read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.atomic import is_temp_name
from store.schema import ARTICLE_SCHEMA, DELETION_SCHEMA
from store.writer import ARTICLES_DIR, DELETIONS_DIR

_KEY_COLUMNS = ("pmid", "version", "fetched_at")


PartsReader = Callable[[Sequence[Path], list[str]], pa.Table]
"""Reads the given columns of article parts into one table (e.g. in parallel on a cluster)."""


class StoreError(RuntimeError):
    """A store that is missing, empty where content is needed, or unreadable."""


def iter_parts(store_path: str | os.PathLike[str], table: str = ARTICLES_DIR) -> list[Path]:
    """Published Parquet parts of one table (``articles`` or ``deletions``), oldest first."""
    folder = Path(store_path) / table
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.name.startswith("part-") and p.suffix == ".parquet" and not is_temp_name(p.name)
    )


def check_store(store_path: str | os.PathLike[str]) -> Path:
    path = Path(store_path)
    if not path.is_dir():
        raise StoreError(f"{path}: no store here (fill one with `scrapy crawl pubmed` or `python -m crawler.baseline`)")
    if not (path / ARTICLES_DIR).is_dir() and not (path / DELETIONS_DIR).is_dir():
        raise StoreError(f"{path}: not a store (no {ARTICLES_DIR}/ or {DELETIONS_DIR}/ folder)")
    return path


def _read(parts: Sequence[Path], schema: pa.Schema, columns: list[str], expr: pc.Expression | None) -> pa.Table:
    if not parts:
        # not schema.empty_table(): pyarrow imports pandas for it, 0.3 s of a crawl's start-up
        return pa.Table.from_batches([], schema=schema).select(columns)
    import pyarrow.dataset as ds  # here, not at the top: it pulls in pandas (0.3 s of every crawl's start-up)

    try:
        return ds.dataset([str(p) for p in parts], schema=schema, format="parquet").to_table(
            columns=columns, filter=expr
        )
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"{parts[0].parent}: cannot read parts: {exc}") from exc


def _latest_deletions(path: Path, expr: pc.Expression | None) -> pa.Table:
    return latest_deletions(_read(iter_parts(path, DELETIONS_DIR), DELETION_SCHEMA, ["pmid", "deleted_at"], expr))


def latest_deletions(deletions: pa.Table) -> pa.Table:
    """One row per deleted PMID: ``pmid`` and its latest ``deleted_at_max``."""
    return deletions.group_by("pmid").aggregate([("deleted_at", "max")])


def deletion_live_mask(table: pa.Table, latest: pa.Table, dead: bool = False) -> pa.Array | None:
    """Which newest rows of ``table`` survive the deletions `latest_deletions` gave (``dead``:
    which do not); None when no deletion names a row of ``table``."""
    if not latest.num_rows or not table.num_rows:
        return None
    # Look deletions up by position: Table.join cannot carry list<struct> columns.
    found = pc.index_in(table.column("pmid"), value_set=latest.column("pmid"))
    deleted_at = pc.take(latest.column("deleted_at_max"), found)
    live = pc.or_kleene(pc.is_null(deleted_at), pc.greater(table.column("fetched_at"), deleted_at))
    return pc.invert(live) if dead else live


def _newest_rows(table: pa.Table) -> pa.Table:
    """Keep, per PMID, the row with the highest version, then the latest fetched_at."""
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(
        table, sort_keys=[("pmid", "ascending"), ("version", "descending"), ("fetched_at", "descending")]
    )
    table = table.take(order)
    pmids = table.column("pmid").to_numpy()
    first = np.ones(len(pmids), dtype=bool)
    first[1:] = pmids[1:] != pmids[:-1]
    return table.filter(pa.array(first))


def read_articles(
    store_path: str | os.PathLike[str],
    columns: Iterable[str] | None = None,
    pmids: Iterable[int] | None = None,
    read_parts: PartsReader | None = None,
) -> pa.Table:
    """The live articles of a store, one row per PMID, sorted by PMID.

    ``columns`` selects fields (``pmid`` is always included, first); ``pmids`` restricts
    the read to those articles. ``read_parts`` replaces the local read of the article
    parts (not with ``pmids``); newest-wins and deletions are applied here either way.
    """
    path = check_store(store_path)
    wanted = list(ARTICLE_SCHEMA.names) if columns is None else list(dict.fromkeys(["pmid", *columns]))
    unknown = [c for c in wanted if c not in ARTICLE_SCHEMA.names]
    if unknown:
        raise StoreError(f"{path}: unknown article column {unknown[0]!r}")
    expr = None if pmids is None else pc.field("pmid").isin(pa.array(sorted(set(pmids)), pa.int64()))
    read_columns = list(dict.fromkeys([*wanted, *_KEY_COLUMNS]))
    if read_parts is not None and pmids is None:
        rows = read_parts(iter_parts(path), read_columns).select(read_columns)
    else:
        rows = _read(iter_parts(path), ARTICLE_SCHEMA, read_columns, expr)
    if rows.num_rows == 0:  # nothing to sort or delete (and a fresh crawl starts 0.25 s sooner)
        return rows.select(wanted)
    table = _newest_rows(rows)
    live = deletion_live_mask(table, _latest_deletions(path, expr))
    if live is not None:
        table = table.filter(live)
    return table.select(wanted)


def stored_pmids(store_path: str | os.PathLike[str]) -> set[int]:
    """PMIDs that are live in the store (what a resumed crawl need not fetch again)."""
    if not Path(store_path).is_dir():
        return set()
    return set(read_articles(store_path, columns=["pmid"]).column("pmid").to_pylist())


def deleted_pmids(store_path: str | os.PathLike[str]) -> set[int]:
    """Every PMID that a DeleteCitation has named in this store."""
    path = check_store(store_path)
    return set(_latest_deletions(path, None).column("pmid").to_pylist())


# The streaming (PMID-range) reader lives in store.stream; its API is re-exported here.
from store.stream import StoreIndex, iter_live_articles, iter_live_batches, live_ranges  # noqa: E402

__all__ = [
    "PartsReader",
    "StoreError",
    "StoreIndex",
    "check_store",
    "deleted_pmids",
    "iter_live_articles",
    "iter_live_batches",
    "iter_parts",
    "live_ranges",
    "read_articles",
    "stored_pmids",
]
