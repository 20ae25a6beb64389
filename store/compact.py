"""`store compact`: rewrite a store's parts as PMID-sorted parts, one PMID range at a time.

A store grown by many small crawls holds many parts, old versions, exact duplicates and
deleted articles. Compaction reads it range by range through `store.stream` and writes,
per ``[lo, lo + range_width)``, the rows readers see (one row per PMID, the newest
version, deletions applied) with the writer's sorted zstd row groups, plus the latest
deletion of each PMID. Deletion records are kept: a later stale fetch must stay hidden.
A deleted article whose newest version is above 1 keeps a key-only row (pmid, version,
source, fetched_at; no text), which is never live but still outranks a lower version
fetched again later, exactly as the row it replaces did.

Crash safety, in order: an exclusive ``flock`` on ``<store>/_compact/lock`` (one compact
at a time; crawl writers need no lock: parts they publish later are not in the plan and
are left alone); a plan (``_compact/plan.json``, written atomically) naming every part
read; per range, output parts named ``part-compact-<plan id>-<lo>-<n>.parquet`` (never a
crawl part's name) written atomically, then a done marker; only when every range is
marked done are the planned parts deleted (newest first), then the plan. A rerun after a kill resumes
the plan: marked ranges are skipped, an unmarked range is written again under the same
names. Readers stay exact throughout: an output row is a copy of the row that already
wins for its PMID (same version and fetched_at) and output names sort after crawl
parts, so while old and new parts coexist the copy only ties with its original. Rows
that tie (same version and fetched_at, e.g. a resumed crawl's duplicates) go to the part
listed first; deleting the old parts newest first keeps that part until last, so no
reader ever sees another tied row win while the copy's original is gone.

Memory: the footers of the planned parts (`store.stream.StoreIndex`), one output part
(``part_rows`` rows plus at most one batch of ``batch_pmids`` PMIDs), and the deletions of
one range (one row per deleted PMID).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from store.atomic import TEMP_PREFIX, atomic_write_json, fsync_dir
from store.lock import exclusive_lock
from store.reader import StoreError, check_store, iter_parts
from store.schema import ARTICLE_SCHEMA, DELETION_SCHEMA
from store.stream import DEFAULT_BATCH_PMIDS, RowGroups, StoreIndex, covered_ranges, read_row_groups
from store.writer import ARTICLES_DIR, DELETIONS_DIR, write_table

log = logging.getLogger(__name__)

COMPACT_DIR = "_compact"
PLAN_NAME = "plan.json"
LOCK_NAME = "lock"
COMPACT_PREFIX = "part-compact-"
DEFAULT_RANGE_WIDTH = 1_000_000
DEFAULT_PART_ROWS = 200_000
PAUSE_ENV = "STORE_COMPACT_PAUSE_AFTER_RANGES"
"""Test knob: after this many ranges are written, sleep (so a test can kill a compact mid-way)."""
_KEEP_IN_HUSK = ("pmid", "version", "source", "fetched_at")


class CompactLockedError(StoreError):
    """Another `store compact` holds the store's compaction lock."""


@dataclass
class Plan:
    """What one compaction reads and writes; saved as ``_compact/plan.json``."""

    id: str
    range_width: int
    part_rows: int
    articles: list[str]
    deletions: list[str]
    ranges: list[int]
    rows_before: int
    bytes_before: int
    created_at: str = ""


@dataclass
class CompactSummary:
    path: str
    plan_id: str
    resumed: bool = False
    ranges: int = 0
    parts_before: int = 0
    parts_after: int = 0
    rows_before: int = 0
    rows_after: int = 0
    live_articles: int = 0
    deletions_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0
    written: list[str] = field(default_factory=list)

    def line(self) -> str:
        resumed = f" (resumed plan {self.plan_id})" if self.resumed else ""
        return (
            f"compact {self.path}{resumed}: parts {self.parts_before:,} -> {self.parts_after:,}, "
            f"rows {self.rows_before:,} -> {self.rows_after:,}, {self.live_articles:,} live articles, "
            f"bytes {self.bytes_before:,} -> {self.bytes_after:,}, {self.ranges:,} ranges; {self.seconds:.1f}s"
        )


@contextlib.contextmanager
def compaction_lock(store: Path, wait: bool = False) -> Iterator[None]:
    """Hold ``<store>/_compact/lock``; raise `CompactLockedError` naming the holder unless ``wait``."""
    lock = store / COMPACT_DIR / LOCK_NAME

    def refuse(holder: str) -> CompactLockedError:
        return CompactLockedError(f"{store}: another compact holds {lock} ({holder}); let it finish, or pass --wait")

    with exclusive_lock(lock, refuse=refuse, waiting=f"{store}: waiting for the compact of {{holder}}", wait=wait):
        yield


