"""`trainer fit`: Hugging Face Trainer over the train split with class-weighted cross-entropy.

Class weights are computed once over the training split's questions, not its views
(1/n_c normalised so the mean question weight is 1, the rare class times
``class_weight_penalty``): augmentation multiplies the views of the rare class and would
otherwise hide, or invert, the imbalance. Checkpoints count only once `trainer.checkpoints`
has marked them complete, so a killed fit never leaves one that resume would load. Batches are padded
dynamically; question-level valid macro F1 (the views of a question pooled, as eval scores
them) drives checkpoint choice and early stopping; a rerun resumes
from the last checkpoint. The adapter (with the full head and pooler) is published as
``<run>/adapter`` by a folder rename, beside the resolved config, history and plots.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import resource
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.atomic import atomic_write_json, fsync_dir
from store.config import installed_versions, write_resolved_config
from trainer import LABELS
from trainer.checkpoints import last_complete_checkpoint, with_complete_checkpoints
from trainer.config import TrainerConfig
from trainer.errors import TrainerError
from trainer.metrics import binary_metrics
from trainer.model import ADAPTER_DIR, build_model, has_cuda, is_decoder, load_tokenizer
from trainer.splits import read_split
from trainer.views import View

log = logging.getLogger(__name__)


def class_weights(labels: Sequence[int], penalty: float = 1.0, n_classes: int = len(LABELS)) -> list[float]:
    """Weight per class: N / (C * n_c) (mean weight 1), the rarest present class times ``penalty``."""
    counts = Counter(int(x) for x in labels)
    total = sum(counts.values())
    if not total:
        raise TrainerError("cannot compute class weights of an empty training split")
    weights = [total / (n_classes * counts[c]) if counts[c] else 0.0 for c in range(n_classes)]
    present = [c for c in range(n_classes) if counts[c]]
    rare = min(present, key=lambda c: (counts[c], c))
    if len(present) > 1:
        weights[rare] *= penalty
    return weights


def question_labels(views: Sequence[View]) -> list[int]:
    """One label per labelled question of ``views`` (its first view's), in first-seen order."""
    seen: dict[str, int] = {}
    for v in views:
        if v.label_id >= 0:
            seen.setdefault(v.question_id, v.label_id)
    return list(seen.values())


def question_class_weights(views: Sequence[View], penalty: float = 1.0) -> list[float]:
    """`class_weights` counted over the questions of ``views``, however many views each has."""
    return class_weights(question_labels(views), penalty)


class EncodedViews:
    """Tokenised views as a map-style dataset of dicts (padding happens in the collator)."""

    def __init__(self, views: Sequence[View], tokenizer: Any, max_length: int) -> None:
        enc = tokenizer(
            [v.question for v in views],
            [v.context or "" for v in views],
            truncation="longest_first",
            max_length=max_length,
        )
        self.rows = [{**{k: enc[k][i] for k in enc}, "labels": max(v.label_id, 0)} for i, v in enumerate(views)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def classifier_scores(eval_pred: Any) -> tuple[Any, Any]:
    """(view scores (no, yes), view gold) from the classifier head's evaluation output."""
    import numpy as np

    logits, labels = eval_pred
    return np.asarray(logits), np.asarray(labels)


def question_metrics(views: Sequence[View], view_scores: Any) -> Any:
    """The Trainer's evaluation metrics at question level, as eval and the report score.

    ``view_scores`` turns the evaluation output into per-view (no, yes) scores and gold; the
    scores of one question's views are averaged (`trainer.evaluate.aggregate`), so early
    stopping and the best checkpoint follow the reported question-level macro F1, not the
    per-view one (kept as ``view_macro_f1``). The Trainer evaluates in dataset order, which
    is the order of ``views``.
    """
    import numpy as np

    from trainer.evaluate import aggregate, question_gold

    def compute(eval_pred: Any) -> dict[str, float]:
        scores, gold = view_scores(eval_pred)
        ids, pooled = aggregate(views, scores)
        out = binary_metrics(question_gold(views, ids), np.argmax(pooled, axis=-1))
        out["view_macro_f1"] = binary_metrics(gold, np.argmax(scores, axis=-1))["macro_f1"]
        return out

    return compute


def make_trainer_class() -> type:
    """A Trainer subclass whose loss is cross-entropy with fixed class weights."""
    import torch
    from transformers import Trainer

    class WeightedTrainer(Trainer):
        def __init__(self, *args: Any, class_weights: list[float], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.class_weight_tensor = torch.tensor(class_weights, dtype=torch.float32)

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            logits = outputs.logits.float()
            weight = self.class_weight_tensor.to(logits.device)
            loss = torch.nn.functional.cross_entropy(logits, labels, weight=weight)
            return (loss, outputs) if return_outputs else loss

    return WeightedTrainer


@dataclass
class FitResult:
    """What a fit produced and how fast."""

    run: Path
    class_weights: list[float]
    train_examples: int
    steps: int
    seconds: float
    examples_per_second: float
    peak_memory_mb: float
    best_valid: dict[str, float] = field(default_factory=dict)
    resumed_from: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        best = f", best valid macro F1 {self.best_valid['macro_f1']:.3f}" if self.best_valid else ""
        return (
            f"fit -> {self.run}: {self.train_examples} training views, {self.steps} steps, {self.seconds:.0f}s "
            f"({self.examples_per_second:.3g} examples/s), peak memory {self.peak_memory_mb:.0f} MiB{best}"
        )


def peak_memory_mb(cuda: bool) -> float:
    """Peak resident memory of this process (or peak CUDA allocation) in MiB."""
    if cuda:
        import torch

        return float(torch.cuda.max_memory_allocated()) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def publish_folder(tmp: Path, target: Path) -> None:
    """Replace ``target`` with the complete folder ``tmp`` (rename; old copy removed after)."""
    old = target.with_name(f".old-{target.name}")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)


def save_adapter(model: Any, tokenizer: Any, run: Path) -> Path:
    """Write adapter + head + tokenizer to a temp folder, fsync, then rename it to ``<run>/adapter``."""
    tmp = run / f".tmp-{ADAPTER_DIR}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    for f in tmp.iterdir():
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
    publish_folder(tmp, run / ADAPTER_DIR)
    return run / ADAPTER_DIR


def optimiser_steps(cfg: TrainerConfig, train_examples: int) -> int:
    """Optimiser steps the fit will take: ``max_steps`` when set, else epochs times the updates per epoch."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    batches = math.ceil(train_examples / cfg.batch_size)
    per_epoch = max(math.ceil(batches / cfg.grad_accum), 1)
    return math.ceil(cfg.epochs * per_epoch)


def warmup_steps(cfg: TrainerConfig, train_examples: int) -> int:
    """Integer warm-up steps, ``ceil(warmup_ratio * total steps)``.

    Passed to the Trainer as a whole number of steps, which every transformers version
    the pins allow reads the same way (a fraction there means a ratio only from 5.x on).
    """
    return math.ceil(cfg.warmup_ratio * optimiser_steps(cfg, train_examples))


def tensorboard_callback(run: Path) -> Any:
    """A Trainer callback writing TensorBoard event files to ``<run>/tensorboard``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        try:
            from tensorboardX import SummaryWriter  # type: ignore[no-redef]
        except ImportError:
            raise TrainerError(
                "report_to = 'tensorboard' needs tensorboard or tensorboardX: pip install tensorboardX, "
                "or set report_to = 'none'"
            ) from None
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(SummaryWriter(log_dir=str(run / "tensorboard")))


def training_arguments(
    cfg: TrainerConfig, run: Path, cuda: bool, has_valid: bool, decoder: bool = False, train_examples: int = 0
) -> Any:
    """Trainer arguments; decoders get gradient checkpointing, paged 8-bit AdamW and bf16 on CUDA.

    Reporting integrations stay off here (``report_to=[]``): `fit` adds the TensorBoard
    callback itself, so the event files land in the run folder on every version."""
    from transformers import TrainingArguments

    strategy = "no" if not has_valid else ("steps" if cfg.eval_steps else "epoch")
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    prefix = "activation" if "activation_checkpointing" in names else "gradient"  # renamed in transformers 5.x
    checkpointing: dict[str, Any] = {
        f"{prefix}_checkpointing": cfg.uses_gradient_checkpointing(cuda, decoder),
        f"{prefix}_checkpointing_kwargs": {"use_reentrant": False},
    }
    return TrainingArguments(
        **checkpointing,
        output_dir=str(run / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=warmup_steps(cfg, train_examples),
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="linear",
        eval_strategy=strategy,
        save_strategy=strategy if has_valid else "steps",
        save_steps=cfg.eval_steps or 500,
        eval_steps=cfg.eval_steps,
        logging_strategy="steps",
        logging_steps=max(1, min(50, cfg.eval_steps or 50)),
        save_total_limit=2,
        load_best_model_at_end=has_valid,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=not cuda,
        bf16=cfg.uses_bf16(cuda) and (cfg.quant == "none" or decoder),
        optim=cfg.optimizer(cuda),
        label_names=["labels"],
        remove_unused_columns=cfg.head == "classifier",
        report_to=[],
        disable_tqdm=not sys.stderr.isatty(),
        dataloader_num_workers=0,
        save_only_model=False,
    )


def fit(cfg: TrainerConfig, on_log: Any = None) -> FitResult:
    """Train an adapter on ``cfg.splits`` into run folder ``cfg.out``; returns timings and weights."""
    import torch
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, set_seed

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    callbacks: list[Any] = []
    run = Path(cfg.out)
    if cfg.report_to == "tensorboard":
        callbacks.append(tensorboard_callback(run))
    cuda = has_cuda()
    run.mkdir(parents=True, exist_ok=True)
    train_views = read_split(cfg.splits, "train")
    valid_views = read_split(cfg.splits, "valid") if (Path(cfg.splits) / "valid.parquet").is_file() else []
    train_views = [v for v in train_views if v.label_id >= 0]
    valid_views = [v for v in valid_views if v.label_id >= 0]
    if not train_views:
        raise TrainerError(f"{cfg.splits}/train.parquet: no labelled views to train on")
    weights = question_class_weights(train_views, cfg.class_weight_penalty)
    log.info("class weights (no, yes) over %d training questions: %s", len(question_labels(train_views)), weights)
    device = f"cuda:{torch.cuda.get_device_name()}" if cuda else "cpu"
    precision = ("bf16" if cfg.uses_bf16(cuda) else "fp32") + (" over an nf4 base" if cfg.quant == "nf4" else "")
    versions = installed_versions("torch", "transformers", "peft", "bitsandbytes", "accelerate", "tokenizers")
    write_resolved_config(cfg, run, {"device": device, "precision": precision, "versions": versions})
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg)
    model = build_model(cfg, cuda)
    decoder = is_decoder(cfg.model)
    extra: dict[str, Any] = {}
    train_ds: Any
    valid_ds: Any
    if cfg.head == "verbalizer":
        from trainer import verbalizer

        no_id, yes_id = verbalizer.label_token_ids(tokenizer)
        train_ds = verbalizer.VerbalizerExamples(train_views, tokenizer, cfg, weights)
        valid_ds = verbalizer.VerbalizerExamples(valid_views, tokenizer, cfg) if valid_views else None
        collator: Any = verbalizer.Collator(int(tokenizer.pad_token_id))
        trainer_cls = verbalizer.make_trainer_class()
        view_scores: Any = verbalizer.make_view_scores(yes_id)
        extra["preprocess_logits_for_metrics"] = verbalizer.make_pick_scores(no_id, yes_id)
    else:
        train_ds = EncodedViews(train_views, tokenizer, cfg.max_length)
        valid_ds = EncodedViews(valid_views, tokenizer, cfg.max_length) if valid_views else None
        collator = DataCollatorWithPadding(tokenizer)
        trainer_cls = make_trainer_class()
        view_scores = classifier_scores
        extra["class_weights"] = weights
    if valid_ds is not None and cfg.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    if on_log is not None:
        callbacks.append(on_log)
    trainer = with_complete_checkpoints(trainer_cls)(
        model=model,
        args=training_arguments(cfg, run, cuda, valid_ds is not None, decoder, len(train_ds)),
        train_dataset=train_ds,
        eval_dataset=valid_ds,
        data_collator=collator,
        compute_metrics=question_metrics(valid_views, view_scores),
        callbacks=callbacks,
        **extra,
    )
    last = last_complete_checkpoint(run / "checkpoints") if cfg.resume else None
    if last:
        log.info("resuming from %s", last)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - started
    history = list(trainer.state.log_history)
    evals = [h for h in history if "eval_macro_f1" in h]
    best_entry = max(evals, key=lambda h: h["eval_macro_f1"]) if evals else {}
    best = {k[5:]: float(v) for k, v in best_entry.items() if k[5:] in ("accuracy", "f1_yes", "f1_no", "macro_f1")}
    save_adapter(trainer.model, tokenizer, run)
    if cfg.ensemble == "lexical" and valid_views:
        from trainer.ensemble import choose
        from trainer.evaluate import score_views

        choice = choose(valid_views, score_views(trainer.model, tokenizer, valid_views, cfg), train_views, run)
        log.info("ensemble (lexical) chosen on valid: %s", choice)
    eval_seconds = sum(float(h.get("eval_runtime", 0.0)) for h in history)
    steps = int(trainer.state.global_step)
    trained = min(steps * cfg.batch_size * cfg.grad_accum, int(len(train_views) * cfg.epochs) + cfg.batch_size)
    del output
    result = FitResult(
        run=run,
        class_weights=weights,
        train_examples=len(train_views),
        steps=steps,
        seconds=seconds,
        examples_per_second=trained / max(seconds - eval_seconds, 1e-9),
        peak_memory_mb=peak_memory_mb(cuda),
        best_valid=best,
        resumed_from=last,
        history=history,
    )
    atomic_write_json(
        run / "fit.json",
        {k: (str(v) if isinstance(v, Path) else v) for k, v in result.__dict__.items()},
    )
    from trainer.plots import learning_curves

    learning_curves(history, run / "learning_curves.png")
    log.info(result.line())
    return result
