"""Checks of E-utilities answers: error bodies inside HTTP 200, and esearch results.

NCBI reports many failures with status 200 and an error document as the body
(``<ERROR>...</ERROR>``, ``<eFetchResult><ERROR>``, an ``eSearchResult`` whose ``ErrorList``
comes without results, or JSON ``{"error": ...}``). `check_error_body` turns those into
`EutilsError` so callers can retry them like any other failure. `parse_esearch` reads
an esearch answer (XML or JSON). Bodies are checked from their head; only small error and
esearch documents are parsed whole, so a large efetch body costs no extra memory here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from lxml import etree

from store.schema import check_pmid, parse_pmid

__all__ = [
    "EsearchResult",
    "EutilsError",
    "check_error_body",
    "parse_esearch",
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
