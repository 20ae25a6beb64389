"""Views: the (question, context) texts a question is turned into, each keeping its question id.

The prompt view carries the question with its snippets and/or retrieved chunks; augmentation
views (q+snippets, q+documents, one q+snippet view per snippet) add examples for the classes
the augmentation policy chooses. Views of one question never cross a split boundary because
splits are decided on question ids first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trainer import LABELS
from trainer.config import ContextPart
from trainer.questions import Question
from trainer.retrieval import Chunk


@dataclass(frozen=True)
class View:
    """One training/evaluation example with its provenance."""

    question_id: str
    view: str
    question: str
    context: str
    label: str | None
    source_pmids: tuple[int, ...]
    source: str
    ideal_answer: str = ""

    @property
    def label_id(self) -> int:
        return LABELS.index(self.label) if self.label in LABELS else -1


def _snippet_text(q: Question) -> tuple[str, tuple[int, ...]]:
    text = "\n".join(s.text for s in q.snippets)
    return text, tuple(dict.fromkeys(s.pmid for s in q.snippets if s.pmid is not None))


def _chunk_text(chunks: Sequence[Chunk]) -> tuple[str, tuple[int, ...]]:
    return "\n".join(c.text for c in chunks), tuple(dict.fromkeys(c.pmid for c in chunks))


def _view(q: Question, kind: str, context: str, pmids: tuple[int, ...]) -> View:
    return View(q.id, kind, q.body, context, q.answer, pmids, q.source, q.ideal_answer)


def prompt_view(q: Question, chunks: Sequence[Chunk], parts: Sequence[ContextPart]) -> View:
    """Question + snippets + retrieved chunks (as ``parts`` choose); made even when context is empty."""
    texts: list[str] = []
    pmids: tuple[int, ...] = ()
    for part in parts:
        text, ids = _snippet_text(q) if part == "snippets" else _chunk_text(chunks)
        if text:
            texts.append(text)
            pmids += tuple(p for p in ids if p not in pmids)
    return _view(q, "prompt", "\n".join(texts), pmids)


def views_of(
    q: Question,
    chunks: Sequence[Chunk],
    kinds: Sequence[str],
    parts: Sequence[ContextPart],
    max_snippets: int,
) -> list[View]:
    """Views of kinds ``kinds`` (prompt, q+snippets, q+documents, q+snippet); empty contexts and
    exact duplicates of an earlier view's context are skipped (the prompt view is always kept)."""
    out: list[View] = []
    seen: set[str] = set()
    for kind in kinds:
        if kind == "prompt":
            made = [prompt_view(q, chunks, parts)]
        elif kind == "q+snippets":
            made = [_view(q, kind, *_snippet_text(q))]
        elif kind == "q+documents":
            made = [_view(q, kind, *_chunk_text(chunks))]
        elif kind == "q+snippet":
            made = [_view(q, kind, s.text, (s.pmid,) if s.pmid else ()) for s in q.snippets[:max_snippets]]
        else:
            raise ValueError(f"unknown view kind {kind!r}")
        for v in made:
            if v.view != "prompt" and (not v.context or v.context in seen):
                continue
            seen.add(v.context)
            out.append(v)
    return out
