"""Question loaders: BioASQ JSON (yes/no questions) and PubMedQA ``ori_pqal.json``.

Both produce `Question` records. BioASQ files are read by `eutils.inputs.load_bioasq`, the
one BioASQ reader the crawl uses too (its rules are documented there); this module keeps
what is the trainer's own: yes/no questions only, their answers checked. A malformed file
raises `QuestionFileError` whose message names the file, the question (position and id)
and the field.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from eutils import inputs

log = logging.getLogger(__name__)


class QuestionFileError(inputs.InputFileError):
    """A question file that cannot be used; the message says which question and field."""


@dataclass(frozen=True)
class Snippet:
    """One evidence passage of a question and the PubMed article it comes from (if known)."""

    text: str
    pmid: int | None = None


@dataclass(frozen=True)
class Question:
    """A yes/no question with its evidence; ``answer`` is 'yes', 'no' (or 'maybe' for PubMedQA), or None.

    ``ideal_answer`` is the free-text answer (BioASQ's first ideal answer, PubMedQA's long
    answer) or empty: the rationale a verbalizer can be trained to give after the answer.
    """

    id: str
    body: str
    answer: str | None
    documents: tuple[int, ...] = ()
    snippets: tuple[Snippet, ...] = ()
    source: str = "bioasq"
    ideal_answer: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def _read_json(path: str | os.PathLike[str]) -> Any:
    try:
        return inputs.read_json_file(path)
    except inputs.InputFileError as exc:
        raise QuestionFileError(str(exc)) from None


def parse_pmid(value: Any, where: str) -> int:
    """A PMID from an int, a digit string or a PubMed URL (either form, see `eutils.inputs`)."""
    try:
        return inputs.pmid_from_value(value, where)
    except inputs.InputFileError as exc:
        raise QuestionFileError(str(exc)) from None


def _answer(value: Any, where: str, allowed: tuple[str, ...]) -> str:
    # BioASQ has shipped both "yes" and ["yes"] forms of exact_answer.
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or value.strip().lower() not in allowed:
        raise QuestionFileError(f"{where}: must be one of {', '.join(allowed)} (got {value!r})")
    return value.strip().lower()


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise QuestionFileError(f"{where}: must be a non-empty string (got {value!r})")
    return value.strip()


def parse_bioasq(data: Any, source: str = "<data>", *, require_answer: bool = True) -> list[Question]:
    """Yes/no questions of a BioASQ ``{"questions": [...]}`` object; other types are skipped.

    The file's structure is checked by `eutils.inputs.parse_bioasq` (the rules the crawl's
    ``-a bioasq=`` input follows too); here ``exact_answer`` must be yes or no (or, with
    ``require_answer=False``, may be absent).
    """
    try:
        parsed = inputs.parse_bioasq(data, source)
    except inputs.InputFileError as exc:
        raise QuestionFileError(str(exc)) from None
    out: list[Question] = []
    for item in parsed:
        if item.type != "yesno":
            continue
        if item.exact_answer is not None or require_answer:
            answer: str | None = _answer(item.exact_answer, f"{item.where}: field 'exact_answer'", ("yes", "no"))
        else:
            answer = None
        snippets = tuple(Snippet(s.text, s.pmid) for s in item.snippets)
        out.append(Question(item.id, item.body, answer, item.documents, snippets, "bioasq", item.ideal_answer))
    if len(out) < len(parsed):
        log.info("%s: skipped %d questions that are not of type yesno", source, len(parsed) - len(out))
    return out


def load_bioasq(path: str | os.PathLike[str], *, require_answer: bool = True) -> list[Question]:
    """Load the yes/no questions of a BioASQ JSON file (training or test batch form)."""
    return parse_bioasq(_read_json(path), str(path), require_answer=require_answer)


def parse_pubmedqa(data: Any, source: str = "<data>", *, keep_maybe: bool = False) -> list[Question]:
    """PubMedQA ``{PMID: {QUESTION, CONTEXTS, final_decision, ...}}``; 'maybe' dropped unless ``keep_maybe``."""
    if not isinstance(data, dict):
        raise QuestionFileError(f"{source}: expected an object keyed by PMID")
    out: list[Question] = []
    dropped = 0
    for i, (key, item) in enumerate(data.items()):
        where = f"{source}: question #{i} (id {key})"
        pmid = parse_pmid(key, f"{where}: key")
        if not isinstance(item, dict):
            raise QuestionFileError(f"{where}: must be an object")
        body = _text(item.get("QUESTION"), f"{where}: field 'QUESTION'")
        answer = _answer(item.get("final_decision"), f"{where}: field 'final_decision'", ("yes", "no", "maybe"))
        contexts = item.get("CONTEXTS")
        if not isinstance(contexts, list) or not contexts:
            raise QuestionFileError(f"{where}: field 'CONTEXTS' must be a non-empty list of strings")
        snippets = tuple(Snippet(_text(c, f"{where}: field 'CONTEXTS[{j}]'"), pmid) for j, c in enumerate(contexts))
        if answer == "maybe" and not keep_maybe:
            dropped += 1
            continue
        long_answer = item.get("LONG_ANSWER")
        long_answer = long_answer.strip() if isinstance(long_answer, str) else ""
        out.append(Question(str(pmid), body, answer, (pmid,), snippets, "pubmedqa", long_answer))
    if dropped:
        log.info("%s: dropped %d 'maybe' questions (binary yes/no classifier)", source, dropped)
    return out


def load_pubmedqa(path: str | os.PathLike[str], *, keep_maybe: bool = False) -> list[Question]:
    """Load a PubMedQA file in ``ori_pqal.json`` form."""
    return parse_pubmedqa(_read_json(path), str(path), keep_maybe=keep_maybe)
