"""The ``trainer`` command: splits, fit, eval, predict, tune, export (thin Typer wrappers over plain functions).

Exit codes: 0 success, 1 pipeline error (one line saying what and where), 2 bad usage
(including bad configuration values). Heavy libraries load inside the commands.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from store.config import ConfigError, load_config
from trainer.config import TrainerConfig
from trainer.errors import TrainerError
from trainer.questions import Question, QuestionFileError, load_bioasq, load_pubmedqa

app = typer.Typer(
    help="Build augmented splits from BioASQ/PubMedQA questions, fine-tune a QLoRA yes/no classifier, evaluate it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
log = logging.getLogger("trainer")
T = TypeVar("T")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML file with a [trainer] table (default ./pipeline.toml).")
]
SeedOpt = Annotated[int | None, typer.Option(help="Seed for splitting, initialisation and data order.")]
SplitsOpt = Annotated[Path | None, typer.Option("--splits", help="Folder of train/valid/test Parquet splits.")]
RunOpt = Annotated[Path, typer.Option("--run", help="Run folder written by `trainer fit`.")]
BioasqOpt = Annotated[Path | None, typer.Option("--bioasq", help="BioASQ JSON file (yes/no questions are used).")]


def _pipeline_errors() -> tuple[type[BaseException], ...]:
    from store.reader import StoreError

    errors: list[type[BaseException]] = [TrainerError, QuestionFileError, StoreError]
    try:
        from indexer.errors import IndexerError

        errors.append(IndexerError)
    except ImportError:
        pass
    return tuple(errors)


def _run(action: Callable[[], T]) -> T:
    """Run a command body: bad config -> exit 2, pipeline errors -> one line and exit 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return action()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except _pipeline_errors() as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _config(path: Path | None, overrides: dict[str, Any]) -> TrainerConfig:
    return load_config(TrainerConfig, "trainer", path, overrides)


def _questions(bioasq: Path | None, pubmedqa: Path | None) -> list[Question]:
    questions: list[Question] = []
    if bioasq is not None:
        questions += load_bioasq(bioasq)
    if pubmedqa is not None:
        questions += load_pubmedqa(pubmedqa)
    return questions


