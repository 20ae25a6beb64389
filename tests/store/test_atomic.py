"""Atomic writes: a failed or killed write leaves the previous file intact and no temp visible."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from store.atomic import atomic_write, atomic_write_bytes, atomic_write_json, is_temp_name, remove_stale_temps


def test_publishes_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_exception_inside_keeps_previous_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target, "w") as handle:
        handle.write('{"v": 2, "half')
        raise RuntimeError("boom")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_rejects_append_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="modes"), atomic_write(tmp_path / "x", "ab"):
        pass


def test_sigkill_mid_write_leaves_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    atomic_write_bytes(target, b"old" * 1000)
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from store.atomic import atomic_write
        with atomic_write({str(target)!r}) as handle:
            handle.write(b"new" * 100000)
            handle.flush()
            Path({str(ready)!r}).write_text("1")
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "writer never started writing"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert target.read_bytes() == b"old" * 1000
    temps = [p for p in tmp_path.iterdir() if is_temp_name(p.name)]
    assert len(temps) == 1, "the killed writer's temp file is left under a temp name"
    assert remove_stale_temps(tmp_path, older_than_s=3600) == 0, "a fresh temp may belong to a live writer"
    assert remove_stale_temps(tmp_path, older_than_s=0) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin", "ready"]
