"""What callers hand the pipeline: PMIDs, PubMed URLs, PMID list files and BioASQ JSON files.

A PMID is accepted as a number or as a PubMed URL in either form NCBI has used:
``http(s)://www.ncbi.nlm.nih.gov/pubmed/N`` (BioASQ files up to 2023) and
``https://pubmed.ncbi.nlm.nih.gov/N/`` (the site since 2020, BioASQ files since 2024).
The range check is `store.schema.check_pmid`/`parse_pmid`, shared by every stage.

`load_bioasq` is the one BioASQ reader: the crawl's ``-a bioasq=`` input and the trainer's
question loader both go through it, under these rules (anything else is an
`InputFileError` naming the file, the question's position and id, and the field):

* the file is UTF-8 JSON, an object with a ``"questions"`` list;
* each question is an object with a non-empty string ``id`` (unique in the file) and a
  non-empty string ``body``; ``type`` is optional (a string, ``"yesno"`` when absent);
* ``documents`` is optional: a list of PMIDs or PubMed URLs, de-duplicated in order;
* ``snippets`` is optional: a list of objects, each with a non-empty string ``text``;
  its ``document`` (a PMID or PubMed URL) is optional, absent or null meaning a snippet
  of unknown source (it adds text but no PMID to fetch);
* ``exact_answer`` is kept as given (absent is None) and ``ideal_answer`` as its first
  non-empty string: what an answer must look like is the consumer's rule (the trainer
  takes yes/no only).

Memory: a BioASQ file is read whole (the largest training file is tens of MB); a PMID
list file is read a line at a time.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.schema import check_pmid, parse_pmid

__all__ = [
    "BioasqQuestion",
    "BioasqSnippet",
    "InputFileError",
    "bioasq_pmids",
    "load_bioasq",
    "parse_bioasq",
    "parse_pmid_line",
    "pmid_from_value",
    "read_json_file",
    "read_pmid_file",
]

_PMID_TEXT = re.compile(
    r"^(?:(?:https?://)?(?:www\.)?(?:ncbi\.nlm\.nih\.gov/pubmed|pubmed\.ncbi\.nlm\.nih\.gov)/)?"
    r"(\d{1,10})/?(?:[?#].*)?$",
    re.I,
)


class InputFileError(ValueError):
    """An input that cannot be used; the message names the file, the place and the field."""


def _pmid_of_text(text: str) -> int | None:
    match = _PMID_TEXT.match(text.strip())
    if match is None:
        return None
    try:
        return parse_pmid(match.group(1))
    except ValueError:
        return None


def parse_pmid_line(line: str) -> int | None:
    """The PMID on one line of a PMID list: a bare number or a PubMed URL (old or new site).

    Blank lines and ``#`` comments give None; anything else raises ValueError naming the text.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    pmid = _pmid_of_text(text)
    if pmid is None:
        raise ValueError(f"not a PMID or PubMed URL: {text!r}")
    return pmid