@app.command()
def splits(
    bioasq: BioasqOpt = None,
    pubmedqa: Annotated[Path | None, typer.Option(help="PubMedQA ori_pqal.json-form file ('maybe' dropped).")] = None,
    index: Annotated[Path | None, typer.Option(help="FAISS index folder to retrieve document chunks from.")] = None,
    index_server: Annotated[
        str | None, typer.Option("--index-server", help="URL of a running `indexer serve` to retrieve from instead.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder for the splits.")] = None,
    official_batches: Annotated[
        Path | None, typer.Option(help="JSON {batch: [ids]}: these ids become the test split.")
    ] = None,
    test_fraction: Annotated[float | None, typer.Option(help="Share of question ids held out for test.")] = None,
    valid_fraction: Annotated[float | None, typer.Option(help="Share of question ids held out for valid.")] = None,
    augment: Annotated[str | None, typer.Option(help="Augmented classes: rare, all or none.")] = None,
    retrieve_k: Annotated[int | None, typer.Option(help="Chunks retrieved per question.")] = None,
    store: Annotated[Path | None, typer.Option(help="Article store that fetched documents are written to.")] = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Split questions by id (before augmentation), retrieve context, write Parquet train/valid/test."""

    def action() -> None:
        from trainer.splits import build_splits

        if bioasq is None and pubmedqa is None:
            raise typer.BadParameter("give --bioasq and/or --pubmedqa")
        cfg = _config(
            config,
            {
                "index": index,
                "index_server": index_server,
                "splits": out,
                "official_batches": official_batches,
                "test_fraction": test_fraction,
                "valid_fraction": valid_fraction,
                "augment": augment,
                "retrieve_k": retrieve_k,
                "store": store,
                "seed": seed,
            },
        )
        report = build_splits(_questions(bioasq, pubmedqa), cfg)
        typer.echo(report.line())

    _run(action)


@app.command()
def fit(
    splits_dir: SplitsOpt = None,
    model: Annotated[
        str | None, typer.Option(help="HF id or local folder of the base model: an encoder or a causal LM.")
    ] = None,
    head: Annotated[
        str | None,
        typer.Option(
            help="classifier (sequence classification; decoders pool the last token) or verbalizer "
            "(decoders: chat-prompt fine-tuning, scored by the 'yes'/'no' next-token log-probs)."
        ),
    ] = None,
    rationale: Annotated[
        str | None, typer.Option(help="Verbalizer target after the answer: none or ideal_answer.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder (adapter, config, metrics, plots).")] = None,
    quant: Annotated[str | None, typer.Option(help="nf4 (QLoRA) or none (plain LoRA).")] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    lora_alpha: Annotated[float | None, typer.Option(help="LoRA alpha.")] = None,
    lora_dropout: Annotated[float | None, typer.Option(help="LoRA dropout.")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N steps (-1: epochs decide).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Token limit per example.")] = None,
    class_weight_penalty: Annotated[float | None, typer.Option(help="Extra weight factor for the rare class.")] = None,
    patience: Annotated[int | None, typer.Option(help="Early-stopping patience in evaluations (0: off).")] = None,
    ensemble: Annotated[
        str | None,
        typer.Option(help="none, or lexical: average with the TF-IDF classifier (weights chosen on valid)."),
    ] = None,
    eval_steps: Annotated[int | None, typer.Option(help="Evaluate every N steps (default: each epoch).")] = None,
    report_to: Annotated[
        str | None,
        typer.Option("--report-to", help="none, or tensorboard: event files in <out>/tensorboard [default: none]."),
    ] = None,
    resume: Annotated[
        bool | None, typer.Option("--resume/--no-resume", help="Resume from the last checkpoint.")
    ] = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Fine-tune a LoRA/QLoRA adapter on the train split, early-stopped on valid macro F1."""

    def action() -> None:
        from trainer.fit import fit as run_fit

        cfg = _config(
            config,
            {
                "splits": splits_dir,
                "model": model,
                "head": head,
                "rationale": rationale,
                "out": out,
                "quant": quant,
                "lora_r": lora_r,
                "lora_alpha": lora_alpha,
                "lora_dropout": lora_dropout,
                "learning_rate": learning_rate,
                "epochs": epochs,
                "max_steps": max_steps,
                "batch_size": batch_size,
                "max_length": max_length,
                "class_weight_penalty": class_weight_penalty,
                "early_stopping_patience": patience,
                "ensemble": ensemble,
                "eval_steps": eval_steps,
                "report_to": report_to,
                "resume": resume,
                "seed": seed,
            },
        )
        typer.echo(run_fit(cfg).line())

    _run(action)


def _print_eval(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.questions} questions ({result.views} views)")
    for col in ("system", "accuracy", "F1 yes", "F1 no", "macro F1 [95% CI]"):
        table.add_column(col)
    rows = [("model", result.model), *result.baselines.items()]
    for name, m in rows:
        lo, hi = m["macro_f1_ci"]
        table.add_row(
            name,
            f"{m['accuracy']:.3f}",
            f"{m['f1_yes']:.3f}",
            f"{m['f1_no']:.3f}",
            f"{m['macro_f1']:.3f} [{lo:.3f}, {hi:.3f}]",
        )
    Console().print(table)


@app.command("eval")
def eval_cmd(run: RunOpt, bioasq: BioasqOpt = None) -> None:
    """Score a run on a BioASQ file (or its test split) beside all-yes, nearest-neighbour and TF-IDF baselines."""

    def action() -> None:
        from trainer.evaluate import evaluate_run

        questions = load_bioasq(bioasq) if bioasq is not None else None
        result = evaluate_run(run, questions)
        _print_eval(result)
        typer.echo(f"metrics -> {Path(run) / 'metrics.json'}; report -> {Path(run) / 'report.html'}")

    _run(action)


@app.command()
def predict(
    run: RunOpt,
    bioasq: Annotated[Path, typer.Option("--bioasq", help="BioASQ JSON file of questions to answer.")],
    out: Annotated[Path, typer.Option("--out", help="Answers file (BioASQ submission format).")],
) -> None:
    """Answer yes/no questions in BioASQ submission format (views' logits averaged per question)."""

    def action() -> None:
        from store.atomic import atomic_write_json
        from trainer.evaluate import predict as run_predict

        answers = run_predict(run, load_bioasq(bioasq, require_answer=False))
        atomic_write_json(out, answers)
        typer.echo(f"predict -> {out}: {len(answers['questions'])} answers")

    _run(action)


@app.command()
def tune(
    splits_dir: SplitsOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for trials and trials.json.")] = None,
    trials: Annotated[int | None, typer.Option(help="Number of Optuna trials.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Cap steps per trial (-1: epochs decide).")] = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Optuna search over learning rate, LoRA dropout, class-weight penalty and batch size."""

    def action() -> None:
        from trainer.tune import tune as run_tune

        cfg = _config(
            config, {"splits": splits_dir, "out": out, "trials": trials, "max_steps": max_steps, "seed": seed}
        )
        best = run_tune(cfg)
        typer.echo(f"tune -> {cfg.out}: best trial {best['trial']} valid macro F1 {best['valid_macro_f1']:.3f}")

    _run(action)


@app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Option("--out", help="Output folder (created; an hf-dataset folder is replaced).")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="jsonl-chat: <split>.jsonl, one {messages: [system, user, assistant]} chat per line; "
            "hf-dataset: a Hugging Face datasets folder (load_from_disk) with a README.md dataset card.",
        ),
    ] = "jsonl-chat",
    splits_dir: SplitsOpt = None,
    rationale: Annotated[
        str | None, typer.Option(help="Assistant turn after the answer: none or ideal_answer.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Write the splits as chats (system instructions, user context + question, assistant answer)."""

    def action() -> None:
        from trainer.export import FORMATS, export

        if fmt not in FORMATS:
            raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
        overrides: dict[str, Any] = {"splits": splits_dir, "rationale": rationale}
        if rationale not in (None, "none"):
            overrides["head"] = "verbalizer"
        cfg = _config(config, overrides)
        counts = export(cfg, out, fmt)
        parts = ", ".join(f"{name} {n}" for name, n in counts.items())
        typer.echo(f"export -> {out} ({fmt}): chats {parts}")

    _run(action)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="trainer")


if __name__ == "__main__":
    main()
