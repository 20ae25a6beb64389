"""`trainer export`: the splits as chat-format JSONL or as a Hugging Face ``datasets`` folder.

Every view becomes one chat in the verbalizer's form (`trainer.verbalizer.chat_messages`):
a system turn with the instructions, a user turn with context then question, and the
assistant's answer (followed by the ideal answer with ``rationale='ideal_answer'``), beside
its question id, view kind, label and source PMIDs. ``jsonl-chat`` writes
``<out>/<split>.jsonl``, one chat per line, streamed through `store.atomic`; ``hf-dataset``
writes a ``DatasetDict`` (``save_to_disk``) with a ``README.md`` dataset card into a temp
folder and renames it into place. Memory: one split's views at a time.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from store.atomic import atomic_write, atomic_write_text
from trainer.checkpoints import fsync_tree
from trainer.config import TrainerConfig
from trainer.errors import TrainerError
from trainer.fit import publish_folder
from trainer.splits import SPLIT_NAMES, read_split
from trainer.verbalizer import chat_messages
from trainer.views import View

ExportFormat = Literal["jsonl-chat", "hf-dataset"]
FORMATS: tuple[str, ...] = ("jsonl-chat", "hf-dataset")


def chat_rows(views: Sequence[View], cfg: TrainerConfig) -> Iterator[dict[str, Any]]:
    """One chat record per labelled view."""
    for v in views:
        if v.label_id < 0:
            continue
        yield {
            "messages": chat_messages(v, cfg, with_answer=True),
            "question_id": v.question_id,
            "view": v.view,
            "label": v.label,
            "source": v.source,
            "source_pmids": list(v.source_pmids),
        }


def present_splits(splits: Path) -> list[str]:
    names = [n for n in SPLIT_NAMES if (splits / f"{n}.parquet").is_file()]
    if not names:
        raise TrainerError(f"{splits}: no split Parquet files; run `trainer splits` first")
    return names


def export_jsonl(cfg: TrainerConfig, out: Path) -> dict[str, int]:
    """``<out>/<split>.jsonl`` per split; returns chats written per split."""
    counts: dict[str, int] = {}
    for name in present_splits(Path(cfg.splits)):
        n = 0
        with atomic_write(out / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for row in chat_rows(read_split(cfg.splits, name), cfg):
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        counts[name] = n
    return counts


def dataset_card(cfg: TrainerConfig, counts: dict[str, int], labels: dict[str, dict[str, int]]) -> str:
    """README.md of the exported dataset: what one record is and how the splits were made."""
    split_lines = "\n".join(
        f"| {name} | {n} | {labels[name].get('yes', 0)} | {labels[name].get('no', 0)} |" for name, n in counts.items()
    )
    yaml_splits = "\n".join(f"  - name: {name}\n    num_examples: {n}" for name, n in counts.items())
    return f"""---
task_categories:
- question-answering
- text-classification
language:
- en
pretty_name: Biomedical yes/no questions as chats
dataset_info:
  splits:
{yaml_splits}
---

# Biomedical yes/no questions as chats

Each record is one view of a yes/no question (`view`: the prompt view or an augmentation
view) as a chat in `messages`: a `system` turn with the instructions, a `user` turn with
the context (snippets and retrieved document chunks) followed by the question, and the
`assistant` turn with the answer{" and the question's ideal answer" if cfg.rationale == "ideal_answer" else ""}.
`question_id`, `label`, `source` and `source_pmids` give the provenance.

Splits were made on question ids before any augmentation (seed {cfg.seed}, test share
{cfg.test_fraction}, valid share {cfg.valid_fraction}), so all views of a question are in
one split. Augmented classes in train: `{cfg.augment}`.

| split | chats | yes | no |
|---|---|---|---|
{split_lines}

Load with `datasets.load_from_disk(path)`. The question texts come from the source
question sets (BioASQ, PubMedQA); their licences apply.
"""


def export_hf(cfg: TrainerConfig, out: Path) -> dict[str, int]:
    """A ``datasets.DatasetDict`` folder with a dataset card, published by renaming a temp folder."""
    try:
        from datasets import Dataset, DatasetDict
    except ImportError as exc:
        raise TrainerError("format hf-dataset needs the 'datasets' package (pip install datasets)") from exc
    parts: dict[str, Any] = {}
    counts: dict[str, int] = {}
    labels: dict[str, dict[str, int]] = {}
    for name in present_splits(Path(cfg.splits)):
        rows = list(chat_rows(read_split(cfg.splits, name), cfg))
        parts[name] = Dataset.from_list(rows)
        counts[name] = len(rows)
        labels[name] = dict(Counter(r["label"] for r in rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    DatasetDict(parts).save_to_disk(str(tmp))
    atomic_write_text(tmp / "README.md", dataset_card(cfg, counts, labels))
    fsync_tree(tmp)
    publish_folder(tmp, out)
    return counts


def export(cfg: TrainerConfig, out: str | Path, fmt: str) -> dict[str, int]:
    """Export ``cfg.splits`` to ``out`` in format ``fmt``; returns chats per split."""
    if fmt not in FORMATS:
        raise TrainerError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    target = Path(out)
    return export_jsonl(cfg, target) if fmt == "jsonl-chat" else export_hf(cfg, target)
