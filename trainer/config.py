"""`TrainerConfig`: every setting of the trainer stage, loaded from table ``[trainer]`` of pipeline.toml.

Fields are flat so a flag sets one key (docs/trainer.md lists the flags named otherwise);
every field carries a description and is checked at construction (ranges, allowed values,
cross-field rules). ``store`` comes from ``[store] path``, shared by every stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from indexer.embedding import PACKAGED_MODEL
from store.config import ConfigPath, StageConfig

ViewKind = Literal["prompt", "q+snippets", "q+documents", "q+snippet"]
ContextPart = Literal["snippets", "documents"]
AugmentKind = Literal["q+snippets", "q+documents", "q+snippet"]
Augment = Literal["rare", "all", "none"]
Head = Literal["classifier", "verbalizer"]
Rationale = Literal["none", "ideal_answer"]
Quant = Literal["nf4", "none"]
Adapter = Literal["lora", "full"]
Ensemble = Literal["none", "lexical"]
ReportTo = Literal["none", "tensorboard"]


class TrainerConfig(StageConfig):
    """Settings of `trainer splits`, `trainer fit`, `trainer eval` and `trainer tune`."""

    shared_keys: ClassVar[dict[str, tuple[str, str]]] = {"store": ("store", "path")}

    # --- splits -----------------------------------------------------------------------------
    splits: ConfigPath = Field(
        default=Path("data/splits"), description="Folder of the train/valid/test Parquet splits."
    )
    index: ConfigPath | None = Field(
        default=Path("data/index"),
        description="FAISS index to retrieve each question's document chunks from; None or a missing folder "
        "means no retrieved context (recorded as such).",
    )
    index_server: str | None = Field(
        default=None,
        description="URL of a running `indexer serve` to retrieve from instead of opening the index here "
        "(no FAISS or embedding model in this process); the token, if any, is read from index_token_file.",
    )
    index_token_file: ConfigPath | None = Field(
        default=None, description="File holding the bearer token of index_server."
    )
    store: ConfigPath | None = Field(
        default=None,
        description="Article store: [store] path of pipeline.toml (not a key of [trainer]); when given, it must be "
        "the store the index was built from (checked against the index manifest).",
    )
    retrieve_k: int = Field(
        default=5, ge=0, le=100, description="Chunks retrieved per question from its own documents."
    )
    test_fraction: float = Field(default=0.2, ge=0.0, lt=1.0, description="Share of question ids held out for test.")
    valid_fraction: float = Field(default=0.1, ge=0.0, lt=1.0, description="Share of question ids held out for valid.")
    official_batches: ConfigPath | None = Field(
        default=None,
        description="JSON {batch name: [question ids]}; when given, those ids form the test split instead of a "
        "random share.",
    )
    prompt_parts: list[ContextPart] = Field(
        default_factory=lambda: list[ContextPart](["snippets", "documents"]),
        min_length=1,
        description="What the prompt view puts after the question: snippets, retrieved document chunks, or both.",
    )
    augment: Augment = Field(
        default="rare",
        description="Which classes of the train split get augmentation views: the rarer class only, all, or none.",
    )
    augment_views: list[AugmentKind] = Field(
        default_factory=lambda: list[AugmentKind](["q+snippets", "q+documents", "q+snippet"]),
        description="Augmentation view kinds built for augmented classes (q+snippet: one view per snippet).",
    )
    eval_views: list[ViewKind] = Field(
        default_factory=lambda: list[ViewKind](["prompt"]),
        min_length=1,
        description="View kinds built for valid/test; a question's views are answered together by averaging logits.",
    )
    max_snippets_per_question: int = Field(
        default=10, ge=1, description="Cap on one-snippet views per question (q+snippet augmentation)."
    )

    # --- model ------------------------------------------------------------------------------
    model: str = Field(
        default=PACKAGED_MODEL,
        description=f"Hugging Face id or local folder of the base model; {PACKAGED_MODEL!r} is the packaged MiniLM.",
    )
    head: Head = Field(
        default="classifier",
        description="classifier: sequence classification (encoders, or decoders pooled on the last token); "
        "verbalizer: a causal LM fine-tuned on a chat prompt to answer 'yes'/'no', scored by those tokens' "
        "next-token log-probabilities (decoders only).",
    )
    rationale: Rationale = Field(
        default="none",
        description="Verbalizer target after the answer: none, or the question's ideal answer (still scored by "
        "the first answer token).",
    )
    system_prompt: str = Field(
        default="You answer biomedical yes/no questions from the context given. Reply with yes or no.",
        min_length=1,
        description="Instructions at the start of the verbalizer's chat prompt.",
    )
    gradient_checkpointing: Literal["auto", "on", "off"] = Field(
        default="auto", description="Recompute activations in the backward pass: auto = on for decoders on CUDA."
    )
    optim: Literal["auto", "adamw_torch", "paged_adamw_8bit"] = Field(
        default="auto", description="Optimiser: auto = paged 8-bit AdamW on CUDA, torch AdamW on CPU."
    )
    quant: Quant = Field(
        default="nf4", description="nf4: QLoRA over a bitsandbytes 4-bit NF4 base; none: plain LoRA over full weights."
    )
    adapter: Adapter = Field(
        default="lora",
        description="lora: train LoRA adapters (and the head) over a frozen base; full: train every weight "
        "(needs quant = 'none'), saved as a whole model.",
    )
    double_quant: bool = Field(default=True, description="Quantise the 4-bit quantisation constants too (nf4 only).")
    skip_quant_modules: list[str] = Field(
        default_factory=lambda: ["classifier", "score", "lm_head", r".*pooler"],
        description="Module name patterns kept out of 4-bit quantisation (classification head, LM head, pooler).",
    )
    lora_r: int = Field(default=16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: float = Field(default=32.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        min_length=1,
        description="Modules that get LoRA adapters; ['all-linear'] means every linear layer except the head.",
    )
    modules_to_save: list[str] = Field(
        default_factory=lambda: ["classifier", "score", "pooler"],
        description="Modules trained in full and saved with the adapter (the head: classifier or a decoder's "
        "score, and the pooler; missing ones are skipped).",
    )
    max_length: int = Field(default=256, ge=8, le=8192, description="Token limit per example (question + context).")

    # --- fit --------------------------------------------------------------------------------
    out: ConfigPath = Field(default=Path("runs/default"), description="Run folder: adapter, config, metrics, plots.")
    learning_rate: float = Field(default=5e-4, gt=0.0, lt=1.0, description="Peak learning rate (linear decay).")
    epochs: float = Field(default=4.0, gt=0.0, description="Training epochs.")
    max_steps: int = Field(default=-1, ge=-1, description="Stop after this many optimiser steps (-1: use epochs).")
    batch_size: int = Field(default=16, ge=1, description="Training batch size per step.")
    eval_batch_size: int = Field(default=64, ge=1, description="Batch size for evaluation and prediction.")
    grad_accum: int = Field(default=1, ge=1, description="Gradient accumulation steps.")
    warmup_ratio: float = Field(default=0.06, ge=0.0, lt=1.0, description="Share of steps with linear warm-up.")
    weight_decay: float = Field(default=0.01, ge=0.0, description="AdamW weight decay.")
    report_to: ReportTo = Field(
        default="none",
        description="Where training logs go besides fit.json: none, or tensorboard (event files in "
        "<out>/tensorboard; needs tensorboard or tensorboardX).",
    )
    ensemble: Ensemble = Field(
        default="none",
        description="lexical: answer with the model's calibrated P(yes) averaged with the TF-IDF classifier's, "
        "temperature and weight chosen on valid at the end of the fit (see trainer/ensemble.py).",
    )
    class_weight_penalty: float = Field(
        default=1.0, gt=0.0, description="Extra factor on the rare class's weight (weights are 1/n_c, normalised)."
    )
    eval_steps: int | None = Field(
        default=None, ge=1, description="Evaluate and checkpoint every N steps (None: once per epoch)."
    )
    early_stopping_patience: int = Field(
        default=3, ge=0, description="Stop after this many evaluations without a better valid macro F1 (0: off)."
    )
    seed: int = Field(default=13, ge=0, description="Seed for splitting, initialisation and data order.")
    resume: bool = Field(default=True, description="Resume from the last checkpoint in the run folder if one exists.")
    bf16: Literal["auto", "on", "off"] = Field(
        default="auto", description="bf16 compute: auto = on with CUDA, off on CPU (float32)."
    )
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (None: torch's default).")

    # --- eval / tune ------------------------------------------------------------------------
    bootstrap: int = Field(default=1000, ge=10, description="Bootstrap resamples of questions for 95% intervals.")
    nn_k: int = Field(default=5, ge=1, description="Neighbours that vote in the nearest-neighbour baseline.")
    trials: int = Field(default=8, ge=1, description="Optuna trials for `trainer tune`.")

    @model_validator(mode="after")
    def _check(self) -> TrainerConfig:
        if self.test_fraction + self.valid_fraction >= 1.0:
            raise ValueError(
                f"test_fraction + valid_fraction must be below 1 (got {self.test_fraction} + {self.valid_fraction})"
            )
        if "documents" in self.prompt_parts and self.retrieve_k == 0:
            raise ValueError("prompt_parts includes 'documents' but retrieve_k is 0; set retrieve_k >= 1")
        if self.adapter == "full" and self.quant != "none":
            raise ValueError("adapter 'full' trains every weight and needs quant = 'none' (4-bit weights are frozen)")
        if self.rationale != "none" and self.head != "verbalizer":
            raise ValueError("rationale needs head = 'verbalizer' (a classifier head has no text target)")
        return self

    def uses_bf16(self, cuda: bool) -> bool:
        """Whether compute runs in bf16 on this machine."""
        return self.bf16 == "on" or (self.bf16 == "auto" and cuda)

    def uses_gradient_checkpointing(self, cuda: bool, decoder: bool) -> bool:
        """Whether activations are recomputed in the backward pass."""
        return self.gradient_checkpointing == "on" or (self.gradient_checkpointing == "auto" and cuda and decoder)

    def optimizer(self, cuda: bool) -> str:
        """The Trainer ``optim`` name on this machine."""
        if self.optim != "auto":
            return self.optim
        return "paged_adamw_8bit" if cuda else "adamw_torch"
