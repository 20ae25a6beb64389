"""Streams a store's live articles in PMID-range batches, pruning parts by their footers.

`StoreIndex` reads the Parquet footers of every part once and keeps, per row group, only
its part number, PMID min/max and row count (a few numbers: about 30 bytes a row group,
under 1 MB for all of PubMed). A range read then opens only the row groups whose PMID
statistics overlap the range, so its memory is bounded by those row groups (one batch of
``batch_pmids`` PMIDs from parts written PMID-sorted, see `store.writer`), never by the
store. Newest-wins and deletions are applied per batch by the same rules as
`store.reader.read_articles`, which is exact because every row of one PMID falls in the
same batch. Parts written before row groups were sorted read the same, only slower:
their wide row groups overlap many ranges (`store compact` rewrites them sorted).

A part that vanishes while the index is in use (a concurrent `store compact` removed
it after publishing its replacement) makes the index re-read the footers and retry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from store.reader import (
    _KEY_COLUMNS,
    StoreError,
    _newest_rows,
    check_store,
    deletion_live_mask,
    iter_parts,
    latest_deletions,
)
from store.schema import ARTICLE_SCHEMA, DELETION_SCHEMA
from store.writer import ARTICLES_DIR, DELETIONS_DIR

log = logging.getLogger(__name__)

DEFAULT_BATCH_PMIDS = 100_000
_PMID_MIN = 0
_PMID_MAX = 2**63 - 1
_RETRIES = 3
_WIDE_GROUP_SPANS = 8
"""A row group overlapping more sub-ranges than this is worth a `store compact`."""


@dataclass(frozen=True)
class RowGroups:
    """Footer statistics of one table's parts: one entry per row group, as flat arrays."""

    parts: tuple[Path, ...]
    part: np.ndarray  # index into parts
    group: np.ndarray  # row group number inside its part
    lo: np.ndarray  # smallest pmid of the row group
    hi: np.ndarray  # largest pmid of the row group
    rows: np.ndarray

    @property
    def num_rows(self) -> int:
        return int(self.rows.sum())

    def overlapping(self, lo: int, hi: int) -> np.ndarray:
        """Positions of the row groups that may hold a pmid in ``[lo, hi)``."""
        return np.flatnonzero((self.lo < hi) & (self.hi >= lo) & (self.rows > 0))


def _pmid_bounds(file: pq.ParquetFile, group: int) -> tuple[int, int]:
    meta = file.metadata.row_group(group)
    column = meta.column(file.schema_arrow.get_field_index("pmid"))
    stats = column.statistics if column.is_stats_set else None
    if stats is not None and stats.has_min_max:
        return int(stats.min), int(stats.max)
    # A writer without statistics: read this row group's pmids once, a few bytes each.
    pmids = file.read_row_group(group, columns=["pmid"]).column("pmid")
    return int(pc.min(pmids).as_py()), int(pc.max(pmids).as_py())


def read_row_groups(parts: Sequence[Path]) -> RowGroups:
    """Read the footers of ``parts`` (no data, except pmids where statistics are missing)."""
    part, group, lo, hi, rows = [], [], [], [], []
    for number, path in enumerate(parts):
        try:
            file = pq.ParquetFile(path)
            if "pmid" not in file.schema_arrow.names:
                raise StoreError(f"{path}: no pmid column; not a part of this store")
            for index in range(file.metadata.num_row_groups):
                count = file.metadata.row_group(index).num_rows
                first, last = _pmid_bounds(file, index) if count else (_PMID_MAX, _PMID_MIN)
                part.append(number)
                group.append(index)
                lo.append(first)
                hi.append(last)
                rows.append(count)
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"{path}: unreadable part: {exc}") from exc
    return RowGroups(
        parts=tuple(parts),
        part=np.asarray(part, dtype=np.int32),
        group=np.asarray(group, dtype=np.int32),
        lo=np.asarray(lo, dtype=np.int64),
        hi=np.asarray(hi, dtype=np.int64),
        rows=np.asarray(rows, dtype=np.int64),
    )


