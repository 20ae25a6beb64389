"""The PMID-range reader: the same rows as `read_articles`, pruned by row-group statistics."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store.reader import StoreError, StoreIndex, iter_live_articles, iter_live_batches, live_ranges, read_articles
from store.writer import ARTICLES_DIR, ROW_GROUP_ROWS, ArticleWriter
from tests.store.conftest import row


def _streamed(store: Path, width: int, batch_pmids: int, columns: list[str] | None = None) -> pa.Table:
    batches = []
    for lo, hi, batch in iter_live_articles(store, width, columns=columns, batch_pmids=batch_pmids):
        assert batch.num_rows > 0
        pmids = batch.column("pmid").to_pylist()
        assert pmids == sorted(pmids) and len(set(pmids)) == len(pmids)
        assert lo <= pmids[0] and pmids[-1] < hi and lo % width == 0 and hi == lo + width
        first = lo + (pmids[0] - lo) // batch_pmids * batch_pmids
        assert pmids[-1] < first + batch_pmids, "a batch covers one sub-range"
        batches.append(batch)
    assert batches, "the fixture has live articles"
    return pa.concat_tables(batches)


@pytest.mark.parametrize(("width", "batch_pmids"), [(1_000_000, 100_000), (50_000, 7_000), (3_001, 3_001)])
def test_same_rows_as_read_articles(mixed_store: Path, width: int, batch_pmids: int) -> None:
    expected = read_articles(mixed_store)
    got = _streamed(mixed_store, width, batch_pmids)
    assert got.schema.names == expected.schema.names
    assert got.equals(expected)


def test_fixture_has_every_case(mixed_store: Path) -> None:
    titles = dict(zip(*read_articles(mixed_store, columns=["title"]).to_pydict().values(), strict=True))
    assert "first copy" in titles.values() and "second copy" not in titles.values()  # ties: oldest part wins
    assert len(titles) < 1_500  # deletions applied


def test_same_rows_on_real_baseline_and_efetch_data(real_store: Path) -> None:
    for columns, sizes in ((None, (1_000_000, 100_000)), (["abstract_sections", "fetched_at"], (2_000_000, 2_000_000))):
        expected = read_articles(real_store, columns=columns)
        assert expected.num_rows > 600
        for width, batch in (sizes,):
            assert _streamed(real_store, width, batch, columns).equals(expected)


def test_columns_pmid_first_and_one_range(mixed_store: Path) -> None:
    index = StoreIndex(mixed_store)
    lo, hi = index.live_ranges(100_000)[1]
    got = pa.concat_tables(index.iter_live_batches(lo, hi, columns=["title", "pmid"], batch_pmids=10_000))
    assert got.schema.names == ["pmid", "title"]
    expected = read_articles(mixed_store, columns=["title"])
    pmid = expected.column("pmid")
    assert got.equals(expected.filter(pa.compute.and_(pa.compute.greater_equal(pmid, lo), pa.compute.less(pmid, hi))))
    # The module functions are the same as the index's methods.
    assert pa.concat_tables(iter_live_batches(mixed_store, lo, hi, ["title"], 10_000)).equals(got)


def test_live_ranges_from_footers(tmp_path: Path) -> None:
    with ArticleWriter(tmp_path, part_rows=1) as writer:  # one row group per PMID
        writer.write_many([row(p) for p in (5, 1_999_999, 2_000_000, 7_500_123)])
    assert live_ranges(tmp_path, 1_000_000) == [
        (0, 1_000_000),
        (1_000_000, 2_000_000),
        (2_000_000, 3_000_000),
        (7_000_000, 8_000_000),
    ]


def test_sorted_parts_have_bounded_row_groups(tmp_path: Path) -> None:
    with ArticleWriter(tmp_path, part_rows=ROW_GROUP_ROWS * 3 + 5) as writer:
        writer.write_many([row(p) for p in range(ROW_GROUP_ROWS * 3 + 5, 0, -1)])  # written in reverse order
    (part,) = list((tmp_path / ARTICLES_DIR).iterdir())
    meta = pq.ParquetFile(part).metadata
    assert meta.num_row_groups == 4
    bounds = [
        (meta.row_group(i).column(0).statistics.min, meta.row_group(i).column(0).statistics.max) for i in range(4)
    ]
    assert bounds[0] == (1, ROW_GROUP_ROWS) and all(a[1] < b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert pq.read_table(part).column("pmid").to_pylist() == list(range(1, ROW_GROUP_ROWS * 3 + 6))


def _corrupt_data_pages(part: Path) -> None:
    """Zero a part's column data, keeping its footer (row-group statistics) readable."""
    raw = bytearray(part.read_bytes())
    footer_len = int.from_bytes(raw[-8:-4], "little")
    data_end = len(raw) - 8 - footer_len
    raw[4:data_end] = bytes(data_end - 4)
    part.write_bytes(bytes(raw))


