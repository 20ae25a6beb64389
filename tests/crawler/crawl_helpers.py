"""Helpers of the crawler tests: running `scrapy crawl pubmed` and reading what it stored."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from devtools.local_eutils import LocalEutils

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "data" / "pubmed"

# Quick defaults for tests where the pace is not the subject.
FAST = {
    "PUBMED_RATE": "50",
    "PUBMED_BATCH_SIZE": "10",
    "PUBMED_RETRY_BACKOFF": "0.05",
    "PUBMED_FLUSH_SECONDS": "0.5",
    "PUBMED_PROGRESS_INTERVAL": "1",
    "DOWNLOAD_TIMEOUT": "10",
    "LOG_LEVEL": "INFO",
}


def crawl_command(server: LocalEutils, store: Path, args: Sequence[str], settings: dict[str, str]) -> list[str]:
    merged = {**FAST, "PUBMED_EUTILS_URL": server.url, "PUBMED_STORE": str(store), **settings}
    command = [sys.executable, "-m", "scrapy", "crawl", "pubmed"]
    for arg in args:
        command += ["-a", arg]
    for key, value in merged.items():
        command += ["-s", f"{key}={value}"]
    return command


def crawl_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NCBI_API_KEY"}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


def raw_pmids(store: Path) -> list[int]:
    """Every PMID row in every published article part (duplicates included)."""
    pmids: list[int] = []
    if not (store / "articles").is_dir():
        return pmids
    for part in sorted((store / "articles").glob("part-*.parquet")):
        pmids += pq.read_table(part, columns=["pmid"]).column("pmid").to_pylist()
    return pmids


def summary(store: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((store / "crawl-summary.json").read_text())
    return result


def write_ids(path: Path, lines: Sequence[object]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path
