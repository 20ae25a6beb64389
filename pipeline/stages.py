"""The five steps of `pipeline run` for one question file, in one work folder.

Work folder layout: ``pmids.txt`` (the documents the questions cite, the crawl's input),
``store/``, ``index/``, ``splits/``, ``runs/<run_name>/`` and ``steps/`` (the completion
markers of `pipeline.steps`). Each step is the stage's own command:

1. ``crawl``:  ``scrapy crawl pubmed -a pmids=pmids.txt`` (skips PMIDs already stored)
2. ``index``:  ``indexer rebuild`` (incremental)
3. ``splits``: ``trainer splits``
4. ``fit``:    ``trainer fit`` (``--resume`` after a kill with the same inputs, else ``--no-resume``)
5. ``eval``:   ``trainer eval``

A step's inputs are the settings its output depends on: the question file's content, the
relevant ``pipeline.toml`` table, model, seed, max steps; paths are not (every step's
paths are fixed inside the work folder, so a copied work folder stays finished). The
E-utilities URL and rate are not inputs (they change how documents are fetched, not which), so the demo's local
server on a fresh port does not invalidate a finished crawl.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.steps import Step
from store.atomic import atomic_write_text
from store.config import ConfigPath, StageConfig, read_config_file

NCBI_EUTILS = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"


class PipelineConfig(StageConfig):
    """Settings of one `pipeline run` (all from its flags)."""

    questions: ConfigPath = Field(description="BioASQ or PubMedQA question file.")
    kind: Literal["bioasq", "pubmedqa"] = Field(description="Format of the question file.")
    work: ConfigPath = Field(default=Path("data/pipeline"), description="Work folder: store, index, splits, runs.")
    eutils_url: str = Field(default=NCBI_EUTILS, description="E-utilities base URL the crawl fetches from.")
    rate: float | None = Field(default=None, gt=0, description="Crawl requests per second (None: the crawler's).")
    index_model: str | None = Field(default=None, description="Embedding model of the index (None: [indexer]'s).")
    model: str | None = Field(default=None, description="Base model to fine-tune (None: [trainer]'s).")
    max_steps: int | None = Field(default=None, ge=-1, description="Cap on optimiser steps (None: [trainer]'s).")
    seed: int = Field(default=13, ge=0, description="Seed for splitting, initialisation and data order.")
    retrieve_k: int | None = Field(default=None, ge=0, description="Chunks retrieved per question.")
    run_name: str = Field(default="run", pattern=r"^[A-Za-z0-9._-]+$", description="Run folder name under runs/.")
    config: ConfigPath | None = Field(
        default=None, description="pipeline.toml whose [indexer] and [trainer] tables the stages read."
    )

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        if not self.eutils_url.startswith(("http://", "https://")):
            raise ValueError(f"eutils_url must be an http:// or https:// URL (got {self.eutils_url!r})")
        return self

    @property
    def store(self) -> Path:
        return Path(self.work) / "store"

    @property
    def index(self) -> Path:
        return Path(self.work) / "index"

    @property
    def splits(self) -> Path:
        return Path(self.work) / "splits"

    @property
    def run(self) -> Path:
        return Path(self.work) / "runs" / self.run_name

    @property
    def markers(self) -> Path:
        return Path(self.work) / "steps"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cited_pmids(cfg: PipelineConfig) -> list[int]:
    """Every PMID the file's yes/no questions cite (documents and snippets), in first-seen order."""
    from trainer.questions import load_bioasq, load_pubmedqa

    questions = load_bioasq(cfg.questions) if cfg.kind == "bioasq" else load_pubmedqa(cfg.questions)
    pmids: dict[int, None] = {}
    for q in questions:
        pmids.update(dict.fromkeys(q.documents))
        pmids.update(dict.fromkeys(s.pmid for s in q.snippets if s.pmid is not None))
    return list(pmids)


def _tables(cfg: PipelineConfig) -> tuple[Path | None, dict[str, str]]:
    """The config file the stages read (explicit, else ./pipeline.toml) and a digest per table."""
    file, data = read_config_file(cfg.config)
    hashes = {t: digest(json.dumps(data.get(t, {}), sort_keys=True, default=str).encode()) for t in data}
    return (file.resolve() if file else None), hashes


def _opt(flag: str, value: Any) -> list[str]:
    return [] if value is None else [flag, str(value)]


def build_steps(cfg: PipelineConfig) -> list[Step]:
    """The five steps for ``cfg``; writes ``pmids.txt`` (only when its content changes)."""
    python = [sys.executable, "-m"]
    work = Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    pmids = cited_pmids(cfg)
    listing = "".join(f"{p}\n" for p in pmids)
    pmid_file = work / "pmids.txt"
    if not pmid_file.is_file() or pmid_file.read_text(encoding="utf-8") != listing:
        atomic_write_text(pmid_file, listing)
    questions = Path(cfg.questions)
    question_digest = digest(questions.read_bytes())
    config_file, tables = _tables(cfg)
    config = _opt("--config", config_file)
    kind_flag = f"--{cfg.kind}"
    crawl = [
        *python,
        *("scrapy", "crawl", "pubmed", "-a", f"pmids={pmid_file}"),
        *("-s", f"PUBMED_STORE={cfg.store}", "-s", f"PUBMED_EUTILS_URL={cfg.eutils_url}", "-s", "LOG_LEVEL=WARNING"),
        *([] if cfg.rate is None else ["-s", f"PUBMED_RATE={cfg.rate}"]),
    ]
    index = [*python, "indexer", "rebuild", "--store", str(cfg.store), "--index", str(cfg.index)]
    index += _opt("--model", cfg.index_model) + config
    splits = [*python, "trainer", "splits", kind_flag, str(questions), "--index", str(cfg.index)]
    splits += ["--out", str(cfg.splits), "--seed", str(cfg.seed), *_opt("--retrieve-k", cfg.retrieve_k), *config]
    fit = [*python, "trainer", "fit", "--splits", str(cfg.splits), "--out", str(cfg.run), "--seed", str(cfg.seed)]
    fit += _opt("--model", cfg.model) + _opt("--max-steps", cfg.max_steps) + config
    trainer_table = tables.get("trainer")
    return [
        Step(
            "crawl",
            crawl,
            inputs={"pmids": digest(listing.encode()), "n_pmids": len(pmids)},
            env={"SCRAPY_SETTINGS_MODULE": "crawler.settings"},
        ),
        Step(
            "index",
            index,
            inputs={"model": cfg.index_model, "indexer_table": tables.get("indexer")},
            outputs=(cfg.index / "manifest.json",),
        ),
        Step(
            "splits",
            splits,
            inputs={
                "questions": question_digest,
                "kind": cfg.kind,
                "seed": cfg.seed,
                "retrieve_k": cfg.retrieve_k,
                "trainer_table": trainer_table,
            },
            outputs=tuple(cfg.splits / f"{name}.parquet" for name in ("train", "valid", "test")),
        ),
        Step(
            "fit",
            fit,
            inputs={"model": cfg.model, "max_steps": cfg.max_steps, "seed": cfg.seed, "trainer_table": trainer_table},
            outputs=(cfg.run / "adapter" / "adapter_config.json", cfg.run / "fit.json"),
            on_resume=["--resume"],
            on_fresh=["--no-resume"],
        ),
        Step(
            "eval",
            [*python, "trainer", "eval", "--run", str(cfg.run)],
            outputs=(cfg.run / "metrics.json", cfg.run / "report.html"),
        ),
    ]
