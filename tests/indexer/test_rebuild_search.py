"""Rebuild and search with the packaged model on real abstracts: incremental, filtered, IVF."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexer.build import RebuildSummary
from indexer.embedding import Embedder
from indexer.search import open_index
from tests.indexer.conftest import delete_articles, write_articles


def question_from(row: dict[str, Any]) -> str:
    """The longest sentence of the abstract: the article it came from must rank first."""
    sentences = [s for s in re.split(r"(?<=\.)\s+", row["abstract"]) if len(s) > 60]
    return max(sentences, key=len)


def test_search_finds_the_article_a_question_comes_from(
    base_build: Path, abstracts: list[dict[str, Any]], embedder: Embedder
) -> None:
    index = open_index(base_build / "index", embedder)
    rows = abstracts[:40:4]
    results = index.search([question_from(r) for r in rows], k=5)
    assert [hits[0].pmid for hits in results] == [r["pmid"] for r in rows]
    top = results[0][0]
    assert top.text.startswith(rows[0]["title"])
    assert 0 < top.score <= 1.0001
    assert all(a.score >= b.score for hits in results for a, b in zip(hits, hits[1:], strict=False))


def test_pmids_filter_restricts_results(base_build: Path, abstracts: list[dict[str, Any]], embedder: Embedder) -> None:
    index = open_index(base_build / "index", embedder)
    question = question_from(abstracts[3])
    allowed = {abstracts[10]["pmid"], abstracts[11]["pmid"]}
    hits = index.search(question, k=10, pmids=allowed)[0]
    assert hits and {h.pmid for h in hits} == allowed
    per_query = index.search([question, question], k=3, pmids=[[abstracts[3]["pmid"]], [abstracts[12]["pmid"]]])
    assert {h.pmid for h in per_query[0]} == {abstracts[3]["pmid"]}
    assert {h.pmid for h in per_query[1]} == {abstracts[12]["pmid"]}
    assert index.search(question, k=3, pmids=[1])[0] == []


def test_second_rebuild_embeds_nothing(workspace: Path, run_rebuild: Callable[..., RebuildSummary]) -> None:
    manifest = workspace / "index" / "manifest.json"
    before, files_before = manifest.read_text(), _shard_files(workspace)
    summary = run_rebuild(workspace)
    assert (summary.embedded, summary.shards_written, summary.full) == (0, 0, False)
    assert summary.shards_kept > 1
    assert _shard_files(workspace) == files_before
    assert _manifest_shards(before) == _manifest_shards(manifest.read_text())
    resolved = json.loads((workspace / "index" / "config.resolved.json").read_text())
    assert resolved["config"]["shard_size"] == summary_shard_size(workspace)


def summary_shard_size(root: Path) -> int:
    return int(json.loads((root / "index" / "manifest.json").read_text())["shard_size"])


def test_adding_articles_embeds_only_them(
    workspace: Path, abstracts: list[dict[str, Any]], embedder: Embedder, run_rebuild: Callable[..., RebuildSummary]
) -> None:
    new = abstracts[40:44]
    write_articles(workspace / "store", new)
    files_before = _shard_files(workspace)
    summary = run_rebuild(workspace)
    index = open_index(workspace / "index", embedder)
    new_chunks = sum(1 for p in (index.shards.sorted_ids >> 8).tolist() if p in {r["pmid"] for r in new})
    assert summary.embedded == new_chunks > 0
    assert summary.shards_kept >= 1 and summary.shards_written >= 1
    assert len(files_before & _shard_files(workspace)) == 2 * summary.shards_kept
    hits = index.search([question_from(r) for r in new], k=1)
    assert [h[0].pmid for h in hits] == [r["pmid"] for r in new]


def test_changed_article_is_reembedded_and_deleted_article_disappears(
    workspace: Path, abstracts: list[dict[str, Any]], embedder: Embedder, run_rebuild: Callable[..., RebuildSummary]
) -> None:
    gone, changed = abstracts[5], dict(abstracts[6])
    changed["abstract"] = "Zebrafish fins regrow after amputation through blastema formation."
    delete_articles(workspace / "store", [gone["pmid"]])
    write_articles(workspace / "store", [changed], version=2)
    summary = run_rebuild(workspace)
    assert summary.embedded == 1
    index = open_index(workspace / "index", embedder)
    pmids = index.pmids()
    assert gone["pmid"] not in pmids and changed["pmid"] in pmids
    assert all(h.pmid != gone["pmid"] for h in index.search(question_from(gone), k=10)[0])
    assert index.search("how do zebrafish fins regrow", k=1)[0][0].pmid == changed["pmid"]
    assert index.search("anything", k=5, pmids=[gone["pmid"]])[0] == []


def test_ivf_factory_recall_against_flat(
    workspace: Path,
    abstracts: list[dict[str, Any]],
    embedder: Embedder,
    run_rebuild: Callable[..., RebuildSummary],
    caplog: pytest.LogCaptureFixture,
) -> None:
    flat = open_index(workspace / "index", embedder)
    queries = embedder.encode([question_from(r) for r in abstracts[:40]])
    exact = [[(h.pmid, h.chunk) for h in hits] for hits in flat.search_vectors(queries, k=10)]
    with caplog.at_level(logging.WARNING, logger="indexer.build"):
        summary = run_rebuild(workspace, factory="IVF4,Flat")
    assert summary.full and "factory changed from IDMap2,Flat to IVF4,Flat" in caplog.text
    assert summary.embedded == 0, "vectors of a Flat index are reused when only the factory changes"
    assert summary.nprobe is not None and summary.recall is not None and summary.recall >= 0.95
    ivf = open_index(workspace / "index", embedder)
    assert ivf.manifest.quantizer_sha256 and ivf.shards.shared_quantizer, "IVF shards probed with one quantizer"
    found = [[(h.pmid, h.chunk) for h in hits] for hits in ivf.search_vectors(queries, k=10)]
    recall = np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact, strict=True)])
    assert recall >= 0.95
    allowed = [abstracts[20]["pmid"], abstracts[30]["pmid"]]
    filtered = ivf.search_vectors(queries[:3], k=10, pmids=allowed)
    assert all(hits and {h.pmid for h in hits} == set(allowed) for hits in filtered)


def test_changed_model_forces_full_rebuild(
    workspace: Path, embedder: Embedder, run_rebuild: Callable[..., RebuildSummary], caplog: pytest.LogCaptureFixture
) -> None:
    manifest = workspace / "index" / "manifest.json"
    manifest.write_text(manifest.read_text().replace("sentence-transformers/all-MiniLM-L6-v2", "old/model"))
    with caplog.at_level(logging.WARNING, logger="indexer.build"):
        summary = run_rebuild(workspace)
    assert summary.full and "model changed from old/model to sentence-transformers/all-MiniLM-L6-v2" in caplog.text
    assert summary.embedded == summary.vectors


def _shard_files(root: Path) -> set[str]:
    return {p.name for p in (root / "index" / "shards").iterdir()}


def _manifest_shards(text: str) -> list[str]:
    return [s["index_sha256"] for s in json.loads(text)["shards"]]