def pmid_from_value(value: Any, where: str) -> int:
    """A PMID from a JSON value: an integer, a digit string or a PubMed URL; `InputFileError` otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return check_pmid(value)
        except ValueError:
            pass
    elif isinstance(value, str) and (pmid := _pmid_of_text(value)) is not None:
        return pmid
    raise InputFileError(f"{where}: not a PMID or PubMed URL: {value!r}")


def read_pmid_file(path: str | os.PathLike[str]) -> list[int]:
    """The PMIDs of a file with one PMID or PubMed URL per line, de-duplicated in file order.

    `InputFileError` names the file and line of the first bad entry.
    """
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read PMID file: {exc}") from None
    pmids: dict[int, None] = {}
    number = 0
    with handle:
        try:
            for number, line in enumerate(handle, start=1):  # noqa: B007 - the error names the line
                if (pmid := parse_pmid_line(line)) is not None:
                    pmids[pmid] = None
        except UnicodeDecodeError as exc:  # decoded a block at a time: the line is not known
            raise InputFileError(f"{path}: not UTF-8 text (byte {exc.start} of a block after line {number})") from None
        except ValueError as exc:
            raise InputFileError(f"{path}:{number}: {exc}") from None
    return list(pmids)


def read_json_file(path: str | os.PathLike[str]) -> Any:
    """The parsed JSON of a UTF-8 file; `InputFileError` for a missing, unreadable or invalid file."""
    file = Path(path)
    if not file.is_file():
        raise InputFileError(f"{file}: file not found")
    try:
        return json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{file}: not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{file}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    except OSError as exc:
        raise InputFileError(f"{file}: cannot read: {exc}") from None


@dataclass(frozen=True)
class BioasqSnippet:
    """One snippet: its text and the PMID of the article it quotes (None when the file names none)."""

    text: str
    pmid: int | None = None


@dataclass(frozen=True)
class BioasqQuestion:
    """One question of a BioASQ file, checked by the rules in the module docstring."""

    id: str
    body: str
    type: str
    documents: tuple[int, ...] = ()
    snippets: tuple[BioasqSnippet, ...] = ()
    exact_answer: Any = field(default=None, compare=False)
    ideal_answer: str = ""
    where: str = field(default="", compare=False)
    """``"<file>: question #<i> (id <id>)"``: the prefix for errors about this question."""

    def pmids(self) -> list[int]:
        """Documents, then snippet sources, de-duplicated in that order."""
        found = dict.fromkeys(self.documents)
        found.update(dict.fromkeys(s.pmid for s in self.snippets if s.pmid is not None))
        return list(found)


def _nonempty_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputFileError(f"{where}: must be a non-empty string (got {value!r})")
    return value.strip()


def _optional_list(item: dict[str, Any], name: str, where: str) -> list[Any]:
    value = item.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputFileError(f"{where}: field '{name}' must be a list (got {type(value).__name__})")
    return value


def _first_text(value: Any) -> str:
    items = value if isinstance(value, list) else [value]
    return next((v.strip() for v in items if isinstance(v, str) and v.strip()), "")


def _question(item: Any, i: int, source: str) -> BioasqQuestion:
    if not isinstance(item, dict):
        raise InputFileError(f"{source}: question #{i}: must be an object (got {type(item).__name__})")
    qid = _nonempty_text(item.get("id"), f"{source}: question #{i}: field 'id'")
    where = f"{source}: question #{i} (id {qid})"
    body = _nonempty_text(item.get("body"), f"{where}: field 'body'")
    qtype = item.get("type", "yesno")
    if not isinstance(qtype, str):
        raise InputFileError(f"{where}: field 'type' must be a string (got {qtype!r})")
    documents = (
        pmid_from_value(d, f"{where}: field 'documents[{j}]'")
        for j, d in enumerate(_optional_list(item, "documents", where))
    )
    snippets = []
    for j, raw in enumerate(_optional_list(item, "snippets", where)):
        place = f"{where}: field 'snippets[{j}]"
        if not isinstance(raw, dict):
            raise InputFileError(f"{place}' must be an object (got {type(raw).__name__})")
        text = _nonempty_text(raw.get("text"), f"{place}.text'")
        doc = raw.get("document")
        snippets.append(BioasqSnippet(text, None if doc is None else pmid_from_value(doc, f"{place}.document'")))
    return BioasqQuestion(
        qid,
        body,
        qtype,
        tuple(dict.fromkeys(documents)),
        tuple(snippets),
        item.get("exact_answer"),
        _first_text(item.get("ideal_answer")),
        where,
    )


def parse_bioasq(data: Any, source: str = "<data>") -> list[BioasqQuestion]:
    """Every question of a parsed BioASQ object (``{"questions": [...]}``), in file order."""
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise InputFileError(f'{source}: expected an object with a "questions" list')
    questions: list[BioasqQuestion] = []
    seen: set[str] = set()
    for i, item in enumerate(data["questions"]):
        question = _question(item, i, source)
        if question.id in seen:
            raise InputFileError(f"{question.where}: field 'id' repeats an earlier question")
        seen.add(question.id)
        questions.append(question)
    return questions


def load_bioasq(path: str | os.PathLike[str]) -> list[BioasqQuestion]:
    """Every question of a BioASQ JSON file (training or test batch form, any year)."""
    return parse_bioasq(read_json_file(path), os.fspath(path))


def bioasq_pmids(path: str | os.PathLike[str]) -> list[int]:
    """Every PMID a BioASQ file cites (documents, then snippet sources), de-duplicated in first-seen order."""
    found: dict[int, None] = {}
    for question in load_bioasq(path):
        found.update(dict.fromkeys(question.pmids()))
    return list(found)
