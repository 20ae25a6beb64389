"""The lexical ensemble: weights chosen on valid only (the test split is never read), applied at eval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.trainer.conftest import synthetic_questions, tiny_config
from trainer.ensemble import choose_weight, combine, fit_temperature, p_yes


def test_weight_follows_the_better_source_on_valid() -> None:
    gold = [0, 1, 1, 0, 1, 0, 1, 1]
    lexical = np.array([0.2 if g == 0 else 0.8 for g in gold])  # right every time
    useless = np.zeros((len(gold), 2))
    useless[:, 1] = 3.0  # always a confident yes
    assert choose_weight(useless, lexical, gold, 1.0) < 0.5
    good = np.array([[2.0, -2.0] if g == 0 else [-2.0, 2.0] for g in gold])
    assert combine(good, lexical, 0.5, 1.0) == pytest.approx(0.5 * p_yes(good) + 0.5 * lexical)
    # an overconfident model is cooled down by the temperature
    assert fit_temperature(np.array([[0.0, 8.0], [8.0, 0.0], [0.0, 8.0], [0.0, 8.0]]), [1, 0, 0, 1]) > 1.0


def test_choice_reads_train_and_valid_never_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trainer.fit as fit_module
    import trainer.splits as splits_module
    from trainer.evaluate import evaluate_run
    from trainer.questions import parse_bioasq

    cfg = tiny_config(tmp_path, ensemble="lexical")
    splits_module.build_splits(parse_bioasq(synthetic_questions()), cfg)
    test_file = Path(cfg.splits) / "test.parquet"
    kept = test_file.read_bytes()
    test_file.write_bytes(b"not parquet: reading this fails")  # any reader of the test split would raise
    read: list[str] = []
    real = splits_module.read_split

    def spy(folder: Any, name: str) -> Any:
        read.append(name)
        return real(folder, name)

    monkeypatch.setattr(fit_module, "read_split", spy)
    monkeypatch.setattr(splits_module, "read_split", spy)
    fit_module.fit(cfg)
    assert "test" not in read and {"train", "valid"} <= set(read)
    choice = json.loads((Path(cfg.out) / "ensemble.json").read_text())
    assert 0.0 <= choice["weight_model"] <= 1.0 and choice["temperature"] > 0 and choice["valid_questions"] == 5
    test_file.write_bytes(kept)
    result = evaluate_run(cfg.out)
    assert "model alone" in result.baselines and result.questions == 6
