"""`store stats` and `store verify` on real stores, broken stores and bad paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from store.writer import ArticleWriter


def _store(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "store", *args], capture_output=True, text=True, timeout=60)


def _fill(path: Path) -> None:
    with ArticleWriter(path, part_rows=3) as writer:
        for pmid in (10, 20, 30, 40):
            writer.write({"pmid": pmid, "title": "t", "abstract": "a" if pmid != 40 else None, "source": "efetch"})
        writer.write({"pmid": 20, "version": 2, "title": "t2", "source": "baseline"})
        writer.delete([30], source="baseline")


def test_stats_counts(tmp_path: Path) -> None:
    _fill(tmp_path)
    result = _store(["stats", str(tmp_path), "--json"])
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["live_articles"] == 3
    assert stats["rows"] == 5
    assert stats["deletions"] == 1
    assert stats["with_abstract"] == 1  # 10 has one; 20's newest version and 40 have none
    assert (stats["pmid_min"], stats["pmid_max"]) == (10, 40)
    assert stats["by_source"] == {"efetch": 2, "baseline": 1}
    assert stats["schema_version"] == 1 and stats["bytes_on_disk"] > 0
    table = _store(["stats", str(tmp_path)])
    assert table.returncode == 0 and "live articles" in table.stdout


def test_verify_reports_duplicates_and_corrupt_parts(tmp_path: Path) -> None:
    _fill(tmp_path)
    ok = _store(["verify", str(tmp_path)])
    assert ok.returncode == 0 and "duplicates: 0 extra rows" in ok.stdout
    with ArticleWriter(tmp_path) as writer:
        writer.write({"pmid": 10, "title": "again", "source": "efetch"})
    dup = _store(["verify", str(tmp_path), "--json"])
    assert dup.returncode == 0 and json.loads(dup.stdout)["duplicate_pmids"] == [10]
    assert _store(["verify", str(tmp_path), "--fail-on-duplicates"]).returncode == 1
    bad = tmp_path / "articles" / "part-99999999T000000000000Z-1-deadbeef.parquet"
    bad.write_bytes(b"not parquet at all")
    broken = _store(["verify", str(tmp_path)])
    assert broken.returncode == 1
    assert f"problem: {bad}: unreadable" in broken.stdout


def test_missing_store_exits_1_with_one_line(tmp_path: Path) -> None:
    result = _store(["stats", str(tmp_path / "absent")])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'absent'}: no store here "
        "(fill one with `scrapy crawl pubmed` or `python -m crawler.baseline`)"
    ]


def test_bad_usage_exits_2() -> None:
    assert _store(["stats", "--jsn"]).returncode == 2
    assert _store(["frobnicate"]).returncode == 2


def test_path_defaults_to_store_table(tmp_path: Path) -> None:
    _fill(tmp_path / "kept-here")
    (tmp_path / "pipeline.toml").write_text('[store]\npath = "kept-here"\n')
    result = subprocess.run(
        [sys.executable, "-m", "store", "stats", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["path"] == "kept-here" and json.loads(result.stdout)["live_articles"] == 3
