"""Shared fixtures: synthetic yes/no questions (written here, not BioASQ data) and one tiny trained run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainer.config import TrainerConfig

TOPICS = [
    ("aspirin", "platelet aggregation"),
    ("metformin", "hepatic glucose output"),
    ("insulin", "blood glucose"),
    ("statins", "LDL cholesterol"),
    ("heparin", "thrombin activity"),
    ("warfarin", "vitamin K recycling"),
    ("caffeine", "adenosine receptors"),
    ("penicillin", "cell wall synthesis"),
    ("lithium", "GSK-3 activity"),
    ("vitamin C", "scurvy"),
    ("levodopa", "dopamine levels"),
    ("omeprazole", "gastric acid secretion"),
    ("tamoxifen", "estrogen receptor signalling"),
    ("digoxin", "Na/K-ATPase"),
    ("morphine", "mu opioid receptors"),
    ("ibuprofen", "cyclooxygenase"),
    ("propranolol", "beta adrenergic receptors"),
    ("atropine", "muscarinic receptors"),
    ("furosemide", "NKCC2 transport"),
    ("allopurinol", "xanthine oxidase"),
]


def synthetic_questions(n: int = 20, n_no: int = 6, pmid_base: int = 900000) -> dict[str, Any]:
    """BioASQ-form object: ``n`` yes/no questions (the first ``n_no`` answered no), 2 documents, 2 snippets each."""
    questions = []
    for i in range(n):
        drug, target = TOPICS[i % len(TOPICS)]
        answer = "no" if i < n_no else "yes"
        verb = "does not change" if answer == "no" else "inhibits"
        docs = [pmid_base + 2 * i, pmid_base + 2 * i + 1]
        questions.append(
            {
                "id": f"q{i:03d}",
                "type": "yesno",
                "body": f"Does {drug} inhibit {target} (case {i})?",
                "exact_answer": answer,
                "documents": [f"http://www.ncbi.nlm.nih.gov/pubmed/{d}" for d in docs],
                "snippets": [
                    {
                        "text": f"In our trial {drug} {verb} {target}.",
                        "document": f"http://www.ncbi.nlm.nih.gov/pubmed/{docs[0]}",
                    },
                    {
                        "text": f"Patients given {drug} were followed for a year.",
                        "document": f"http://www.ncbi.nlm.nih.gov/pubmed/{docs[1]}",
                    },
                ],
            }
        )
    return {"questions": questions}


@pytest.fixture
def bioasq_file(tmp_path: Path) -> Path:
    path = tmp_path / "questions.json"
    path.write_text(json.dumps(synthetic_questions()), encoding="utf-8")
    return path


def tiny_config(tmp: Path, **overrides: Any) -> TrainerConfig:
    """Small, fast settings: max_length 64, few steps, no index."""
    values: dict[str, Any] = {
        "splits": tmp / "splits",
        "out": tmp / "run",
        "index": None,
        "test_fraction": 0.25,
        "valid_fraction": 0.25,
        "max_length": 64,
        "batch_size": 4,
        "eval_batch_size": 16,
        "max_steps": 4,
        "eval_steps": 2,
        "early_stopping_patience": 0,
        "learning_rate": 5e-3,
        "bootstrap": 50,
        "nn_k": 3,
        "seed": 7,
        "resume": False,
        "threads": 2,
    }
    values.update(overrides)
    return TrainerConfig.model_validate(values)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainerConfig, Any]:
    """One short QLoRA fit on synthetic splits, shared by the fit/eval tests."""
    from trainer.fit import fit
    from trainer.questions import parse_bioasq
    from trainer.splits import build_splits

    tmp = tmp_path_factory.mktemp("tiny")
    cfg = tiny_config(tmp)
    build_splits(parse_bioasq(synthetic_questions()), cfg)
    return cfg, fit(cfg)
