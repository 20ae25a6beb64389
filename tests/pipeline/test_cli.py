"""`pipeline` follows the shared CLI contract: --version, --show-config with sources, exit 2 on bad usage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "demo" / "pubmedqa_sample.json"


def _pipeline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_version_exits_0() -> None:
    result = _pipeline("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pubmed-pipeline ")


def test_show_config_names_sources_and_runs_nothing(tmp_path: Path) -> None:
    work = tmp_path / "work"
    result = _pipeline("run", "--pubmedqa", str(SAMPLE), "--seed", "5", "--work", str(work), "--show-config")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" = ", 1) for line in result.stdout.splitlines())
    assert lines["seed"] == "5  (--seed)"
    assert lines["run_name"] == "'run'  (default)"
    assert lines["kind"] == "'pubmedqa'  (--pubmedqa)"
    assert not work.exists()


def test_two_inputs_are_bad_usage() -> None:
    result = _pipeline("run", "--pubmedqa", str(SAMPLE), "--bioasq", str(SAMPLE))
    assert result.returncode == 2
    assert "exactly one of --bioasq FILE or --pubmedqa FILE" in result.stderr
