"""The package layout rules of DESIGN.md: imports run one way, every module says what it owns."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("store", "eutils", "crawler", "indexer", "trainer")
# What each package may import of ours. Nothing imports crawler's Scrapy parts; the
# trainer may use the crawler's plain aiohttp client to fill gaps. devtools (local
# servers for tests, benchmarks and the demo) is imported by no package.
ALLOWED = {
    "store": {"store"},
    "eutils": {"store", "eutils"},
    "crawler": {"store", "eutils", "crawler"},
    "indexer": {"store", "eutils", "indexer"},
    "trainer": {"store", "eutils", "indexer", "trainer", "crawler.client"},
}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _our_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] in (*PACKAGES, "devtools")}


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_run_one_way(package: str) -> None:
    allowed = ALLOWED[package]
    for path in _modules(package):
        for name in _our_imports(path):
            ok = any(name == prefix or name.startswith(prefix + ".") for prefix in allowed)
            assert ok, f"{path.relative_to(ROOT)} imports {name}, which {package} may not import"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_has_a_docstring(package: str) -> None:
    for path in _modules(package):
        tree = ast.parse(path.read_text(), str(path))
        if tree.body or path.name != "__init__.py":
            assert ast.get_docstring(tree), f"{path.relative_to(ROOT)} has no module docstring"
