"""``adapter='full'``: every weight is trained, the whole model is saved and loads back for eval."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import synthetic_questions, tiny_config
from trainer.questions import parse_bioasq


def test_full_fine_tuning_needs_unquantised_weights(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="adapter 'full'.*quant = 'none'"):
        tiny_config(tmp_path, adapter="full", quant="nf4")


def test_full_fine_tuning_trains_every_weight_and_round_trips(tmp_path: Path) -> None:
    from transformers import set_seed

    from trainer.evaluate import evaluate_run, view_logits
    from trainer.fit import fit
    from trainer.model import build_model, load_trained
    from trainer.splits import build_splits, read_split

    cfg = tiny_config(tmp_path, adapter="full", quant="none", max_steps=2, eval_steps=2)
    build_splits(parse_bioasq(synthetic_questions()), cfg)
    result = fit(cfg)
    assert result.steps == 2
    saved = Path(cfg.out) / "adapter"
    assert (saved / "config.json").is_file() and not (saved / "adapter_config.json").exists()

    set_seed(cfg.seed)  # fit seeds the same way before building: this is the model before training
    before = build_model(cfg, cuda=False).state_dict()
    trained, tokenizer, loaded = load_trained(cfg.out, cuda=False)
    after = trained.state_dict()
    assert loaded.adapter == "full" and set(before) == set(after)
    assert not any("lora_" in k for k in after)
    weights = [k for k in before if before[k].is_floating_point() and "embeddings" not in k]
    unchanged = [k for k in weights if torch.equal(before[k], after[k])]
    assert len(weights) > 50 and not unchanged, f"weights not trained: {unchanged[:3]}"

    views = read_split(cfg.splits, "test")
    again, tok2, _ = load_trained(cfg.out, cuda=False)
    assert torch.equal(
        torch.from_numpy(view_logits(trained, tokenizer, views, cfg.max_length)),
        torch.from_numpy(view_logits(again, tok2, views, cfg.max_length)),
    )
    assert evaluate_run(cfg.out).questions == len({v.question_id for v in views})
