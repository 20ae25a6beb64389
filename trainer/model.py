"""Base model, 4-bit NF4 quantisation and LoRA adapters; loading a trained run back.

QLoRA by default: every linear layer of the base model becomes a bitsandbytes ``Linear4bit``
(NF4, compute dtype float32 on CPU, bf16 on CUDA) while the head (an encoder's classifier and
pooler, a decoder's ``score`` layer, the LM head) stays full precision; classification heads
are trained in full (``modules_to_save``); LoRA adapters go on ``target_modules``. With
``adapter='full'`` (and ``quant='none'``) every weight is trained and the run saves the
whole model in place of an adapter.

Encoders (BERT family) get a sequence-classification head. Decoders (Llama, Qwen2, Gemma
and other causal LMs) take ``head='classifier'`` (last-token pooling; the pad token is set
so the last real token can be found) or ``head='verbalizer'`` (the causal LM itself, see
`trainer.verbalizer`). A tokenizer without a chat template gets `DEFAULT_CHAT_TEMPLATE`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from indexer.embedding import PACKAGED_MODEL_IDS, packaged_model_path
from indexer.errors import ModelError
from trainer import LABELS
from trainer.config import TrainerConfig
from trainer.errors import TrainerError

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"

DECODER_TYPES = frozenset(
    {"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text", "mistral", "phi3", "olmo2", "smollm3"}
)
"""Model types treated as decoder LLMs even when the config names no ``*ForCausalLM`` architecture."""

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""Role-tagged turns, used for tokenizers that ship no chat template of their own."""


def resolve_model_path(name: str) -> str:
    """Local folder of the packaged MiniLM for its names (`PACKAGED_MODEL_IDS`), else ``name`` unchanged."""
    if name in PACKAGED_MODEL_IDS:
        try:
            return packaged_model_path(name)
        except ModelError as exc:
            raise TrainerError(str(exc)) from exc
    return name


def has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def quantization_config(cfg: TrainerConfig, cuda: bool) -> Any:
    """``BitsAndBytesConfig`` for NF4 (None for ``quant='none'``)."""
    if cfg.quant == "none":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16 if cfg.uses_bf16(cuda) else torch.float32,
        llm_int8_skip_modules=list(cfg.skip_quant_modules),
    )


