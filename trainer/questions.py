"""Question loaders: BioASQ JSON (yes/no questions) and PubMedQA ``ori_pqal.json``.

Both produce `Question` records. A malformed file raises `QuestionFileError` whose message
names the file, the question (position and id) and the field.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.schema import check_pmid
from store.schema import parse_pmid as parse_pmid_text

log = logging.getLogger(__name__)

_PMID_URL = re.compile(r"(?:pubmed/|^)(\d+)/?$")


class QuestionFileError(ValueError):
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
    file = Path(path)
    if not file.is_file():
        raise QuestionFileError(f"{file}: file not found")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QuestionFileError(f"{file}: not valid JSON: {exc}") from None


def parse_pmid(value: Any, where: str) -> int:
    """A PMID from an int, a digit string or a PubMed URL (``.../pubmed/123``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            return check_pmid(value)
    if isinstance(value, str):
        match = _PMID_URL.search(value.strip())
        if match:
            with contextlib.suppress(ValueError):
                return parse_pmid_text(match.group(1))
    raise QuestionFileError(f"{where}: not a PMID or PubMed URL: {value!r}")


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


def _first_text(value: Any) -> str:
    """The first non-empty string of a string or list (BioASQ ideal answers come as lists), else ''."""
    items = value if isinstance(value, list) else [value]
    return next((v.strip() for v in items if isinstance(v, str) and v.strip()), "")


def parse_bioasq(data: Any, source: str = "<data>", *, require_answer: bool = True) -> list[Question]:
    """Yes/no questions of a BioASQ ``{"questions": [...]}`` object; other types are skipped."""
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise QuestionFileError(f'{source}: expected an object with a "questions" list')
    out: list[Question] = []
    seen: set[str] = set()
    skipped = 0
    for i, item in enumerate(data["questions"]):
        if not isinstance(item, dict):
            raise QuestionFileError(f"{source}: question #{i}: must be an object")
        qid = item.get("id")
        if not isinstance(qid, str) or not qid.strip():
            raise QuestionFileError(f"{source}: question #{i}: field 'id' must be a non-empty string (got {qid!r})")
        where = f"{source}: question #{i} (id {qid})"
        qtype = item.get("type", "yesno")
        if qtype != "yesno":
            skipped += 1
            continue
        if qid in seen:
            raise QuestionFileError(f"{where}: field 'id' repeats an earlier question")
        seen.add(qid)
        body = _text(item.get("body"), f"{where}: field 'body'")
        if "exact_answer" in item or require_answer:
            answer: str | None = _answer(item.get("exact_answer"), f"{where}: field 'exact_answer'", ("yes", "no"))
        else:
            answer = None
        docs_raw = item.get("documents", [])
        if not isinstance(docs_raw, list):
            raise QuestionFileError(f"{where}: field 'documents' must be a list")
        documents = tuple(
            dict.fromkeys(parse_pmid(d, f"{where}: field 'documents[{j}]'") for j, d in enumerate(docs_raw))
        )
        snips_raw = item.get("snippets", [])
        if not isinstance(snips_raw, list):
            raise QuestionFileError(f"{where}: field 'snippets' must be a list")
        snippets: list[Snippet] = []
        for j, snip in enumerate(snips_raw):
            if not isinstance(snip, dict):
                raise QuestionFileError(f"{where}: field 'snippets[{j}]' must be an object")
            text = _text(snip.get("text"), f"{where}: field 'snippets[{j}].text'")
            doc = snip.get("document")
            pmid = parse_pmid(doc, f"{where}: field 'snippets[{j}].document'") if doc is not None else None
            snippets.append(Snippet(text=text, pmid=pmid))
        ideal = _first_text(item.get("ideal_answer"))
        out.append(Question(qid, body, answer, documents, tuple(snippets), "bioasq", ideal))
    if skipped:
        log.info("%s: skipped %d questions that are not of type yesno", source, skipped)
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
        long_answer = _first_text(item.get("LONG_ANSWER"))
        out.append(Question(str(pmid), body, answer, (pmid,), snippets, "pubmedqa", long_answer))
    if dropped:
        log.info("%s: dropped %d 'maybe' questions (binary yes/no classifier)", source, dropped)
    return out


def load_pubmedqa(path: str | os.PathLike[str], *, keep_maybe: bool = False) -> list[Question]:
    """Load a PubMedQA file in ``ori_pqal.json`` form."""
    return parse_pubmedqa(_read_json(path), str(path), keep_maybe=keep_maybe)