def test_a_range_never_touches_row_groups_outside_it(tmp_path: Path) -> None:
    with ArticleWriter(tmp_path, part_rows=ROW_GROUP_ROWS * 2) as writer:
        writer.write_many([row(p) for p in range(1, ROW_GROUP_ROWS * 2 + 1)])  # one part, two row groups
    with ArticleWriter(tmp_path) as writer:
        writer.write_many([row(p) for p in range(5_000_000, 5_000_100)])
    far = max((tmp_path / ARTICLES_DIR).iterdir(), key=lambda p: p.name)
    _corrupt_data_pages(far)
    index = StoreIndex(tmp_path)  # footers only: still fine
    assert index.live_ranges(1_000_000) == [(0, 1_000_000), (5_000_000, 6_000_000)]
    assert len(index.articles.overlapping(1, ROW_GROUP_ROWS + 1)) == 1  # one of the first part's two row groups
    got = pa.concat_tables(index.iter_live_batches(0, 1_000_000, ["title"]))
    assert got.column("pmid").to_pylist() == list(range(1, ROW_GROUP_ROWS * 2 + 1))
    with pytest.raises(StoreError, match=f"{far.name}: cannot read part"):
        list(index.iter_live_batches(5_000_000, 6_000_000))


def test_empty_store(tmp_path: Path) -> None:
    ArticleWriter(tmp_path).close()
    assert live_ranges(tmp_path, 1_000) == []
    assert list(iter_live_articles(tmp_path, 1_000)) == []
    assert list(iter_live_batches(tmp_path, 0, 10**9)) == []


def test_only_deleted_articles_yield_nothing(tmp_path: Path) -> None:
    with ArticleWriter(tmp_path) as writer:
        writer.write(row(10, minute=-10))
        writer.delete([10], source="baseline")
    assert live_ranges(tmp_path, 1_000) == [(0, 1_000)]  # footers cannot know it is deleted
    assert list(iter_live_articles(tmp_path, 1_000)) == []


def test_bad_input(tmp_path: Path, mixed_store: Path) -> None:
    with pytest.raises(StoreError, match="no store here"):
        live_ranges(tmp_path / "absent", 10)
    with pytest.raises(ValueError, match="width must be a positive integer"):
        live_ranges(mixed_store, 0)
    with pytest.raises(ValueError, match="batch_pmids must be a positive integer"):
        iter_live_batches(mixed_store, 0, 10, batch_pmids=0)
    with pytest.raises(ValueError, match=r"PMID range \[10, 10\) is empty"):
        iter_live_batches(mixed_store, 10, 10)
    with pytest.raises(StoreError, match="unknown article column 'nope'"):
        iter_live_articles(mixed_store, 10, columns=["nope"])
    with pytest.raises(StoreError, match="columns must be a list"):
        iter_live_batches(mixed_store, 0, 10, columns="title")  # type: ignore[arg-type]
    bad = mixed_store / ARTICLES_DIR / "part-99991231T000000000000Z-1-broken00.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(StoreError, match="broken00.parquet: unreadable part"):
        StoreIndex(mixed_store)
    os.unlink(bad)
