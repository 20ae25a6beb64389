"""`trainer tune`: Optuna search over learning rate, LoRA dropout, class-weight penalty and batch size.

Each trial trains into ``<out>/trials/trial-NNN`` and is scored by its best valid macro F1;
every finished trial's config and score are rewritten atomically to ``<out>/trials.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from store.atomic import atomic_write_json
from trainer.config import TrainerConfig
from trainer.errors import TrainerError

log = logging.getLogger(__name__)


def suggest(trial: Any, base: TrainerConfig, folder: Path) -> TrainerConfig:
    """The trial's config: searched values over ``base``."""
    values = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 2e-3, log=True),
        "lora_dropout": trial.suggest_float("lora_dropout", 0.0, 0.3),
        "class_weight_penalty": trial.suggest_float("class_weight_penalty", 0.5, 3.0),
        "batch_size": trial.suggest_categorical("batch_size", [8, 16, 32]),
        "out": folder / f"trial-{trial.number:03d}",
        "resume": False,
    }
    return TrainerConfig.model_validate({**base.model_dump(), **values})


def tune(cfg: TrainerConfig) -> dict[str, Any]:
    """Run ``cfg.trials`` trials; returns the best trial's number, score and values."""
    import optuna

    from trainer.fit import fit

    folder = Path(cfg.out)
    records: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        trial_cfg = suggest(trial, cfg, folder / "trials")
        result = fit(trial_cfg)
        if not result.best_valid:
            raise TrainerError(f"{cfg.splits}: tuning needs a non-empty valid split")
        value = float(result.best_valid["macro_f1"])
        records.append(
            {
                "trial": trial.number,
                "valid_macro_f1": value,
                "params": trial.params,
                "config": trial_cfg.model_dump(mode="json"),
            }
        )
        atomic_write_json(folder / "trials.json", records)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    study.optimize(objective, n_trials=cfg.trials)
    best = {"trial": study.best_trial.number, "valid_macro_f1": study.best_value, "params": study.best_params}
    atomic_write_json(folder / "best_trial.json", best)
    return best