class _PlanIndex(StoreIndex):
    """A `StoreIndex` over the planned parts only (never parts published after the plan)."""

    def __init__(self, store: Path, plan: Plan) -> None:
        self.plan = plan
        super().__init__(store)

    def refresh(self) -> None:
        self.articles = _planned_groups(self.path, ARTICLES_DIR, self.plan.articles)
        self.deletions = _planned_groups(self.path, DELETIONS_DIR, self.plan.deletions)


def _planned_groups(store: Path, table: str, names: list[str]) -> RowGroups:
    parts = [store / table / name for name in names]
    missing = [p for p in parts if not p.exists()]
    if missing:
        raise StoreError(
            f"{missing[0]}: a part of the unfinished compaction plan {store / COMPACT_DIR / PLAN_NAME} is missing; "
            "restore it, or delete that plan and every part-compact-<plan id>-* part to start over"
        )
    return read_row_groups(parts)


def _new_plan(store: Path, range_width: int, part_rows: int) -> Plan:
    articles, deletions = iter_parts(store, ARTICLES_DIR), iter_parts(store, DELETIONS_DIR)
    groups, deleted = read_row_groups(articles), read_row_groups(deletions)
    starts = sorted(set(covered_ranges(groups, range_width)) | set(covered_ranges(deleted, range_width)))
    now = dt.datetime.now(dt.UTC)
    plan = Plan(
        id=f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}",
        range_width=range_width,
        part_rows=part_rows,
        articles=[p.name for p in articles],
        deletions=[p.name for p in deletions],
        ranges=starts,
        rows_before=groups.num_rows,
        bytes_before=sum(p.stat().st_size for p in (*articles, *deletions)),
        created_at=now.isoformat(timespec="seconds"),
    )
    atomic_write_json(store / COMPACT_DIR / PLAN_NAME, asdict(plan))
    log.info("%s: compaction plan %s: %d parts, %d ranges", store, plan.id, len(articles) + len(deletions), len(starts))
    return plan