def is_decoder(model: str) -> bool:
    """Whether the model at ``model`` (name or folder) is a decoder-only causal LM."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve_model_path(model))
    except (OSError, ValueError) as exc:
        raise TrainerError(f"model {model!r}: cannot read its config: {str(exc).splitlines()[0]}") from None
    if getattr(config, "is_encoder_decoder", False):
        return False
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith("ForCausalLM") for a in archs) or config.model_type in DECODER_TYPES


def load_tokenizer(cfg: TrainerConfig) -> Any:
    """The model's tokenizer; for decoders with a pad token (EOS when none) and a chat template."""
    from transformers import AutoTokenizer

    path = resolve_model_path(cfg.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise TrainerError(f"model {cfg.model!r}: cannot load tokenizer: {str(exc).splitlines()[0]}") from None
    if cfg.head == "verbalizer" or is_decoder(cfg.model):
        prepare_decoder_tokenizer(tokenizer)
    return tokenizer


def prepare_decoder_tokenizer(tokenizer: Any) -> Any:
    """Set the pad token (EOS, or SEP for WordPiece vocabularies), EOS, and a default chat template."""
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise TrainerError("tokenizer has neither a pad nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def load_base_model(cfg: TrainerConfig, cuda: bool | None = None, path: str | None = None) -> Any:
    """The base model quantised as ``cfg.quant`` says: a two-label (no, yes) sequence classifier, or for
    ``head='verbalizer'`` the causal LM; from ``path`` when given (a fully fine-tuned run's weights)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    cuda = has_cuda() if cuda is None else cuda
    decoder = is_decoder(cfg.model)
    if cfg.head == "verbalizer" and not decoder:
        raise TrainerError(f"model {cfg.model!r}: head 'verbalizer' needs a decoder (causal LM); use 'classifier'")
    kwargs: dict[str, Any] = {}
    if cfg.head == "classifier":
        kwargs = {
            "num_labels": len(LABELS),
            "id2label": dict(enumerate(LABELS)),
            "label2id": {label: i for i, label in enumerate(LABELS)},
        }
    quant = quantization_config(cfg, cuda)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": 0 if cuda else "cpu"}
    elif cfg.uses_bf16(cuda):
        kwargs["dtype"] = torch.bfloat16
    path = path or resolve_model_path(cfg.model)
    verbosity = hf_logging.get_verbosity()
    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # the "classifier newly initialised" load report is expected here
    try:
        auto: Any = AutoModelForCausalLM if cfg.head == "verbalizer" else AutoModelForSequenceClassification
        model = auto.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise TrainerError(f"model {cfg.model!r}: cannot load: {str(exc).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if quant is None and cuda:
        model = model.to("cuda")
    if decoder and cfg.head == "classifier" and model.config.pad_token_id is None:
        # last-token pooling finds each row's last real token through the pad id
        model.config.pad_token_id = load_tokenizer(cfg).pad_token_id
    return model


def existing_module_names(model: Any, names: list[str]) -> list[str]:
    """The entries of ``names`` that are the last component of some module name in ``model``."""
    leaves = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    return [n for n in names if n in leaves]


def prepare_for_training(model: Any, cfg: TrainerConfig) -> Any:
    """The one place gradient checkpointing and k-bit preparation are decided, for LoRA and full runs."""
    checkpointing = cfg.uses_gradient_checkpointing(has_cuda(), is_decoder(cfg.model))
    if cfg.quant != "none":
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    if checkpointing:
        model.gradient_checkpointing_enable()
        if cfg.adapter == "lora":  # frozen embeddings: checkpointed blocks need inputs that require grad
            model.enable_input_require_grads()
    return model


def add_lora(model: Any, cfg: TrainerConfig) -> Any:
    """Wrap ``model`` (prepared by `prepare_for_training`) in a PEFT LoRA model."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets: str | list[str] = "all-linear" if cfg.target_modules == ["all-linear"] else list(cfg.target_modules)
    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM if cfg.head == "verbalizer" else TaskType.SEQ_CLS,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,  # type: ignore[arg-type]  # peft accepts floats (scale = alpha / r)
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        modules_to_save=(existing_module_names(model, list(cfg.modules_to_save)) or None)
        if cfg.head == "classifier"
        else None,
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise TrainerError(f"LoRA target_modules {cfg.target_modules}: {str(exc).splitlines()[0]}") from None


def build_model(cfg: TrainerConfig, cuda: bool | None = None) -> Any:
    """Fresh base model with LoRA adapters (or, for ``adapter='full'``, every weight trainable), ready to train."""
    model = prepare_for_training(load_base_model(cfg, cuda), cfg)
    return add_lora(model, cfg) if cfg.adapter == "lora" else model


def run_config(run: str | Path) -> TrainerConfig:
    """The resolved `TrainerConfig` saved in a run folder."""
    path = Path(run) / "config.resolved.json"
    if not path.is_file():
        raise TrainerError(f"{run}: not a run folder (no config.resolved.json); run `trainer fit` first")
    data = json.loads(path.read_text(encoding="utf-8"))
    return TrainerConfig.model_validate(data["config"])


def load_trained(run: str | Path, cuda: bool | None = None) -> tuple[Any, Any, TrainerConfig]:
    """(model in eval mode, tokenizer, config) of a trained run: base model + saved adapter, or the
    saved whole model of ``adapter='full'``."""
    from peft import PeftModel

    cfg = run_config(run)
    adapter = Path(run) / ADAPTER_DIR
    if cfg.adapter == "full":
        if not (adapter / "config.json").is_file():
            raise TrainerError(f"{adapter}: no fine-tuned model saved here (config.json missing)")
        model = load_base_model(cfg, cuda, path=str(adapter))
    else:
        if not (adapter / "adapter_config.json").is_file():
            raise TrainerError(f"{adapter}: no adapter saved here (adapter_config.json missing)")
        model = PeftModel.from_pretrained(load_base_model(cfg, cuda), str(adapter))
    model.eval()
    return model, load_tokenizer(cfg), cfg
