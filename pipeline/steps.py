"""Steps and completion markers: run a list of commands, skipping the ones already finished.

A `Step` is one command line (run as a subprocess, output passed through) plus what its
result depends on (``inputs``) and the paths it must leave behind (``outputs``). After a
step exits 0, ``<markers>/<name>.done.json`` is written atomically, recording its inputs,
command line and timings. A rerun skips every leading step whose marker exists, records
the same inputs and whose outputs are all present; from the first step that does not,
the markers of that step and every later one are removed and they all run again, in
order. So a killed run resumes at the first unfinished step, and a step whose inputs
changed re-runs together with everything after it.

Before a step starts, ``<name>.started.json`` records its inputs: a step started again
with the same inputs after being killed gets its ``on_resume`` arguments (e.g. resume from
the last checkpoint), one whose inputs changed gets ``on_fresh`` (start over). On Linux a
step's process is killed when the pipeline process dies, so no orphaned stage keeps
writing beside the next run. Memory: one step's record at a time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.atomic import atomic_write_json

DONE_SUFFIX = ".done.json"
STARTED_SUFFIX = ".started.json"


class StepFailed(RuntimeError):
    """A step's command exited non-zero (or was killed); the message names the step and the code."""

    def __init__(self, name: str, returncode: int) -> None:
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"failed with exit code {returncode}"
        super().__init__(f"step '{name}' {how}")
        self.name = name
        self.returncode = returncode


@dataclass(frozen=True)
class Step:
    """One command of the pipeline and what decides whether it must run again."""

    name: str
    argv: list[str]
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[Path, ...] = ()
    on_resume: list[str] = field(default_factory=list)
    on_fresh: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class RunSummary:
    """What a run did: steps skipped (already finished) and run, and the seconds it took."""

    skipped: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _normal(value: Any) -> Any:
    """``value`` as it reads back from JSON, so recorded and current inputs compare equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def done_marker(markers: Path, name: str) -> Path:
    return markers / f"{name}{DONE_SUFFIX}"


def is_finished(step: Step, markers: Path) -> bool:
    """Whether ``step`` has a completion marker for its current inputs and its outputs exist."""
    marker = _read(done_marker(markers, step.name))
    if marker is None or marker.get("inputs") != _normal(step.inputs):
        return False
    return all(Path(p).exists() for p in step.outputs)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL this child when the pipeline process dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))


def shown(argv: Sequence[str]) -> str:
    """A command line as a person would type it (``python -m X`` shown as ``X``)."""
    args = list(argv)
    if len(args) > 2 and args[0] == sys.executable and args[1] == "-m":
        args = args[2:]
    return shlex.join(args)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run_step(step: Step, markers: Path, resume: bool) -> float:
    """Run one step's command; write its marker once it exits 0. Returns its seconds."""
    argv = [*step.argv, *(step.on_resume if resume else step.on_fresh)]
    started_at = _now()
    atomic_write_json(markers / f"{step.name}{STARTED_SUFFIX}", {"inputs": step.inputs, "started_at": started_at})
    began = time.monotonic()
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    env = {**os.environ, **step.env}
    code = subprocess.run(argv, env=env, preexec_fn=preexec, check=False).returncode
    seconds = time.monotonic() - began
    if code != 0:
        raise StepFailed(step.name, code)
    record = {
        "step": step.name,
        "inputs": step.inputs,
        "argv": argv,
        "started_at": started_at,
        "finished_at": _now(),
        "seconds": round(seconds, 3),
    }
    atomic_write_json(done_marker(markers, step.name), record)
    return seconds


def run_steps(steps: Sequence[Step], markers: Path, echo: Callable[[str], None] = print) -> RunSummary:
    """Run ``steps`` in order from the first unfinished one; raises `StepFailed` on the first failure."""
    markers.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    summary = RunSummary()
    total = len(steps)
    first = next((i for i, s in enumerate(steps) if not is_finished(s, markers)), total)
    for i, step in enumerate(steps[:first], start=1):
        marker = _read(done_marker(markers, step.name)) or {}
        echo(f"[{i}/{total}] {step.name}: finished {marker.get('finished_at', 'earlier')}, skipped")
        summary.skipped.append(step.name)
    for later in reversed(steps[first:]):
        done_marker(markers, later.name).unlink(missing_ok=True)
    for i, step in enumerate(steps[first:], start=first + 1):
        previous = _read(markers / f"{step.name}{STARTED_SUFFIX}")
        resume = previous is not None and previous.get("inputs") == _normal(step.inputs)
        how = "resuming" if resume and step.on_resume else "running"
        echo(f"[{i}/{total}] {step.name}: {how}: {shown([*step.argv, *(step.on_resume if resume else step.on_fresh)])}")
        seconds = run_step(step, markers, resume)
        echo(f"[{i}/{total}] {step.name}: done in {seconds:.1f} s")
        summary.ran.append(step.name)
    summary.seconds = time.monotonic() - began
    return summary