def _load_plan(store: Path) -> Plan | None:
    path = store / COMPACT_DIR / PLAN_NAME
    if not path.is_file():
        return None
    try:
        return Plan(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise StoreError(f"{path}: unreadable compaction plan ({exc}); delete it to start over") from exc


def _marker(store: Path, plan: Plan, lo: int) -> Path:
    return store / COMPACT_DIR / f"{plan.id}-{lo:010d}.done"


def _range_prefix(plan: Plan, lo: int) -> str:
    return f"{COMPACT_PREFIX}{plan.id}-{lo:010d}-"


def _fold(table: pa.Table, dead: pa.Array | None) -> tuple[pa.Table, int]:
    """The newest rows to keep (live ones, and key-only rows of deleted versions above 1); live count."""
    if dead is None:
        return table, table.num_rows
    husk = pc.and_(dead, pc.greater(table.column("version"), 1))
    columns = [
        column if name in _KEEP_IN_HUSK else pc.if_else(husk, pa.nulls(len(column), column.type), column)
        for name, column in zip(table.column_names, table.columns, strict=True)
    ]
    kept = pa.Table.from_arrays(columns, schema=table.schema).filter(pc.or_(pc.invert(dead), husk))
    return kept, table.num_rows - int(pc.sum(dead).as_py() or 0)


def _write(store: Path, table_dir: str, tables: list[pa.Table], schema: pa.Schema, name: str) -> str:
    table = pa.concat_tables(tables).select(schema.names).cast(schema)
    return write_table(store / table_dir, table, name).name


def _compact_range(store: Path, index: _PlanIndex, lo: int, batch_pmids: int) -> dict[str, Any]:
    plan = index.plan
    prefix = _range_prefix(plan, lo)
    for folder in (store / ARTICLES_DIR, store / DELETIONS_DIR):  # outputs of an earlier, unmarked try
        for stale in folder.glob(prefix + "*"):
            stale.unlink()
    hi = lo + plan.range_width
    written: list[str] = []
    buffer: list[pa.Table] = []
    buffered = live = 0
    batches = index.iter_newest(lo, hi, list(ARTICLE_SCHEMA.names), min(batch_pmids, plan.range_width))
    for table, dead in batches:
        kept, n_live = _fold(table, dead)
        live += n_live
        if kept.num_rows:
            buffer.append(kept)
            buffered += kept.num_rows
        if buffered >= plan.part_rows:
            written.append(_write(store, ARTICLES_DIR, buffer, ARTICLE_SCHEMA, f"{prefix}{len(written):03d}.parquet"))
            buffer, buffered = [], 0
    if buffer:
        written.append(_write(store, ARTICLES_DIR, buffer, ARTICLE_SCHEMA, f"{prefix}{len(written):03d}.parquet"))
    deletions = list(index.iter_deletions(lo, hi, plan.range_width))
    n_deletions = sum(t.num_rows for t in deletions)
    if n_deletions:
        written.append(_write(store, DELETIONS_DIR, deletions, DELETION_SCHEMA, f"{prefix}000.parquet"))
    return {"live": live, "deletions": n_deletions, "written": written}


def _remove_stale_temps(store: Path) -> None:
    """Temp files of a killed compact (ours alone: the lock is held)."""
    for folder in (store / ARTICLES_DIR, store / DELETIONS_DIR, store / COMPACT_DIR):
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name.startswith(TEMP_PREFIX + COMPACT_PREFIX) or entry.name.startswith(
                    TEMP_PREFIX + PLAN_NAME
                ):
                    entry.unlink(missing_ok=True)


def _publish(store: Path, plan: Plan) -> None:
    """Every range is written: delete the planned parts, then the markers and the plan."""
    for table_dir, names in ((ARTICLES_DIR, plan.articles), (DELETIONS_DIR, plan.deletions)):
        for name in reversed(names):  # newest first: a tie between old rows keeps the winner the copy took
            (store / table_dir / name).unlink(missing_ok=True)
        if (store / table_dir).is_dir():
            fsync_dir(store / table_dir)
    for lo in plan.ranges:
        _marker(store, plan, lo).unlink(missing_ok=True)
    (store / COMPACT_DIR / PLAN_NAME).unlink()
    fsync_dir(store / COMPACT_DIR)


def _pause_after() -> int | None:
    value = os.environ.get(PAUSE_ENV, "").strip()
    return int(value) if value else None


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def compact(
    store_path: str | os.PathLike[str],
    range_width: int | None = None,
    part_rows: int = DEFAULT_PART_ROWS,
    wait: bool = False,
    batch_pmids: int = DEFAULT_BATCH_PMIDS,
    on_range: Callable[[int, int], Any] | None = None,
) -> CompactSummary:
    """Compact a store (or finish the compaction a killed run left); ``on_range(done, total)`` reports progress.

    ``range_width`` (default `DEFAULT_RANGE_WIDTH`) applies to a new plan; a resumed plan keeps its own.
    Output parts hold about ``part_rows`` rows: whole batches of ``batch_pmids`` PMIDs each.
    """
    start = time.monotonic()
    store = check_store(store_path)
    _check_positive("part_rows", part_rows)
    _check_positive("batch_pmids", batch_pmids)
    if range_width is not None:
        _check_positive("range_width", range_width)
    with compaction_lock(store, wait):
        _remove_stale_temps(store)
        plan = _load_plan(store)
        resumed = plan is not None
        if plan is None:
            plan = _new_plan(store, range_width or DEFAULT_RANGE_WIDTH, part_rows)
        elif range_width is not None and range_width != plan.range_width:
            log.warning("%s: resuming plan %s with its range width %d", store, plan.id, plan.range_width)
        summary = CompactSummary(str(store), plan.id, resumed, len(plan.ranges))
        summary.parts_before = len(plan.articles) + len(plan.deletions)
        summary.rows_before, summary.bytes_before = plan.rows_before, plan.bytes_before
        pause, written_now = _pause_after(), 0
        index: _PlanIndex | None = None
        for number, lo in enumerate(plan.ranges, 1):
            marker = _marker(store, plan, lo)
            if marker.exists():
                done = json.loads(marker.read_text(encoding="utf-8"))
            else:
                index = index or _PlanIndex(store, plan)
                done = _compact_range(store, index, lo, batch_pmids)
                atomic_write_json(marker, done)
                written_now += 1
            summary.live_articles += done["live"]
            summary.written += done["written"]
            if on_range is not None:
                on_range(number, len(plan.ranges))
            if pause is not None and written_now == pause:
                log.warning("%s: %s=%d: pausing", store, PAUSE_ENV, pause)
                time.sleep(3600)
        _publish(store, plan)
    articles, deletions = iter_parts(store, ARTICLES_DIR), iter_parts(store, DELETIONS_DIR)
    summary.parts_after = len(articles) + len(deletions)
    summary.rows_after = read_row_groups(articles).num_rows
    summary.deletions_after = read_row_groups(deletions).num_rows
    summary.bytes_after = sum(p.stat().st_size for p in (*articles, *deletions) if p.exists())
    summary.seconds = time.monotonic() - start
    log.info("%s", summary.line())
    return summary
