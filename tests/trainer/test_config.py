"""TrainerConfig: checks at construction, TOML table [trainer] with CLI overrides, resolved config saved."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from store.config import ConfigError, load_config, write_resolved_config
from trainer.config import TrainerConfig


def test_defaults_are_qlora_all_linear() -> None:
    cfg = TrainerConfig()
    assert cfg.quant == "nf4" and cfg.target_modules == ["all-linear"]
    assert all(f.description for f in TrainerConfig.model_fields.values())


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"lora_dropout": 1.5}, "lora_dropout"),
        ({"quant": "int3"}, "quant"),
        ({"test_fraction": 0.6, "valid_fraction": 0.5}, "test_fraction + valid_fraction"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"augment": "sometimes"}, "augment"),
    ],
)
def test_bad_values_rejected_at_construction(values: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(needle)):
        TrainerConfig.model_validate(values)


def test_toml_table_then_overrides(tmp_path: Path) -> None:
    toml = tmp_path / "trainer.toml"
    toml.write_text('[trainer]\nlora_r = 4\nlearning_rate = 0.001\nquant = "none"\n', encoding="utf-8")
    cfg = load_config(TrainerConfig, "trainer", toml, {"learning_rate": 0.002, "epochs": None})
    assert (cfg.lora_r, cfg.learning_rate, cfg.quant, cfg.epochs) == (4, 0.002, "none", 4.0)
    toml.write_text("[trainer]\nlora_rank = 4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 'lora_rank'"):
        load_config(TrainerConfig, "trainer", toml)


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    from trainer.model import run_config

    cfg = TrainerConfig(lora_r=4, out=tmp_path)
    path = write_resolved_config(cfg, tmp_path)
    assert json.loads(path.read_text())["config"]["lora_r"] == 4
    assert run_config(tmp_path) == cfg
