"""Every command explains itself: walked by introspection of the Typer apps, checked against the docs' synopses.

Each command and subcommand of ``store``, ``indexer``, ``trainer``, ``pipeline`` (when the
tree has one) and ``python -m crawler.baseline`` has help text and answers ``--help``; each
is named in a synopsis code block of docs/; each flag such a synopsis writes exists on that
command. The few entry points that are not Typer apps are run with ``--help``.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
APPS = {
    "store": "store.cli",
    "indexer": "indexer.cli",
    "trainer": "trainer.cli",
    "python -m crawler.baseline": "crawler.baseline",
}
if (ROOT / "pipeline" / "cli.py").is_file():
    APPS["pipeline"] = "pipeline.cli"
FLAG = re.compile(r"(?<![\w.-])(--?[A-Za-z][\w-]*)")
runner = CliRunner()


def _walk(name: str, command: Any) -> Iterator[tuple[str, Any]]:
    yield name, command
    for sub_name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _walk(f"{name} {sub_name}", sub)


def _commands() -> dict[str, tuple[Any, Any, list[str]]]:
    """Full name -> (app, click command, argv after the program name)."""
    found: dict[str, tuple[Any, Any, list[str]]] = {}
    for prog, module in APPS.items():
        app = importlib.import_module(module).app
        for full, command in _walk(prog, get_command(app)):
            found[full] = (app, command, full[len(prog) :].split())
    return found


COMMANDS = _commands()


def _synopses() -> dict[str, set[str]]:
    """Command name -> flags written for it in docs/*.md code blocks (continuation lines included)."""
    out: dict[str, set[str]] = {}
    for doc in sorted((ROOT / "docs").glob("*.md")):
        current: str | None = None
        in_block = False
        for raw in doc.read_text(encoding="utf-8").splitlines():
            if raw.startswith("```"):
                in_block, current = not in_block, None
                continue
            if not in_block:
                continue
            line = raw.removeprefix("$ ")
            if line[:1].isspace() and current is not None:
                out[current] |= set(FLAG.findall(line))
                continue
            current = None
            for name in sorted(COMMANDS, key=len, reverse=True):
                if line == name or line.startswith(name + " "):
                    current = name
                    out.setdefault(name, set()).update(FLAG.findall(line[len(name) :]))
                    break
    return out


SYNOPSES = _synopses()


def _flags_of(command: Any) -> set[str]:
    flags = {"--help"}
    for param in command.params:
        flags.update(param.opts, getattr(param, "secondary_opts", []))
    return flags


def test_walk_found_every_app_and_subcommand() -> None:
    assert {"store stats", "indexer rebuild", "trainer fit", "python -m crawler.baseline"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_has_help_and_answers_help(name: str) -> None:
    app, command, argv = COMMANDS[name]
    assert (command.help or "").strip(), f"{name}: no help text"
    result = runner.invoke(app, [*argv, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output.splitlines()) >= 3


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_is_in_a_docs_synopsis(name: str) -> None:
    assert name in SYNOPSES, f"{name!r} is not named in any code block of docs/*.md"


@pytest.mark.parametrize("name", sorted(SYNOPSES))
def test_every_documented_flag_exists(name: str) -> None:
    _, command, _ = COMMANDS[name]
    unknown = sorted(SYNOPSES[name] - _flags_of(command))
    assert not unknown, f"docs write {unknown} for `{name}`, which has no such flag"


def test_synopsis_parser_sees_flags() -> None:
    assert {"--shard-size", "--show-config", "--engine"} <= SYNOPSES["indexer rebuild"]
    assert {"--resume", "--no-resume", "--learning-rate"} <= SYNOPSES["trainer fit"]


@pytest.mark.parametrize(
    "command",
    [
        [str(BIN / "store")],
        [str(BIN / "indexer")],
        [str(BIN / "trainer")],
        [sys.executable, "-m", "devtools.local_eutils"],
        [sys.executable, "demo/run_demo.py"],
        [sys.executable, "demo/pubmedqa_xml.py"],
        [str(BIN / "scrapy"), "crawl", "pubmed"],
    ],
    ids=lambda c: " ".join([Path(c[0]).name, *c[1:]]),
)
def test_entry_points_answer_help(command: list[str]) -> None:
    result = subprocess.run([*command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()
    assert len(result.stdout.splitlines()) >= 3
