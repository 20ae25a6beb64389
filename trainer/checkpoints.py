"""Crash-safe training checkpoints: a checkpoint counts only once a completion marker says so.

The Hugging Face Trainer writes ``checkpoint-N/`` file by file; a fit killed halfway leaves
a folder with some files missing or cut short, and resuming from it would fail or load torn
optimizer state. After each save every file of the folder is fsynced, then ``complete.json``
is published through `store.atomic` (temp + fsync + rename). Resume takes the newest folder
with that marker and removes the ones without it. Memory: one folder listing at a time.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from store.atomic import atomic_write_json, fsync_dir

log = logging.getLogger(__name__)

MARKER = "complete.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def fsync_tree(folder: Path) -> int:
    """fsync every file under ``folder`` and every folder in it; returns the number of files."""
    n = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
            n += 1
        fsync_dir(root)
    return n


def mark_complete(folder: str | Path, step: int) -> None:
    """Flush a just-written checkpoint folder to disk, then publish its completion marker."""
    path = Path(folder)
    files = fsync_tree(path)
    atomic_write_json(path / MARKER, {"step": int(step), "files": files})


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every ``checkpoint-N`` folder under ``root``, oldest first."""
    base = Path(root)
    if not base.is_dir():
        return []
    found = []
    for entry in base.iterdir():
        m = _CHECKPOINT.match(entry.name)
        if m and entry.is_dir():
            found.append((int(m.group(1)), entry))
    return sorted(found)


def last_complete_checkpoint(root: str | Path, remove_torn: bool = True) -> str | None:
    """The newest checkpoint with a completion marker (None if none); torn ones are removed first."""
    best: Path | None = None
    for _step, folder in checkpoints(root):
        if is_complete(folder):
            best = folder
        elif remove_torn:
            log.warning("removing torn checkpoint %s (no %s: the fit writing it was stopped)", folder, MARKER)
            shutil.rmtree(folder, ignore_errors=True)
    return str(best) if best is not None else None


def with_complete_checkpoints(trainer_cls: type) -> type:
    """Subclass of a transformers ``Trainer`` class that marks each checkpoint complete once written."""

    class CompleteCheckpoints(trainer_cls):
        def _save_checkpoint(self, model: object, trial: object) -> None:
            super()._save_checkpoint(model, trial)
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            if folder.is_dir():
                mark_complete(folder, self.state.global_step)

    CompleteCheckpoints.__name__ = trainer_cls.__name__
    return CompleteCheckpoints
