"""Every command and subcommand explains itself with --help and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

COMMANDS = [
    [str(BIN / "store")],
    [str(BIN / "store"), "stats"],
    [str(BIN / "store"), "verify"],
    [str(BIN / "store"), "compact"],
    [str(BIN / "indexer")],
    [str(BIN / "indexer"), "rebuild"],
    [str(BIN / "indexer"), "search"],
    [str(BIN / "indexer"), "verify"],
    [str(BIN / "trainer")],
    *([str(BIN / "trainer"), sub] for sub in ("splits", "fit", "eval", "predict", "tune", "export")),
    [sys.executable, "-m", "crawler.baseline"],
    [sys.executable, "-m", "devtools.local_eutils"],
    [sys.executable, "demo/run_demo.py"],
    [sys.executable, "demo/pubmedqa_xml.py"],
    [str(BIN / "scrapy"), "crawl", "pubmed"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join([Path(c[0]).name, *c[1:]]))
def test_help_exits_0_and_explains(command: list[str]) -> None:
    result = subprocess.run([*command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()
    assert len(result.stdout.splitlines()) >= 3
