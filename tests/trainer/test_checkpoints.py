"""Class weights count questions, not views; a fit killed while checkpointing resumes from a complete one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.conftest import synthetic_questions, tiny_config
from trainer.checkpoints import MARKER, last_complete_checkpoint, mark_complete
from trainer.fit import question_class_weights
from trainer.views import View

REPO = Path(__file__).resolve().parents[2]


def _view(qid: str, label: str, kind: str = "prompt") -> View:
    return View(qid, kind, f"question {qid}", f"context {kind}", label, (), "bioasq")


def test_class_weights_count_questions_not_views() -> None:
    # 30 yes questions with one view each; 10 no questions augmented to 5 views each (50 no views)
    views = [_view(f"y{i}", "yes") for i in range(30)]
    for i in range(10):
        views += [_view(f"n{i}", "no", kind) for kind in ("prompt", "a", "b", "c", "d")]
    w_no, w_yes = question_class_weights(views)
    assert w_no == pytest.approx(40 / (2 * 10)) and w_yes == pytest.approx(40 / (2 * 30))
    assert w_no > w_yes  # over views (50 no, 30 yes) the weights would come out inverted


def test_torn_checkpoints_are_skipped_and_removed(tmp_path: Path) -> None:
    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "optimizer.pt").write_bytes(b"x" * 10)
    mark_complete(tmp_path / "checkpoint-2", 2)
    mark_complete(tmp_path / "checkpoint-4", 4)
    assert json.loads((tmp_path / "checkpoint-4" / MARKER).read_text())["step"] == 4
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert not (tmp_path / "checkpoint-6").exists()
    assert last_complete_checkpoint(tmp_path / "absent") is None


KILLER = """
import os, signal, sys, json
sys.path.insert(0, {repo!r})
import torch
real_save = torch.save
def save(obj, f, *a, **k):
    if "checkpoint-4" in str(f):  # the second checkpoint: write half of it, then die
        import io
        buf = io.BytesIO(); real_save(obj, buf, *a, **k)
        with open(f, "wb") as h:
            h.write(buf.getvalue()[: len(buf.getvalue()) // 2]); h.flush(); os.fsync(h.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *a, **k)
torch.save = save
from trainer.config import TrainerConfig
from trainer.fit import fit
fit(TrainerConfig.model_validate(json.loads(sys.argv[1])))
"""


def test_fit_killed_while_checkpointing_resumes_from_the_complete_one(tmp_path: Path) -> None:
    from trainer.fit import fit
    from trainer.questions import parse_bioasq
    from trainer.splits import build_splits

    cfg = tiny_config(tmp_path, max_steps=6, resume=True)
    build_splits(parse_bioasq(synthetic_questions()), cfg)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER.format(repo=str(REPO)), json.dumps(cfg.model_dump(mode="json"))],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    ckpts = Path(cfg.out) / "checkpoints"
    assert (ckpts / "checkpoint-4").is_dir() and not (ckpts / "checkpoint-4" / MARKER).exists()
    assert (ckpts / "checkpoint-2" / MARKER).is_file()
    result = fit(cfg)
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-2")
    assert result.steps == 6
    assert (ckpts / "checkpoint-4" / MARKER).is_file()  # rewritten whole by the resumed fit
