"""Small E-utilities responses: error bodies inside HTTP 200, esearch results, PMID inputs.

NCBI reports many failures with status 200 and an error document as the body
(``<ERROR>...</ERROR>``, ``<eFetchResult><ERROR>``, an ``eSearchResult`` whose ``ErrorList``
comes without results, or JSON ``{"error": ...}``). `check_error_body` turns those into
`EutilsError` so callers can retry them like any other failure. The module also parses
esearch answers and the PMID inputs of a crawl (PMID/URL lines, BioASQ JSON files).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from store.schema import PMID_MAX, check_pmid, parse_pmid

__all__ = [
    "EsearchResult",
    "EutilsError",
    "bioasq_pmids",
    "check_error_body",
    "parse_esearch",
    "parse_pmid_line",
]

# Root elements of documents that carry PubMed records; they never hold an error element.
_RECORD_ROOTS = frozenset({b"PubmedArticleSet", b"MedlineCitationSet"})
# The first element tag after the prolog (XML declaration, DOCTYPE, comments, PIs).
_ROOT_TAG = re.compile(rb"\s*<([A-Za-z_][\w.\-:]*)")
_PROLOG_SKIP = re.compile(rb"\s*(?:<\?.*?\?>|<!DOCTYPE[^>\[]*(?:\[.*?\])?\s*>|<!--.*?-->)", re.S)
# Esearch errors that only mean "this phrase matched nothing": the answer is an empty result.
_BENIGN_SEARCH_ERRORS = frozenset({"PhraseNotFound", "QuotedPhraseNotFound"})


class EutilsError(RuntimeError):
    """E-utilities reported an error inside an HTTP 200 body; the message quotes it."""


@dataclass
class EsearchResult:
    """One esearch answer: the total ``count``, this page's ``ids`` and history keys."""

    count: int
    retstart: int
    retmax: int
    ids: list[int]
    webenv: str | None = None
    query_key: str | None = None
    warnings: list[str] = field(default_factory=list)


def _root_tag(body: bytes) -> bytes | None:
    """The name of the document's first element, or None when there is none in the head."""
    head = body[:65536]
    pos = 0
    while match := _PROLOG_SKIP.match(head, pos):
        pos = match.end()
    found = _ROOT_TAG.match(head, pos)
    return found.group(1) if found else None


def _xml_errors(root: etree._Element) -> list[str]:
    return [" ".join("".join(el.itertext()).split()) for el in root.iter("ERROR")]


def _parse_small_xml(body: bytes, what: str) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        return etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        line = f" line {exc.lineno}" if getattr(exc, "lineno", None) else ""
        raise EutilsError(f"unparseable {what} response{line}: {exc.msg}") from None


def _check_json(body: bytes) -> None:
    try:
        doc = json.loads(body)
    except ValueError:
        return
    if not isinstance(doc, dict):
        return
    if "error" in doc:
        raise EutilsError(f"E-utilities error: {doc['error']}")
    for value in doc.values():
        if isinstance(value, dict) and "ERROR" in value:
            raise EutilsError(f"E-utilities error: {value['ERROR']}")


def _esearch_problem(root: etree._Element) -> str | None:
    """Why an eSearchResult is an error, or None when it is a (possibly empty) answer."""
    errors = _xml_errors(root)
    if errors:
        return "; ".join(errors)
    error_list = root.find("ErrorList")
    if error_list is None or len(error_list) == 0:
        return None
    if root.find("Count") is None:
        return "; ".join(f"{el.tag}: {el.text or ''}".strip() for el in error_list)
    serious = [el for el in error_list if el.tag not in _BENIGN_SEARCH_ERRORS]
    if serious and int(root.findtext("Count", "0") or 0) == 0:
        return "; ".join(f"{el.tag}: {el.text or ''}".strip() for el in serious)
    return None


def check_error_body(body: bytes) -> None:
    """Raise `EutilsError` when ``body`` is an E-utilities error document; return otherwise.

    Record documents (``PubmedArticleSet``, ``MedlineCitationSet``) are recognised from
    their first element without parsing them, so this is cheap on large efetch bodies.
    A body that is neither an error nor well-formed is left for the real parser to reject.
    """
    stripped = body.lstrip()
    if stripped.startswith((b"{", b"[")):
        _check_json(stripped)
        return
    tag = _root_tag(stripped)
    if tag is None or tag in _RECORD_ROOTS:
        return
    if tag == b"ERROR":
        root = _parse_small_xml(stripped, "error")
        raise EutilsError(f"E-utilities error: {' '.join(''.join(root.itertext()).split())}")
    if tag in (b"eFetchResult", b"ePostResult", b"eSummaryResult", b"eLinkResult", b"eInfoResult"):
        root = _parse_small_xml(stripped, tag.decode())
        errors = _xml_errors(root)
        if errors:
            raise EutilsError(f"E-utilities error: {'; '.join(errors)}")
        return
    if tag == b"eSearchResult":
        problem = _esearch_problem(_parse_small_xml(stripped, "esearch"))
        if problem:
            raise EutilsError(f"E-utilities esearch error: {problem}")


