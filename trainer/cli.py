"""The ``trainer`` command: splits, fit, eval, predict, tune, export (thin Typer wrappers over plain functions).

Built with `store.cli_contract`: exit 0 on success, 1 on a pipeline error (one line saying
what and where), 2 on bad usage (a bad flag or config value, a missing input file);
``--version`` and ``--show-config``. Flags carry their config key's name, except ``--out``
of ``splits`` (key ``splits``) and ``--splits`` elsewhere (key ``splits``); ``--lr`` and
``--patience`` remain as aliases. Heavy libraries load inside the commands.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from store.cli_contract import (
    UsageProblem,
    config_option,
    existing_file,
    flag,
    load_stage,
    make_app,
    show_config_option,
)
from store.config import FlagValue, Resolved, StoreConfig, resolve_config
from trainer.config import Adapter, Augment, Ensemble, Head, Quant, Rationale, ReportTo, TrainerConfig
from trainer.questions import Question, load_bioasq, load_pubmedqa


def _pipeline_errors() -> tuple[type[BaseException], ...]:
    from store.reader import StoreError
    from trainer.errors import TrainerError
    from trainer.questions import QuestionFileError

    errors: list[type[BaseException]] = [TrainerError, QuestionFileError, StoreError]
    try:
        from indexer.errors import IndexerError

        errors.append(IndexerError)
    except ImportError:
        pass
    return tuple(errors)


app = make_app(
    "Build augmented splits from BioASQ/PubMedQA questions, fine-tune a QLoRA yes/no classifier, evaluate it.",
    _pipeline_errors,
)
log = logging.getLogger("trainer")

ConfigOpt = Annotated[Path | None, config_option("trainer")]
ShowConfig = Annotated[bool, show_config_option()]
SeedOpt = Annotated[int | None, flag(TrainerConfig, "seed")]
SplitsOpt = Annotated[Path | None, flag(TrainerConfig, "splits", "--splits")]
RunOpt = Annotated[Path, typer.Option("--run", help="Run folder written by `trainer fit`.")]
BioasqOpt = Annotated[Path | None, typer.Option("--bioasq", help="BioASQ JSON file (yes/no questions are used).")]
MaxSteps = Annotated[int | None, flag(TrainerConfig, "max_steps")]


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _config(
    path: Path | None, show: bool, renames: dict[str, str] | None = None, extra: dict[str, FlagValue] | None = None
) -> Resolved[TrainerConfig]:
    store = resolve_config(StoreConfig, "store", path)
    return load_stage(TrainerConfig, "trainer", path, renames=renames, extra=extra, show=show, also=[store])


def _questions(bioasq: Path | None, pubmedqa: Path | None) -> list[Question]:
    questions: list[Question] = []
    if bioasq is not None:
        questions += load_bioasq(existing_file(bioasq, "--bioasq"))
    if pubmedqa is not None:
        questions += load_pubmedqa(existing_file(pubmedqa, "--pubmedqa"))
    return questions


def check_store_matches_index(store: Path | None, index: Path | None) -> None:
    """``--store`` must be the store the index was built from (its manifest records it)."""
    if store is None or index is None or not (Path(index) / "manifest.json").is_file():
        return
    from indexer.manifest import read_manifest

    manifest = read_manifest(Path(index))
    if manifest is None or not manifest.store:
        return
    if Path(manifest.store).resolve() != Path(store).resolve():
        raise UsageProblem(
            f"--store {store} is not the store index {index} was built from ({manifest.store}, per its manifest.json)"
        )


@app.command()
def splits(
    bioasq: BioasqOpt = None,
    pubmedqa: Annotated[Path | None, typer.Option(help="PubMedQA ori_pqal.json-form file ('maybe' dropped).")] = None,
    index: Annotated[
        Path | None, flag(TrainerConfig, "index", help="FAISS index folder to retrieve chunks from.")
    ] = None,
    index_server: Annotated[
        str | None, flag(TrainerConfig, "index_server", help="URL of a running `indexer serve` to retrieve from.")
    ] = None,
    out: Annotated[Path | None, flag(TrainerConfig, "splits", "--out", help="Output folder for the splits.")] = None,
    official_batches: Annotated[
        Path | None,
        flag(TrainerConfig, "official_batches", help="JSON {batch: [ids]}: these ids become the test split."),
    ] = None,
    test_fraction: Annotated[float | None, flag(TrainerConfig, "test_fraction")] = None,
    valid_fraction: Annotated[float | None, flag(TrainerConfig, "valid_fraction")] = None,
    augment: Annotated[Augment | None, flag(TrainerConfig, "augment")] = None,
    retrieve_k: Annotated[int | None, flag(TrainerConfig, "retrieve_k")] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            help="Article store; must be the one the index was built from.",
            show_default="[store] path of pipeline.toml",
        ),
    ] = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    show_config: ShowConfig = False,
) -> None:
    """Split questions by id (before augmentation), retrieve context, write Parquet train/valid/test."""
    _setup_logging()
    cfg = _config(config, show_config, renames={"out": "splits"}).config
    if bioasq is None and pubmedqa is None:
        raise UsageProblem("give --bioasq and/or --pubmedqa")
    existing_file(official_batches, "--official-batches")
    questions = _questions(bioasq, pubmedqa)
    if cfg.index_server is None:
        check_store_matches_index(store, cfg.index)
    from trainer.splits import build_splits

    typer.echo(build_splits(questions, cfg).line())


@app.command()
def fit(
    splits_dir: SplitsOpt = None,
    model: Annotated[
        str | None,
        flag(TrainerConfig, "model", help="HF id or local folder of the base model: an encoder or a causal LM."),
    ] = None,
    head: Annotated[
        Head | None,
        flag(
            TrainerConfig,
            "head",
            help="classifier (sequence classification; decoders pool the last token) or verbalizer "
            "(decoders: chat-prompt fine-tuning, scored by the 'yes'/'no' next-token log-probs).",
        ),
    ] = None,
    rationale: Annotated[Rationale | None, flag(TrainerConfig, "rationale")] = None,
    out: Annotated[
        Path | None, flag(TrainerConfig, "out", help="Run folder (adapter, config, metrics, plots).")
    ] = None,
    quant: Annotated[Quant | None, flag(TrainerConfig, "quant", help="nf4 (QLoRA) or none (plain LoRA).")] = None,
    adapter: Annotated[
        Adapter | None,
        flag(TrainerConfig, "adapter", help="lora (adapters over a frozen base) or full (every weight; quant none)."),
    ] = None,
    lora_r: Annotated[int | None, flag(TrainerConfig, "lora_r")] = None,
    lora_alpha: Annotated[float | None, flag(TrainerConfig, "lora_alpha")] = None,
    lora_dropout: Annotated[float | None, flag(TrainerConfig, "lora_dropout")] = None,
    learning_rate: Annotated[float | None, flag(TrainerConfig, "learning_rate", "--learning-rate", "--lr")] = None,
    epochs: Annotated[float | None, flag(TrainerConfig, "epochs")] = None,
    max_steps: MaxSteps = None,
    batch_size: Annotated[int | None, flag(TrainerConfig, "batch_size")] = None,
    max_length: Annotated[int | None, flag(TrainerConfig, "max_length")] = None,
    class_weight_penalty: Annotated[float | None, flag(TrainerConfig, "class_weight_penalty")] = None,
    early_stopping_patience: Annotated[
        int | None, flag(TrainerConfig, "early_stopping_patience", "--early-stopping-patience", "--patience")
    ] = None,
    ensemble: Annotated[Ensemble | None, flag(TrainerConfig, "ensemble")] = None,
    report_to: Annotated[ReportTo | None, flag(TrainerConfig, "report_to", "--report-to")] = None,
    eval_steps: Annotated[int | None, flag(TrainerConfig, "eval_steps")] = None,
    resume: Annotated[bool | None, flag(TrainerConfig, "resume", "--resume/--no-resume")] = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    show_config: ShowConfig = False,
) -> None:
    """Fine-tune a LoRA/QLoRA adapter on the train split, early-stopped on valid macro F1."""
    _setup_logging()
    cfg = _config(config, show_config, renames={"splits_dir": "splits"}).config
    from trainer.fit import fit as run_fit

    typer.echo(run_fit(cfg).line())


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


def _run_folder(run: Path, show: bool) -> Path:
    """``--run`` must name a folder; ``--show-config`` prints the config that run was trained with."""
    if not run.is_dir():
        raise UsageProblem(f"--run: no such run folder: {run}")
    if show:
        from trainer.model import run_config

        cfg = run_config(run)
        typer.echo(Resolved(cfg, "trainer", dict.fromkeys(cfg.model_dump(), f"{run}/config.resolved.json")).show())
        raise typer.Exit(0)
    return run


@app.command("eval")
def eval_cmd(run: RunOpt, bioasq: BioasqOpt = None, show_config: ShowConfig = False) -> None:
    """Score a run on a BioASQ file (or its test split) beside all-yes, nearest-neighbour and TF-IDF baselines."""
    _setup_logging()
    _run_folder(run, show_config)
    from trainer.evaluate import evaluate_run

    questions = load_bioasq(existing_file(bioasq, "--bioasq")) if bioasq is not None else None
    result = evaluate_run(run, questions)
    _print_eval(result)
    typer.echo(f"metrics -> {Path(run) / 'metrics.json'}; report -> {Path(run) / 'report.html'}")


@app.command()
def predict(
    run: RunOpt,
    bioasq: Annotated[Path, typer.Option("--bioasq", help="BioASQ JSON file of questions to answer.")],
    answers: Annotated[Path, typer.Option("--out", help="Answers file (BioASQ submission format).")],
    show_config: ShowConfig = False,
) -> None:
    """Answer yes/no questions in BioASQ submission format (views' logits averaged per question)."""
    _setup_logging()
    _run_folder(run, show_config)
    existing_file(bioasq, "--bioasq")
    from store.atomic import atomic_write_json
    from trainer.evaluate import predict as run_predict

    result = run_predict(run, load_bioasq(bioasq, require_answer=False))
    atomic_write_json(answers, result)
    typer.echo(f"predict -> {answers}: {len(result['questions'])} answers")


@app.command()
def tune(
    splits_dir: SplitsOpt = None,
    out: Annotated[Path | None, flag(TrainerConfig, "out", help="Folder for trials and trials.json.")] = None,
    trials: Annotated[int | None, flag(TrainerConfig, "trials")] = None,
    max_steps: MaxSteps = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    show_config: ShowConfig = False,
) -> None:
    """Optuna search over learning rate, LoRA dropout, class-weight penalty and batch size."""
    _setup_logging()
    cfg = _config(config, show_config, renames={"splits_dir": "splits"}).config
    from trainer.tune import tune as run_tune

    best = run_tune(cfg)
    typer.echo(f"tune -> {cfg.out}: best trial {best['trial']} valid macro F1 {best['valid_macro_f1']:.3f}")


@app.command("export")
def export_cmd(
    dest: Annotated[Path, typer.Option("--out", help="Output folder (created; an hf-dataset folder is replaced).")],
    fmt: Annotated[
        Literal["jsonl-chat", "hf-dataset"],
        typer.Option(
            "--format",
            help="jsonl-chat: <split>.jsonl, one {messages: [system, user, assistant]} chat per line; "
            "hf-dataset: a Hugging Face datasets folder (load_from_disk) with a README.md dataset card.",
        ),
    ] = "jsonl-chat",
    splits_dir: SplitsOpt = None,
    rationale: Annotated[
        Rationale | None, flag(TrainerConfig, "rationale", help="Assistant turn after the answer.")
    ] = None,
    config: ConfigOpt = None,
    show_config: ShowConfig = False,
) -> None:
    """Write the splits as chats (system instructions, user context + question, assistant answer)."""
    _setup_logging()
    extra = {"head": FlagValue("verbalizer", "--rationale")} if rationale not in (None, "none") else None
    cfg = _config(config, show_config, renames={"splits_dir": "splits"}, extra=extra).config
    from trainer.export import export

    counts = export(cfg, dest, fmt)
    parts = ", ".join(f"{name} {n}" for name, n in counts.items())
    typer.echo(f"export -> {dest} ({fmt}): chats {parts}")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="trainer")


if __name__ == "__main__":
    main()
