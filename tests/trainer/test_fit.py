"""A short QLoRA fit: LoRA weights move, base weights do not; adapter round-trip; eval and predict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tests.trainer.conftest import synthetic_questions
from trainer.config import TrainerConfig
from trainer.questions import parse_bioasq


def test_fit_trains_lora_and_leaves_base_weights(tiny_run: tuple[TrainerConfig, Any]) -> None:
    from transformers import set_seed

    from trainer.fit import question_class_weights
    from trainer.model import build_model, load_trained
    from trainer.splits import read_split

    cfg, result = tiny_run
    assert result.steps == 4
    assert result.class_weights == question_class_weights(read_split(cfg.splits, "train"))
    trained, _, _ = load_trained(cfg.out, cuda=False)
    set_seed(cfg.seed)  # fit seeds the same way before building, so this is the model before training
    fresh = build_model(cfg, cuda=False)
    before = fresh.state_dict()
    after = trained.state_dict()
    lora = [k for k in before if "lora_B" in k]
    assert lora and all(k in after for k in lora)
    assert any(not torch.equal(before[k], after[k]) for k in lora), "LoRA weights did not change"
    head = [k for k in before if "modules_to_save" in k]
    assert any(not torch.equal(before[k], after[k]) for k in head), "head did not change"
    # the pretrained weights (the classifier is new: its frozen original is a random init, not a base weight)
    base = [
        k
        for k in before
        if "lora_" not in k
        and "modules_to_save" not in k
        and ".classifier." not in k
        and before[k].dtype != torch.int64
    ]
    assert len(base) > 50
    changed = [k for k in base if not torch.equal(before[k], after[k])]
    assert not changed, f"base weights changed: {changed[:3]}"
    packed = [k for k in base if before[k].dtype == torch.uint8]
    assert packed, "no 4-bit packed weights in the state dict"


def test_adapter_round_trip_gives_identical_logits(tiny_run: tuple[TrainerConfig, Any], tmp_path: Path) -> None:
    from trainer.evaluate import view_logits
    from trainer.fit import save_adapter
    from trainer.model import load_trained
    from trainer.splits import read_split

    cfg, _ = tiny_run
    model, tokenizer, _ = load_trained(cfg.out, cuda=False)
    views = read_split(cfg.splits, "test")
    first = view_logits(model, tokenizer, views, cfg.max_length)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "config.resolved.json").write_bytes((Path(cfg.out) / "config.resolved.json").read_bytes())
    save_adapter(model, tokenizer, copy)
    again, tok2, _ = load_trained(copy, cuda=False)
    second = view_logits(again, tok2, views, cfg.max_length)
    assert first.shape == (len(views), 2)
    assert (first == second).all()


def test_run_folder_contents_and_eval(tiny_run: tuple[TrainerConfig, Any]) -> None:
    from trainer.evaluate import evaluate_run

    cfg, _ = tiny_run
    run = Path(cfg.out)
    for name in ("config.resolved.json", "fit.json", "learning_curves.png", "adapter/adapter_config.json"):
        assert (run / name).is_file(), name
    from trainer.splits import read_split

    result = evaluate_run(run)
    assert result.questions == len({v.question_id for v in read_split(cfg.splits, "test")}) == 6
    assert {"all-yes", "nearest-neighbour (k=3)", "TF-IDF classifier"} <= set(result.baselines)
    saved = json.loads((run / "metrics.json").read_text())
    lo, hi = saved["model"]["macro_f1_ci"]
    assert lo <= saved["model"]["macro_f1"] <= hi
    assert (run / "confusion_matrix.png").is_file() and (run / "view_scores.png").is_file()


def test_predict_submission_format(tiny_run: tuple[TrainerConfig, Any]) -> None:
    from trainer.evaluate import predict

    cfg, _ = tiny_run
    data = synthetic_questions(3, 1)
    for q in data["questions"]:
        del q["exact_answer"]
    answers = predict(cfg.out, parse_bioasq(data, require_answer=False))
    assert [a["id"] for a in answers["questions"]] == ["q000", "q001", "q002"]
    assert all(a["exact_answer"] in ("yes", "no") and 0 <= a["p_yes"] <= 1 for a in answers["questions"])


def test_rerun_resumes_from_last_checkpoint(tiny_run: tuple[TrainerConfig, Any], tmp_path: Path) -> None:
    from trainer.fit import fit

    cfg, _ = tiny_run
    first = cfg.model_copy(update={"out": tmp_path / "run", "max_steps": 2, "resume": True})
    result = fit(first)
    assert result.steps == 2 and result.resumed_from is None
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").is_dir()
    again = fit(first.model_copy(update={"max_steps": 4}))
    assert again.steps == 4
    assert again.resumed_from is not None and again.resumed_from.endswith("checkpoint-2")


def test_tune_stores_each_trial(tiny_run: tuple[TrainerConfig, Any], tmp_path: Path) -> None:
    from trainer.tune import tune

    cfg, _ = tiny_run
    best = tune(cfg.model_copy(update={"out": tmp_path / "tune", "trials": 2, "max_steps": 2}))
    trials = json.loads((tmp_path / "tune" / "trials.json").read_text())
    assert [t["trial"] for t in trials] == [0, 1]
    assert all(
        {"learning_rate", "lora_dropout", "class_weight_penalty", "batch_size"} == set(t["params"]) for t in trials
    )
    assert trials[0]["config"]["learning_rate"] == trials[0]["params"]["learning_rate"]
    assert best["valid_macro_f1"] == max(t["valid_macro_f1"] for t in trials)
