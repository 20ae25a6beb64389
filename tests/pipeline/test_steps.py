"""The step runner on small real commands: markers, skip, re-run from a changed step, failure, resume flags."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pipeline.steps import Step, StepFailed, run_steps

LOG = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + ' ' + ' '.join(sys.argv[3:]) + '\\n')"


def _step(tmp: Path, name: str, **kwargs: object) -> Step:
    """A step that appends its name (and any extra arguments) to ``<tmp>/log`` and creates ``<tmp>/<name>.out``."""
    code = LOG + f"; open({str(tmp / (name + '.out'))!r}, 'w').write('x')"
    return Step(name, [sys.executable, "-c", code, str(tmp / "log"), name], **kwargs)  # type: ignore[arg-type]


def _ran(tmp: Path) -> list[str]:
    log = tmp / "log"
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return [line.strip() for line in lines]


def _steps(tmp: Path, b_inputs: dict[str, object] | None = None) -> list[Step]:
    return [
        _step(tmp, "a", inputs={"x": 1}, outputs=(tmp / "a.out",)),
        _step(tmp, "b", inputs=b_inputs or {"y": 1}, outputs=(tmp / "b.out",)),
        _step(tmp, "c", outputs=(tmp / "c.out",)),
    ]


def test_markers_make_a_rerun_skip_finished_steps(tmp_path: Path) -> None:
    markers = tmp_path / "steps"
    lines: list[str] = []
    summary = run_steps(_steps(tmp_path), markers, lines.append)
    assert _ran(tmp_path) == ["a", "b", "c"] and summary.ran == ["a", "b", "c"]
    marker = json.loads((markers / "b.done.json").read_text())
    assert marker["step"] == "b" and marker["inputs"] == {"y": 1} and marker["argv"][-1] == "b"
    assert lines[0].startswith("[1/3] a: running: ") and lines[1].startswith("[1/3] a: done in ")
    again: list[str] = []
    summary = run_steps(_steps(tmp_path), markers, again.append)
    assert _ran(tmp_path) == [] and summary.skipped == ["a", "b", "c"] and summary.ran == []
    assert again[0].startswith("[1/3] a: finished ") and again[0].endswith(", skipped")


def test_changed_inputs_rerun_that_step_and_the_later_ones(tmp_path: Path) -> None:
    markers = tmp_path / "steps"
    run_steps(_steps(tmp_path), markers, lambda _: None)
    first_a = (markers / "a.done.json").read_bytes()
    _ran(tmp_path)
    summary = run_steps(_steps(tmp_path, {"y": 2}), markers, lambda _: None)
    assert _ran(tmp_path) == ["b", "c"] and summary.skipped == ["a"]
    assert (markers / "a.done.json").read_bytes() == first_a
    assert json.loads((markers / "b.done.json").read_text())["inputs"] == {"y": 2}


def test_a_missing_output_counts_as_unfinished(tmp_path: Path) -> None:
    markers = tmp_path / "steps"
    run_steps(_steps(tmp_path), markers, lambda _: None)
    _ran(tmp_path)
    (tmp_path / "c.out").unlink()
    run_steps(_steps(tmp_path), markers, lambda _: None)
    assert _ran(tmp_path) == ["c"]


def test_a_failed_step_stops_the_run_and_leaves_no_marker(tmp_path: Path) -> None:
    markers = tmp_path / "steps"
    steps = _steps(tmp_path)
    steps[1] = Step("b", [sys.executable, "-c", "raise SystemExit(3)"], inputs={"y": 1})
    with pytest.raises(StepFailed, match="step 'b' failed with exit code 3") as caught:
        run_steps(steps, markers, lambda _: None)
    assert caught.value.name == "b" and caught.value.returncode == 3
    assert _ran(tmp_path) == ["a"]
    assert (markers / "a.done.json").is_file() and not (markers / "b.done.json").exists()
    assert not (markers / "c.done.json").exists()
    run_steps(_steps(tmp_path), markers, lambda _: None)  # fixed: resumes at b
    assert _ran(tmp_path) == ["b", "c"]


def test_later_markers_go_before_a_changed_step_runs(tmp_path: Path) -> None:
    markers = tmp_path / "steps"
    run_steps(_steps(tmp_path), markers, lambda _: None)
    _ran(tmp_path)
    steps = _steps(tmp_path, {"y": 2})
    steps[1] = Step("b", [sys.executable, "-c", "raise SystemExit(1)"], inputs={"y": 2})
    with pytest.raises(StepFailed):
        run_steps(steps, markers, lambda _: None)
    assert (markers / "a.done.json").is_file()
    assert not (markers / "b.done.json").exists() and not (markers / "c.done.json").exists()


def test_a_step_started_again_with_the_same_inputs_resumes(tmp_path: Path) -> None:
    markers = tmp_path / "steps"

    def steps(y: int) -> list[Step]:
        return [_step(tmp_path, "fit", inputs={"y": y}, on_resume=["--resume"], on_fresh=["--no-resume"])]

    lines: list[str] = []
    run_steps(steps(1), markers, lines.append)
    assert _ran(tmp_path) == ["fit --no-resume"]
    (markers / "fit.done.json").unlink()  # as after a kill: started, never finished
    run_steps(steps(1), markers, lines.append)
    assert _ran(tmp_path) == ["fit --resume"] and any("fit: resuming: " in line for line in lines)
    run_steps(steps(2), markers, lines.append)  # other inputs: start over
    assert _ran(tmp_path) == ["fit --no-resume"]
