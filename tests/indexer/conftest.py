"""Fixtures for indexer tests: real abstracts, stores written with ArticleWriter, one loaded model."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from indexer.build import RebuildSummary, rebuild
from indexer.config import IndexerConfig
from indexer.embedding import Embedder
from store.writer import ArticleWriter

DATA = Path(__file__).resolve().parents[1] / "data" / "indexer" / "abstracts.jsonl"
SHARD_SIZE = 2_000_000
"""The fixture PMIDs (17.9M-25.5M) fall into several shards of this width."""


def load_abstracts() -> list[dict[str, Any]]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def abstracts() -> list[dict[str, Any]]:
    rows = load_abstracts()
    assert len(rows) >= 40
    return rows


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


def write_articles(store: Path, rows: Iterable[dict[str, Any]], version: int = 1) -> None:
    with ArticleWriter(store) as writer:
        for row in rows:
            writer.write(
                {
                    "pmid": row["pmid"],
                    "version": version,
                    "title": row["title"],
                    "abstract": row["abstract"],
                    "source": "efetch",
                }
            )


def delete_articles(store: Path, pmids: Iterable[int]) -> None:
    with ArticleWriter(store) as writer:
        writer.delete(list(pmids), source="efetch")


def make_config(store: Path, index: Path, **overrides: Any) -> IndexerConfig:
    values: dict[str, Any] = {"store": store, "index": index, "shard_size": SHARD_SIZE, "progress": False}
    values.update(overrides)
    return IndexerConfig.model_validate(values)


@pytest.fixture(scope="session")
def base_build(tmp_path_factory: pytest.TempPathFactory, abstracts: list[dict[str, Any]], embedder: Embedder) -> Path:
    """A store of the first 40 abstracts and its index, built once; tests copy it."""
    root = tmp_path_factory.mktemp("base")
    write_articles(root / "store", abstracts[:40])
    summary = rebuild(make_config(root / "store", root / "index"), embedder)
    assert summary.embedded == summary.vectors > 40
    return root


@pytest.fixture()
def workspace(tmp_path: Path, base_build: Path) -> Path:
    """A private copy of the base store and index."""
    shutil.copytree(base_build / "store", tmp_path / "store")
    shutil.copytree(base_build / "index", tmp_path / "index")
    return tmp_path


@pytest.fixture()
def run_rebuild(embedder: Embedder) -> Callable[..., RebuildSummary]:
    def run(root: Path, **overrides: Any) -> RebuildSummary:
        return rebuild(make_config(root / "store", root / "index", **overrides), embedder)

    return run