def _int_text(root: etree._Element, name: str, default: int | None = None) -> int:
    text = root.findtext(name)
    if text is None or not text.strip():
        if default is None:
            raise EutilsError(f"esearch response has no <{name}>")
        return default
    try:
        return int(text.strip())
    except ValueError:
        raise EutilsError(f"esearch response has a non-integer <{name}>: {text.strip()!r}") from None


def parse_esearch(body: bytes) -> EsearchResult:
    """Parse an esearch XML (or JSON) answer; raise `EutilsError` for an error document.

    ``Count`` 0 with only ``PhraseNotFound`` errors is a valid empty result; those
    messages, and the ``WarningList`` entries, land in ``warnings``.
    """
    check_error_body(body)
    stripped = body.lstrip()
    if stripped.startswith(b"{"):
        return _parse_esearch_json(stripped)
    root = _parse_small_xml(stripped, "esearch")
    if root.tag != "eSearchResult":
        raise EutilsError(f"expected an eSearchResult document, got <{root.tag}>")
    ids = []
    for el in root.iterfind("IdList/Id"):
        try:
            ids.append(parse_pmid(el.text or ""))
        except ValueError:
            raise EutilsError(f"esearch response has an <Id> that is not a PMID: {el.text!r}") from None
    warnings = [f"{el.tag}: {' '.join((el.text or '').split())}" for el in root.iterfind("ErrorList/*")]
    warnings += [f"{el.tag}: {' '.join((el.text or '').split())}" for el in root.iterfind("WarningList/*")]
    return EsearchResult(
        count=_int_text(root, "Count"),
        retstart=_int_text(root, "RetStart", 0),
        retmax=_int_text(root, "RetMax", len(ids)),
        ids=ids,
        webenv=(root.findtext("WebEnv") or "").strip() or None,
        query_key=(root.findtext("QueryKey") or "").strip() or None,
        warnings=warnings,
    )


def _parse_esearch_json(body: bytes) -> EsearchResult:
    try:
        doc = json.loads(body)
        res = doc["esearchresult"]
        ids = [check_pmid(int(i)) for i in res.get("idlist", [])]
        warnings = [f"{k}: {v}" for k, v in (res.get("errorlist") or {}).items() if v]
        warnings += [f"{k}: {v}" for k, v in (res.get("warninglist") or {}).items() if v]
        return EsearchResult(
            count=int(res["count"]),
            retstart=int(res.get("retstart", 0)),
            retmax=int(res.get("retmax", len(ids))),
            ids=ids,
            webenv=res.get("webenv") or None,
            query_key=str(res["querykey"]) if res.get("querykey") else None,
            warnings=warnings,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise EutilsError(f"unexpected esearch JSON: {exc}") from None


_PMID_LINE = re.compile(
    r"^(?:(?:https?://)?(?:www\.)?(?:ncbi\.nlm\.nih\.gov/pubmed|pubmed\.ncbi\.nlm\.nih\.gov)/)?"
    r"(\d{1,10})/?(?:[?#].*)?$",
    re.I,
)


def parse_pmid_line(line: str) -> int | None:
    """The PMID on one input line: a bare number or a PubMed URL (old or new site).

    Blank lines and ``#`` comments give None; anything else raises ValueError naming the text.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    match = _PMID_LINE.match(text)
    try:
        return parse_pmid(match.group(1)) if match else parse_pmid("")
    except ValueError:
        raise ValueError(f"not a PMID or PubMed URL: {text!r}") from None


def _pmid_from_document(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= PMID_MAX:
        return value
    if isinstance(value, str):
        try:
            pmid = parse_pmid_line(value)
        except ValueError:
            pmid = None
        if pmid is not None:
            return pmid
    raise ValueError(f"{where}: not a PMID or PubMed URL: {value!r}")


def bioasq_pmids(path: str | os.PathLike[str]) -> list[int]:
    """Every PMID a BioASQ JSON file cites, de-duplicated, in first-seen order.

    Reads each question's ``documents`` list and its snippets' ``document`` fields.
    A malformed file raises ValueError naming the file, question index and field.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            doc = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    questions = doc.get("questions") if isinstance(doc, dict) else None
    if not isinstance(questions, list):
        raise ValueError(f"{name}: expected an object with a 'questions' list")
    seen: dict[int, None] = {}
    for i, question in enumerate(questions):
        where = f"{name}: questions[{i}]"
        if not isinstance(question, dict):
            raise ValueError(f"{where}: expected an object, got {type(question).__name__}")
        documents = question.get("documents", [])
        if not isinstance(documents, list):
            raise ValueError(f"{where}.documents: expected a list, got {type(documents).__name__}")
        for j, url in enumerate(documents):
            seen.setdefault(_pmid_from_document(url, f"{where}.documents[{j}]"), None)
        snippets = question.get("snippets", [])
        if not isinstance(snippets, list):
            raise ValueError(f"{where}.snippets: expected a list, got {type(snippets).__name__}")
        for j, snippet in enumerate(snippets):
            if not isinstance(snippet, dict) or "document" not in snippet:
                raise ValueError(f"{where}.snippets[{j}]: expected an object with a 'document' field")
            seen.setdefault(_pmid_from_document(snippet["document"], f"{where}.snippets[{j}].document"), None)
    return list(seen)
