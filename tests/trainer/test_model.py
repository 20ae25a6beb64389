"""Model construction: 4-bit layers are bnb Linear4bit, the head stays a plain Linear, class weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import tiny_config
from trainer.fit import class_weights
from trainer.model import build_model


def _leaf_types(model: torch.nn.Module) -> dict[str, type]:
    return {name: type(m) for name, m in model.named_modules()}


def test_qlora_layers_are_linear4bit_and_head_stays_linear(tmp_path: Path) -> None:
    import bitsandbytes as bnb

    model = build_model(tiny_config(tmp_path), cuda=False)
    types = _leaf_types(model)
    encoder_linear = [n for n in types if n.endswith("attention.self.query.base_layer")]
    assert encoder_linear and all(types[n] is bnb.nn.Linear4bit for n in encoder_linear)
    assert types["base_model.model.bert.encoder.layer.0.output.dense.base_layer"] is bnb.nn.Linear4bit
    four_bit = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(four_bit) == 6 * 6  # q, k, v, attention out, intermediate, output in 6 layers
    assert all(m.weight.quant_state.quant_type == "nf4" for m in four_bit)
    assert all(m.compute_dtype == torch.float32 for m in four_bit)
    # head and pooler: full-precision Linear, trained in full (original kept frozen beside the copy)
    for prefix in ("base_model.model.classifier", "base_model.model.bert.pooler"):
        heads = [n for n in types if n.startswith(prefix) and types[n] in (torch.nn.Linear, bnb.nn.Linear4bit)]
        assert heads and all(types[n] is torch.nn.Linear for n in heads), heads
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert any(n.endswith("classifier.modules_to_save.default.weight") for n in trainable)
    assert not any("lora" not in n and "modules_to_save" not in n for n in trainable)


def test_quant_none_is_plain_lora(tmp_path: Path) -> None:
    import bitsandbytes as bnb

    model = build_model(tiny_config(tmp_path, quant="none", target_modules=["query", "value"]), cuda=False)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    lora_targets = {n.rsplit(".", 3)[0] for n, _ in model.named_parameters() if "lora_A" in n}
    assert lora_targets and all(t.endswith(("query", "value")) for t in lora_targets)


def test_class_weights_over_the_whole_split() -> None:
    labels = [1] * 30 + [0] * 10  # 40 examples: yes 30, no 10
    w_no, w_yes = class_weights(labels)
    assert (w_no, w_yes) == pytest.approx((40 / 20, 40 / 60))
    assert w_no * 10 + w_yes * 30 == pytest.approx(40)  # mean example weight is 1
    assert class_weights(labels, penalty=2.0) == pytest.approx([4.0, 40 / 60])  # rare class times penalty
    # computed from the whole split, not a batch: the first 16 labels alone would give other weights
    assert class_weights(labels[:16]) != class_weights(labels)


def test_packaged_model_names_are_the_indexers() -> None:
    from indexer.embedding import PACKAGED_MODEL_IDS, resolve_model
    from trainer.config import TrainerConfig
    from trainer.model import resolve_model_path

    assert TrainerConfig().model in PACKAGED_MODEL_IDS
    for name in PACKAGED_MODEL_IDS:
        assert resolve_model_path(name) == resolve_model(name)[1]
    assert resolve_model_path("some/hub-id") == "some/hub-id"
