"""`store compact`: same live articles, fewer sorted parts, and safe when killed or raced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store.compact import COMPACT_DIR, COMPACT_PREFIX, PAUSE_ENV, PLAN_NAME, compact, compaction_lock
from store.reader import deleted_pmids, iter_live_articles, iter_parts, read_articles
from store.writer import ARTICLES_DIR, DELETIONS_DIR, ROW_GROUP_ROWS, ArticleWriter
from tests.store.conftest import row, write_deletions

WIDTH = 50_000


def _streamed(store: Path) -> pa.Table:
    return pa.concat_tables(batch for _, _, batch in iter_live_articles(store, 30_000, batch_pmids=7_000))


def _all_rows(store: Path, table: str = ARTICLES_DIR) -> list[pa.Table]:
    return [pq.read_table(p) for p in iter_parts(store, table)]


def _snapshot(store: Path) -> tuple[pa.Table, pa.Table, set[int]]:
    return read_articles(store), _streamed(store), deleted_pmids(store)


def _assert_same(store: Path, before: tuple[pa.Table, pa.Table, set[int]]) -> None:
    now = _snapshot(store)
    assert now[0].equals(before[0]) and now[1].equals(before[1]) and now[2] == before[2]


def _assert_compacted(store: Path) -> None:
    assert not (store / COMPACT_DIR / PLAN_NAME).exists()
    assert not list((store / COMPACT_DIR).glob("*.done"))
    for table in (ARTICLES_DIR, DELETIONS_DIR):
        parts = iter_parts(store, table)
        assert parts and all(p.name.startswith(COMPACT_PREFIX) for p in parts)
        pmids = pa.concat_tables(_all_rows(store, table)).column("pmid").to_pylist()
        assert pmids == sorted(pmids) and len(pmids) == len(set(pmids)), f"{table}: one row per PMID, sorted"
        assert not [p for p in (store / table).iterdir() if p.name.startswith(".tmp-")]


def test_compact_keeps_every_live_article(mixed_store: Path) -> None:
    before = _snapshot(mixed_store)
    parts_before = len(iter_parts(mixed_store)) + len(iter_parts(mixed_store, DELETIONS_DIR))
    rows_before = sum(t.num_rows for t in _all_rows(mixed_store))
    summary = compact(mixed_store, range_width=WIDTH, part_rows=150, batch_pmids=5_000)
    _assert_same(mixed_store, before)
    _assert_compacted(mixed_store)
    assert summary.parts_before == parts_before and summary.parts_after < parts_before
    assert summary.rows_before == rows_before and summary.rows_after < rows_before
    assert summary.live_articles == before[0].num_rows
    # Deleted articles are gone, except key-only rows of deleted versions above 1 (no text).
    kept = pa.concat_tables(_all_rows(mixed_store))
    dead = kept.filter(pa.compute.invert(pa.compute.is_in(kept.column("pmid"), before[0].column("pmid"))))
    assert summary.rows_after == before[0].num_rows + dead.num_rows
    assert dead.num_rows and min(dead.column("version").to_pylist()) > 1
    assert dead.column("title").null_count == dead.column("abstract_sections").null_count == dead.num_rows
    starts = []
    for part in iter_parts(mixed_store):
        lo = int(part.name.rsplit("-", 2)[1])
        starts.append(lo)
        meta = pq.ParquetFile(part).metadata
        pmids = pq.read_table(part, columns=["pmid"]).column("pmid").to_pylist()
        assert lo % WIDTH == 0 and lo <= pmids[0] and pmids[-1] < lo + WIDTH, "a part holds one range"
        assert meta.num_rows < 150 + 100, "about part_rows rows: whole batches of 5,000 PMIDs"
        assert all(meta.row_group(i).num_rows <= ROW_GROUP_ROWS for i in range(meta.num_row_groups))
    assert len(starts) > len(set(starts)), "a range with more than part_rows rows is cut into several parts"
    again = compact(mixed_store, range_width=WIDTH)  # an already compact store stays the same
    _assert_same(mixed_store, before)
    assert (again.rows_after, again.live_articles) == (summary.rows_after, summary.live_articles)


def test_compact_real_baseline_and_efetch_data(real_store: Path) -> None:
    before = _snapshot(real_store)
    compact(real_store)
    _assert_same(real_store, before)
    _assert_compacted(real_store)


def test_deletions_still_hide_older_versions_fetched_later(tmp_path: Path) -> None:
    stores = [tmp_path / "plain", tmp_path / "compacted"]
    for store in stores:
        with ArticleWriter(store) as writer:
            writer.write_many([row(10, 2, 0), row(20, 1, 0), row(30, 1, 0), row(30, 3, 1), row(40, 1, 0)])
        write_deletions(store, [(10, 5), (20, 5), (30, 5), (30, 2)])
    compact(stores[1])
    for store in stores:  # then, after the deletions, older versions are fetched again
        with ArticleWriter(store) as writer:
            writer.write_many([row(10, 1, 10), row(20, 1, 10), row(30, 2, 10)])
    plain, compacted = (read_articles(s) for s in stores)
    assert compacted.equals(plain)
    assert plain.column("pmid").to_pylist() == [20, 40]  # 10 and 30 stay hidden behind their deleted versions
    assert sum(t.num_rows for t in _all_rows(stores[1], DELETIONS_DIR)) == 3  # one row per PMID, none dropped


def test_part_written_during_compact_survives(mixed_store: Path) -> None:
    before = read_articles(mixed_store)
    written: list[Path] = []

    def crawl_meanwhile(done: int, total: int) -> None:
        if done == 1:
            with ArticleWriter(mixed_store) as writer:
                writer.write_many([row(5, 9, 900, title="new revision"), row(999_999, 1, 900)])
                writer.delete([before.column("pmid")[-1].as_py()], source="baseline")
            written.extend(writer.parts_written)

    compact(mixed_store, range_width=WIDTH, on_range=crawl_meanwhile)
    assert written and all(p.exists() for p in written)
    after = read_articles(mixed_store, columns=["title"])
    titles = dict(zip(*after.to_pydict().values(), strict=True))
    assert titles[5] == "new revision" and 999_999 in titles
    assert before.column("pmid")[-1].as_py() not in titles
    assert set(titles) == set(before.column("pmid").to_pylist()) - {before.column("pmid")[-1].as_py()} | {5, 999_999}


def test_killed_between_ranges_and_while_publishing(mixed_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _snapshot(mixed_store)

    class Killed(Exception):
        pass

    def die_at_last(done: int, total: int) -> None:
        if done == total:
            raise Killed

    with pytest.raises(Killed):
        compact(mixed_store, range_width=WIDTH, on_range=die_at_last)
    _assert_same(mixed_store, before)  # every range written, old parts all there: copies tie with originals
    old = [p for p in iter_parts(mixed_store) if not p.name.startswith(COMPACT_PREFIX)]
    unlink, removed, limit = Path.unlink, [], [0]

    def die_after(self: Path, missing_ok: bool = False) -> None:
        if self in old and self.exists():
            if len(removed) == limit[0]:
                raise Killed
            removed.append(self)
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", die_after)
    for stop in (1, len(old) // 2, len(old) - 1):  # killed again and again while deleting the old parts
        limit[0] = stop
        with pytest.raises(Killed):
            compact(mixed_store)
        assert len(removed) == stop and len(iter_parts(mixed_store)) > len(old) - stop
        _assert_same(mixed_store, before)  # the newest old parts gone: nothing a reader sees changed
    monkeypatch.undo()
    summary = compact(mixed_store, range_width=999)  # resumes the plan with its own width
    assert summary.resumed and summary.live_articles == before[0].num_rows
    _assert_same(mixed_store, before)
    _assert_compacted(mixed_store)


def _cli(store: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "store", "compact", str(store), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _wait_for(condition: object, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "compact did not reach the pause"
        time.sleep(0.1)


def test_sigkill_mid_compact_then_rerun(mixed_store: Path) -> None:
    before = _snapshot(mixed_store)
    proc = _cli(mixed_store, "--range-width", str(WIDTH), env={PAUSE_ENV: "3"})
    try:
        _wait_for(lambda: len(list((mixed_store / COMPACT_DIR).glob("*.done"))) == 3, proc)
        assert any(p.name.startswith(COMPACT_PREFIX) for p in iter_parts(mixed_store))
        _assert_same(mixed_store, before)  # old parts and three ranges of copies side by side
        second = _cli(mixed_store)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1
        assert err.strip().splitlines() == [err.strip()] and f"pid {proc.pid} on" in err and "--wait" in err
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    _assert_same(mixed_store, before)
    rerun = _cli(mixed_store)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert "(resumed plan" in out and f"{before[0].num_rows:,} live articles" in out
    _assert_same(mixed_store, before)
    _assert_compacted(mixed_store)


def test_wait_for_the_lock(mixed_store: Path) -> None:
    with compaction_lock(mixed_store):
        waiting = _cli(mixed_store, "--wait")
        time.sleep(1.5)
        assert waiting.poll() is None
        refused = _cli(mixed_store)
        assert refused.wait(timeout=60) == 1
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert out.startswith(f"compact {mixed_store}: parts ")


def test_bad_input(tmp_path: Path, mixed_store: Path) -> None:
    with pytest.raises(ValueError, match="range_width must be a positive integer"):
        compact(mixed_store, range_width=0)
    result = subprocess.run(
        [sys.executable, "-m", "store", "compact", str(tmp_path / "absent")], capture_output=True, text=True
    )
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "no store here" in result.stderr
