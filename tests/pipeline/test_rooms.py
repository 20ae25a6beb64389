"""Each stage stays in its room: the pipeline imports no crawler module (the crawl is a
``scrapy crawl`` subprocess), and the trainer no longer reaches into the crawler at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_layout import _our_imports

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {
    "pipeline": ("store", "eutils", "indexer", "trainer", "pipeline"),
    "trainer": ("store", "eutils", "indexer", "trainer"),
}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_stay_in_their_room(package: str) -> None:
    modules = sorted((ROOT / package).rglob("*.py"))
    assert modules
    for path in modules:
        for name in _our_imports(path):
            assert name.split(".")[0] in ALLOWED[package], f"{path.relative_to(ROOT)} imports {name}"


def test_fetch_missing_is_gone_from_the_trainer() -> None:
    from trainer.config import TrainerConfig

    assert "fetch_missing" not in TrainerConfig.model_fields and "eutils_url" not in TrainerConfig.model_fields
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "splits", "--bioasq", "x.json", "--fetch-missing"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "No such option: --fetch-missing" in result.stderr
