"""Warm-up as a whole number of optimiser steps (read alike by every transformers version), and report_to."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.trainer.conftest import synthetic_questions, tiny_config
from trainer.errors import TrainerError
from trainer.questions import parse_bioasq


@pytest.mark.parametrize(
    ("values", "examples", "total", "warmup"),
    [
        ({"max_steps": 100, "warmup_ratio": 0.06}, 10, 100, 6),
        ({"max_steps": 4, "warmup_ratio": 0.06}, 10, 4, 1),  # ceil: a ratio above 0 warms up at least one step
        ({"epochs": 4.0, "batch_size": 16, "warmup_ratio": 0.06}, 84, 24, 2),  # 6 batches an epoch
        ({"epochs": 4.0, "batch_size": 16, "grad_accum": 2, "warmup_ratio": 0.1}, 84, 12, 2),  # 3 updates an epoch
        ({"epochs": 1.5, "batch_size": 10, "warmup_ratio": 0.5}, 95, 15, 8),
        ({"epochs": 4.0, "batch_size": 16, "warmup_ratio": 0.0}, 84, 24, 0),
    ],
)
def test_warmup_is_a_share_of_the_optimiser_steps(
    tmp_path: Path, values: dict[str, object], examples: int, total: int, warmup: int
) -> None:
    from trainer.fit import optimiser_steps, warmup_steps

    cfg = tiny_config(tmp_path, **{"max_steps": -1, **values})
    assert optimiser_steps(cfg, examples) == total
    assert warmup_steps(cfg, examples) == warmup


def test_the_scheduler_warms_up_for_exactly_those_steps(tmp_path: Path) -> None:
    import torch
    from transformers import get_scheduler

    from trainer.fit import optimiser_steps, training_arguments

    cfg = tiny_config(tmp_path, max_steps=-1, epochs=4.0, batch_size=16, warmup_ratio=0.2, learning_rate=1e-3)
    args = training_arguments(cfg, tmp_path / "run", cuda=False, has_valid=False, train_examples=84)
    total = optimiser_steps(cfg, 84)
    assert isinstance(args.warmup_steps, int) and args.warmup_steps == 5  # ceil(0.2 * 24)
    warm = args.get_warmup_steps(total)
    assert warm == 5
    optimiser = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
    schedule = get_scheduler("linear", optimiser, num_warmup_steps=warm, num_training_steps=total)
    rates = []
    for _ in range(total):
        rates.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        schedule.step()
    assert rates[0] == 0.0 and all(a < b for a, b in zip(rates[:warm], rates[1 : warm + 1], strict=True))
    assert rates[warm] == pytest.approx(cfg.learning_rate)
    assert all(a > b for a, b in zip(rates[warm:], rates[warm + 1 :], strict=False))


def test_tensorboard_event_files_land_in_the_run_folder(tmp_path: Path) -> None:
    pytest.importorskip("tensorboardX")
    from trainer.fit import fit
    from trainer.splits import build_splits

    cfg = tiny_config(tmp_path, report_to="tensorboard", max_steps=2, eval_steps=2, quant="none")
    build_splits(parse_bioasq(synthetic_questions()), cfg)
    fit(cfg)
    events = sorted((cfg.out / "tensorboard").glob("events.out.tfevents.*"))
    assert events, list(cfg.out.rglob("*"))
    data = b"".join(e.read_bytes() for e in events)
    assert b"train/loss" in data and b"eval/macro_f1" in data


def test_report_to_none_writes_no_event_files(tiny_run: tuple[object, object]) -> None:
    cfg, _ = tiny_run
    assert cfg.report_to == "none"  # type: ignore[attr-defined]
    assert not list(Path(cfg.out).rglob("events.out.tfevents.*"))  # type: ignore[attr-defined]


def test_tensorboard_without_a_writer_library_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.fit import fit

    for name in ("tensorboardX", "tensorboard", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)  # import of these now raises ImportError
    cfg = tiny_config(tmp_path, report_to="tensorboard")
    with pytest.raises(TrainerError, match="needs tensorboard or tensorboardX: pip install tensorboardX"):
        fit(cfg)
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_report_to_flag_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["fit", "--splits", str(tmp_path), "--report-to", "wandb"])
    assert result.exit_code == 2
    assert "--report-to" in result.output  # the error names the flag, not the config key