def _check_width(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def covered_ranges(
    groups: RowGroups, width: int, origin: int = 0, lo: int = _PMID_MIN, hi: int = _PMID_MAX
) -> list[int]:
    """Starts of the ``[s, s + width)`` ranges (``s - origin`` a multiple of ``width``) that
    overlap a row group and ``[lo, hi)``, sorted."""
    keep = groups.overlapping(lo, hi)
    if keep.size == 0:
        return []
    first = (np.maximum(groups.lo[keep], lo) - origin) // width
    last = (np.minimum(groups.hi[keep], hi - 1) - origin) // width
    order = np.argsort(first, kind="stable")
    starts: list[int] = []
    end = -1  # one past the last range number emitted
    for a, b in zip(first[order].tolist(), last[order].tolist(), strict=True):
        a = max(a, end)
        if a <= b:
            starts.extend(origin + n * width for n in range(a, b + 1))
            end = b + 1
    return starts


class StoreIndex:
    """Footer statistics of a store's parts, read once; streams live articles by PMID range.

    Cheap to keep and reuse across many range reads (a rebuild reads one range per shard).
    It sees the parts published when it was made (or last refreshed); parts appended later
    are read by a new index.
    """

    def __init__(self, store_path: str | os.PathLike[str]) -> None:
        self.path = check_store(store_path)
        self.refresh()

    def refresh(self) -> None:
        """Re-list the parts and re-read their footers."""
        for _ in range(_RETRIES):
            try:
                self.articles = read_row_groups(iter_parts(self.path, ARTICLES_DIR))
                self.deletions = read_row_groups(iter_parts(self.path, DELETIONS_DIR))
                return
            except FileNotFoundError:
                continue  # a part removed between listing and opening it: list again
        raise StoreError(f"{self.path}: parts keep vanishing while being listed")

    def live_ranges(self, width: int) -> list[tuple[int, int]]:
        """``[lo, lo + width)`` ranges (``lo`` a multiple of ``width``) that may hold live articles."""
        _check_width("width", width)
        return [(start, start + width) for start in covered_ranges(self.articles, width)]

    def iter_live_batches(
        self,
        lo: int,
        hi: int,
        columns: Sequence[str] | None = None,
        batch_pmids: int = DEFAULT_BATCH_PMIDS,
    ) -> Iterator[pa.Table]:
        """Live articles with ``lo <= pmid < hi`` in PMID order, one table per non-empty
        ``[a, a + batch_pmids)`` sub-range (``a - lo`` a multiple of ``batch_pmids``)."""
        wanted = _wanted_columns(self.path, columns)
        return self._live(self.iter_newest(lo, hi, wanted, batch_pmids), wanted)

    @staticmethod
    def _live(newest: Iterator[tuple[pa.Table, pa.Array | None]], wanted: list[str]) -> Iterator[pa.Table]:
        for table, dead in newest:
            live = table.filter(pc.invert(dead)) if dead is not None else table
            if live.num_rows:
                yield live.select(wanted)

    def iter_live_articles(
        self, width: int, columns: Sequence[str] | None = None, batch_pmids: int = DEFAULT_BATCH_PMIDS
    ) -> Iterator[tuple[int, int, pa.Table]]:
        """Every live article, as ``(lo, hi, batch)`` over `live_ranges`."""
        ranges = self.live_ranges(width)
        wanted = _wanted_columns(self.path, columns)
        _check_width("batch_pmids", batch_pmids)
        return ((lo, hi, batch) for lo, hi in ranges for batch in self.iter_live_batches(lo, hi, wanted, batch_pmids))

    def iter_newest(
        self, lo: int, hi: int, columns: Sequence[str], batch_pmids: int = DEFAULT_BATCH_PMIDS
    ) -> Iterator[tuple[pa.Table, pa.Array | None]]:
        """Per non-empty sub-range: the newest row of each PMID (``columns`` plus the key
        columns) and a mask of the rows a deletion hides (None when no deletion applies)."""
        _check_range(lo, hi)
        _check_width("batch_pmids", batch_pmids)
        return self._newest(lo, hi, list(dict.fromkeys([*columns, *_KEY_COLUMNS])), batch_pmids)

    def _newest(
        self, lo: int, hi: int, read_columns: list[str], batch_pmids: int
    ) -> Iterator[tuple[pa.Table, pa.Array | None]]:
        wide = 0
        for start in covered_ranges(self.articles, batch_pmids, origin=lo, lo=lo, hi=hi):
            end = min(start + batch_pmids, hi)
            for attempt in range(_RETRIES + 1):
                try:
                    rows = self._read(self.articles, ARTICLE_SCHEMA, read_columns, start, end)
                    deletions = self._read(self.deletions, DELETION_SCHEMA, ["pmid", "deleted_at"], start, end)
                    break
                except FileNotFoundError:
                    if attempt == _RETRIES:
                        raise StoreError(f"{self.path}: parts keep vanishing while being read") from None
                    log.info("%s: a part was replaced while reading; re-reading the footers", self.path)
                    self.refresh()
            if rows.num_rows == 0:
                continue
            groups = self.articles.overlapping(start, end)
            wide += int(
                np.count_nonzero(self.articles.hi[groups] - self.articles.lo[groups] > _WIDE_GROUP_SPANS * batch_pmids)
            )
            table = _newest_rows(rows)
            yield table, deletion_live_mask(table, latest_deletions(deletions), dead=True)
        if wide:
            log.info(
                "%s: %d reads of wide (unsorted) row groups; `store compact` makes range reads prune", self.path, wide
            )

    def iter_deletions(self, lo: int, hi: int, batch_pmids: int = DEFAULT_BATCH_PMIDS) -> Iterator[pa.Table]:
        """Per non-empty sub-range: the latest deletion row of each PMID (all columns)."""
        _check_range(lo, hi)
        _check_width("batch_pmids", batch_pmids)
        return self._deletions(lo, hi, batch_pmids)

    def _deletions(self, lo: int, hi: int, batch_pmids: int) -> Iterator[pa.Table]:
        for start in covered_ranges(self.deletions, batch_pmids, origin=lo, lo=lo, hi=hi):
            rows = self._read(
                self.deletions, DELETION_SCHEMA, list(DELETION_SCHEMA.names), start, min(start + batch_pmids, hi)
            )
            if rows.num_rows:
                order = pc.sort_indices(rows, sort_keys=[("pmid", "ascending"), ("deleted_at", "descending")])
                rows = rows.take(order)
                pmids = rows.column("pmid").to_numpy()
                first = np.ones(len(pmids), dtype=bool)
                first[1:] = pmids[1:] != pmids[:-1]
                yield rows.filter(pa.array(first))

    def _read(self, groups: RowGroups, schema: pa.Schema, columns: list[str], lo: int, hi: int) -> pa.Table:
        """The rows with ``lo <= pmid < hi`` of the row groups that may hold them, part order kept."""
        target = pa.schema([schema.field(name) for name in columns])
        hits = groups.overlapping(lo, hi)
        tables = []
        for number in np.unique(groups.part[hits]).tolist():  # parts in listing (creation) order
            path = groups.parts[number]
            wanted = groups.group[hits[groups.part[hits] == number]].tolist()
            try:
                table = pq.ParquetFile(path).read_row_groups(wanted, columns=columns, use_threads=False)
                table = table.cast(target)
            except FileNotFoundError:
                raise
            except (OSError, pa.ArrowException, ValueError) as exc:
                raise StoreError(f"{path}: cannot read part: {exc}") from exc
            pmid = table.column("pmid")
            tables.append(table.filter(pc.and_(pc.greater_equal(pmid, lo), pc.less(pmid, hi))))
        if not tables:
            return pa.Table.from_batches([], schema=target)
        return pa.concat_tables(tables)


def _check_range(lo: int, hi: int) -> None:
    for name, value in (("lo", lo), ("hi", hi)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if not 0 <= lo < hi:
        raise ValueError(f"PMID range [{lo}, {hi}) is empty or negative; need 0 <= lo < hi")


def _wanted_columns(path: Path, columns: Sequence[str] | None) -> list[str]:
    if isinstance(columns, str):
        raise StoreError(f"{path}: columns must be a list of names, not the string {columns!r}")
    wanted = list(ARTICLE_SCHEMA.names) if columns is None else list(dict.fromkeys(["pmid", *columns]))
    unknown = [c for c in wanted if c not in ARTICLE_SCHEMA.names]
    if unknown:
        raise StoreError(f"{path}: unknown article column {unknown[0]!r}")
    return wanted


def live_ranges(store_path: str | os.PathLike[str], width: int) -> list[tuple[int, int]]:
    """``[lo, lo + width)`` PMID ranges that may hold live articles, from footers only, sorted."""
    return StoreIndex(store_path).live_ranges(width)


def iter_live_batches(
    store_path: str | os.PathLike[str],
    lo: int,
    hi: int,
    columns: Sequence[str] | None = None,
    batch_pmids: int = DEFAULT_BATCH_PMIDS,
) -> Iterator[pa.Table]:
    """Live articles with ``lo <= pmid < hi`` in PMID order, in batches of ``batch_pmids`` PMIDs."""
    return StoreIndex(store_path).iter_live_batches(lo, hi, columns, batch_pmids)


def iter_live_articles(
    store_path: str | os.PathLike[str],
    width: int,
    columns: Sequence[str] | None = None,
    batch_pmids: int = DEFAULT_BATCH_PMIDS,
) -> Iterator[tuple[int, int, pa.Table]]:
    """Every live article of a store, as ``(lo, hi, batch)`` over ``live_ranges(width)``."""
    return StoreIndex(store_path).iter_live_articles(width, columns, batch_pmids)
