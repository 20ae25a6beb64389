"""The layering rules of docs/design.md: imports run one way, every module says what it owns."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each package may import of ours (itself included). Nothing imports crawler (its
# Scrapy parts run only under Scrapy) or devtools (not shipped).
ALLOWED = {
    "store": {"store"},
    "eutils": {"store", "eutils"},
    "crawler": {"store", "eutils", "crawler"},
    "indexer": {"store", "eutils", "indexer"},
    "trainer": {"store", "eutils", "indexer", "trainer"},
    "pipeline": {"store", "eutils", "indexer", "trainer", "pipeline"},
}
OURS = {*ALLOWED, "devtools"}
SHIPPED = tuple(ALLOWED)


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _our_imports(path: Path) -> set[str]:
    """Every absolute import of ours in a module, including those inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] in OURS}


@pytest.mark.parametrize("package", SHIPPED)
def test_imports_run_one_way(package: str) -> None:
    assert _modules(package), f"package {package} has no modules"
    allowed = ALLOWED[package]
    for path in _modules(package):
        for name in _our_imports(path):
            top = name.split(".")[0]
            assert top in allowed, f"{path.relative_to(ROOT)} imports {name}, which {package} may not import"


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('"""x"""\n\ndef f():\n    from crawler.client import x\n    import devtools.local_eutils\n')
    assert _our_imports(module) == {"crawler.client", "devtools.local_eutils"}


@pytest.mark.parametrize("package", [*SHIPPED, "devtools"])
def test_every_module_has_a_docstring(package: str) -> None:
    for path in _modules(package):
        tree = ast.parse(path.read_text(), str(path))
        if tree.body or path.name != "__init__.py":
            assert ast.get_docstring(tree), f"{path.relative_to(ROOT)} has no module docstring"


def test_dev_servers_are_not_shipped() -> None:
    shipped = {path.stem for package in SHIPPED for path in _modules(package)}
    assert not shipped & {"local_eutils", "local_recorder", "baseline_server"}, shipped


def test_every_shipped_package_is_installed_and_type_checked() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    installed = set(project["tool"]["setuptools"]["packages"])
    checked = set(project["tool"]["mypy"]["packages"])
    for package in SHIPPED:
        assert package in installed, f"{package} missing from [tool.setuptools] packages"
        assert package in checked, f"{package} missing from mypy packages"
