"""The one parser of PubMed article XML: efetch bodies, baseline and update files.

Everything that reads PubMed records (the spider, the aiohttp client, the baseline
loader) goes through this module, so a record becomes the same store row whichever way
it arrived. Parsing streams with ``lxml.etree.iterparse``: each record element is turned
into a row and then cleared together with the records before it, so memory stays flat
however large the input. libxml2's default limits stay on (no ``huge_tree``): a text
node may hold at most 10 MB and elements nest at most 256 deep, so a hostile body costs
bounded memory and a bounded stack; a document over them is a `MalformedXMLError`.

Two document kinds are understood:

* ``PubmedArticleSet`` (efetch, baseline and daily update files since 2017) holding
  ``PubmedArticle``, ``PubmedBookArticle`` and ``DeleteCitation`` elements;
* the legacy ``MedlineCitationSet`` (MEDLINE distribution up to 2016) holding bare
  ``MedlineCitation`` records and ``DeleteCitation``.

Rows are store article dicts (see `store.schema.validate_article`).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from lxml import etree

from eutils.responses import check_error_body
from store.schema import parse_pmid

__all__ = [
    "Article",
    "Deletion",
    "EfetchResult",
    "MalformedXMLError",
    "iter_pubmed_records",
    "parse_efetch",
]

_MATHML_NS = "{http://www.w3.org/1998/Math/MathML}"
_MTEXT = _MATHML_NS + "mtext"
_MMULTISCRIPTS = _MATHML_NS + "mmultiscripts"
_MPRESCRIPTS = _MATHML_NS + "mprescripts"
_RECORD_TAGS = ("PubmedArticle", "PubmedBookArticle", "MedlineCitation", "DeleteCitation")
_ROOTS = ("PubmedArticleSet", "MedlineCitationSet")
_SPACE_RUN = re.compile(r"[ \t\n\r\f\v]+")
_YEAR = re.compile(r"\d{4}")
_GZIP_MAGIC = b"\x1f\x8b"


class MalformedXMLError(ValueError):
    """PubMed XML that is truncated, not well-formed, or not a PubMed record document.

    The message names the input (a file path or "efetch response") and the line when known.
    """


@dataclass(slots=True)
class Article:
    """One parsed record: ``row`` is a store article dict."""

    row: dict[str, Any]


@dataclass(slots=True)
class Deletion:
    """One ``DeleteCitation`` element: the PMIDs PubMed withdrew."""

    pmids: list[int]


@dataclass
class EfetchResult:
    """The records of one efetch body: article rows and the PMIDs of any DeleteCitation."""

    articles: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)


# ----------------------------------------------------------------------------- text


def _norm(text: str) -> str:
    """Collapse runs of ASCII whitespace to one space and strip (other characters stay)."""
    if "  " in text or "\n" in text or "\t" in text or "\r" in text or "\f" in text or "\v" in text:
        return _SPACE_RUN.sub(" ", text).strip()
    return text.strip()


def _math_text(el: etree._Element) -> str:
    """A MathML element as its characters in reading order.

    Layout whitespace between tokens is dropped, ``mtext`` keeps its spaces, and the
    prescripts of ``mmultiscripts`` come first (isotopes read "3He", not "He3").
    """
    tag = el.tag
    if not isinstance(tag, str):
        return ""
    children = [c for c in el if isinstance(c.tag, str)]
    if tag == _MMULTISCRIPTS and children:
        split = next((i for i, c in enumerate(children) if c.tag == _MPRESCRIPTS), len(children))
        ordered = children[split + 1 :] + children[:split]
        return "".join(_math_text(c) + (c.tail or "").strip() for c in ordered)
    text = el.text or ""
    out = [text if tag == _MTEXT else text.strip()]
    for child in children:
        out.append(_math_text(child))
        if child.tail:
            out.append(child.tail.strip())
    return "".join(out)


def _append_flat(elem: etree._Element, out: list[str]) -> None:
    """Append the text under ``elem`` in document order (iterative: no recursion limit)."""
    stack: list[tuple[Iterator[etree._Element], etree._Element | None]] = [(iter(elem), None)]
    while stack:
        children, owner = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            if owner is not None and owner.tail:
                out.append(owner.tail)
            continue
        tag = child.tag
        if isinstance(tag, str) and not tag.startswith(_MATHML_NS):
            if child.text:
                out.append(child.text)
            stack.append((iter(child), child))
            continue
        if isinstance(tag, str):
            out.append(_math_text(child))
        if child.tail:
            out.append(child.tail)


def flat_text(elem: etree._Element | None) -> str | None:
    """The text of ``elem`` with inline markup and MathML flattened; None when empty."""
    if elem is None:
        return None
    if len(elem) == 0:
        text = elem.text
    else:
        parts = [elem.text] if elem.text else []
        _append_flat(elem, parts)
        text = "".join(parts)
    if not text:
        return None
    return _norm(text) or None


def _plain(elem: etree._Element) -> str | None:
    text = elem.text
    if len(elem):
        return flat_text(elem)
    if not text:
        return None
    return _norm(text) or None


# ------------------------------------------------------------------------- fields


def _pmid(elem: etree._Element | None) -> tuple[int, int]:
    if elem is None or not (elem.text or "").strip():
        raise ValueError("record has no PMID")
    pmid = parse_pmid(elem.text or "")
    version_attr = elem.get("Version")
    version = int(version_attr) if version_attr and version_attr.strip().isdigit() else 1
    return pmid, max(version, 1)


def _pub_date(elem: etree._Element | None) -> tuple[str | None, int | None]:
    if elem is None:
        return None, None
    medline = elem.findtext("MedlineDate")
    if medline:
        raw = _norm(medline)
    else:
        parts = []
        for child in elem:
            if child.tag in ("Year", "Month", "Day", "Season") and child.text and child.text.strip():
                parts.append(child.text.strip())
        raw = " ".join(parts)
    if not raw:
        return None, None
    year = _YEAR.search(raw)
    return raw, int(year.group()) if year else None


def _abstract(elem: etree._Element | None) -> tuple[str | None, list[dict[str, str | None]]]:
    if elem is None:
        return None, []
    sections: list[dict[str, str | None]] = []
    for part in elem.iterchildren("AbstractText"):
        text = _plain(part)
        if not text:
            continue
        label = part.get("Label")
        label = _norm(label) or None if label else None
        category = part.get("NlmCategory") or None
        sections.append({"label": label, "category": category, "text": text})
    if not sections:
        return None, []
    joined = "\n".join(f"{s['label']}: {s['text']}" if s["label"] else str(s["text"]) for s in sections)
    return joined, sections


def _authors(elem: etree._Element | None) -> list[str]:
    if elem is None:
        return []
    names = []
    for author in elem.iterchildren("Author"):
        if author.get("ValidYN") == "N":
            continue
        last = initials = fore = collective = None
        for child in author:
            tag = child.tag
            if tag == "LastName":
                last = child.text
            elif tag == "Initials":
                initials = child.text
            elif tag == "ForeName":
                fore = child.text
            elif tag == "CollectiveName":
                collective = _plain(child)
        if last:
            given = initials or fore
            names.append(_norm(f"{last} {given}" if given else last))
        elif collective:
            names.append(collective)
    return names


def _texts(elems: Any) -> list[str]:
    out = []
    for el in elems:
        text = _plain(el)
        if text:
            out.append(text)
    return out


def _doi_from_ids(id_list: etree._Element | None) -> str | None:
    if id_list is None:
        return None
    for el in id_list.iterchildren("ArticleId"):
        if el.get("IdType") == "doi" and el.text and el.text.strip():
            return el.text.strip()
    return None


def _empty_row(pmid: int, version: int, source: str, fetched_at: dt.datetime) -> dict[str, Any]:
    return {
        "pmid": pmid,
        "version": version,
        "title": None,
        "vernacular_title": None,
        "abstract": None,
        "abstract_sections": [],
        "journal": None,
        "pub_year": None,
        "pub_date": None,
        "authors": [],
        "mesh_terms": [],
        "publication_types": [],
        "language": [],
        "doi": None,
        "source": source,
        "fetched_at": fetched_at,
    }


def _citation_row(citation: etree._Element, source: str, fetched_at: dt.datetime) -> dict[str, Any]:
    """A row from a ``MedlineCitation`` (inside a PubmedArticle or standalone)."""
    pmid_el = None
    article = None
    mesh = None
    for child in citation:
        tag = child.tag
        if tag == "PMID":
            pmid_el = child
        elif tag == "Article":
            article = child
        elif tag == "MeshHeadingList":
            mesh = child
    pmid, version = _pmid(pmid_el)
    row = _empty_row(pmid, version, source, fetched_at)
    if mesh is not None:
        row["mesh_terms"] = _texts(mh.find("DescriptorName") for mh in mesh.iterchildren("MeshHeading"))
    if article is None:
        return row
    title_el = vernacular_el = abstract_el = None
    languages: list[str] = []
    for child in article:
        tag = child.tag
        if tag == "Journal":
            for jchild in child:
                jtag = jchild.tag
                if jtag == "Title":
                    row["journal"] = _plain(jchild)
                elif jtag == "JournalIssue":
                    row["pub_date"], row["pub_year"] = _pub_date(jchild.find("PubDate"))
        elif tag == "ArticleTitle":
            title_el = child
        elif tag == "VernacularTitle":
            vernacular_el = child
        elif tag == "Abstract":
            abstract_el = child
        elif tag == "AuthorList":
            row["authors"] = _authors(child)
        elif tag == "Language":
            if child.text and child.text.strip():
                languages.append(child.text.strip())
        elif tag == "PublicationTypeList":
            row["publication_types"] = _texts(child.iterchildren("PublicationType"))
        elif tag == "ELocationID" and child.get("EIdType") == "doi" and child.get("ValidYN") != "N":
            row["doi"] = row["doi"] or (child.text or "").strip() or None
    row["language"] = languages
    row["vernacular_title"] = flat_text(vernacular_el)
    row["title"] = flat_text(title_el) or row["vernacular_title"]
    row["abstract"], row["abstract_sections"] = _abstract(abstract_el)
    return row


def _article_row(record: etree._Element, source: str, fetched_at: dt.datetime) -> dict[str, Any]:
    citation = pubmed_data = None
    for child in record:
        if child.tag == "MedlineCitation":
            citation = child
        elif child.tag == "PubmedData":
            pubmed_data = child
    if citation is None:
        raise ValueError("PubmedArticle has no MedlineCitation")
    row = _citation_row(citation, source, fetched_at)
    if row["doi"] is None and pubmed_data is not None:
        row["doi"] = _doi_from_ids(pubmed_data.find("ArticleIdList"))
    return row


def _book_row(record: etree._Element, source: str, fetched_at: dt.datetime) -> dict[str, Any]:
    doc = record.find("BookDocument")
    if doc is None:
        raise ValueError("PubmedBookArticle has no BookDocument")
    pmid, version = _pmid(doc.find("PMID"))
    row = _empty_row(pmid, version, source, fetched_at)
    book = doc.find("Book")
    book_title = None
    if book is not None:
        book_title = flat_text(book.find("BookTitle"))
        row["pub_date"], row["pub_year"] = _pub_date(book.find("PubDate"))
    row["journal"] = book_title
    row["vernacular_title"] = flat_text(doc.find("VernacularTitle"))
    row["title"] = flat_text(doc.find("ArticleTitle")) or row["vernacular_title"] or book_title
    row["abstract"], row["abstract_sections"] = _abstract(doc.find("Abstract"))
    authors: list[str] = []
    for author_list in doc.iterchildren("AuthorList"):
        if author_list.get("Type", "authors") == "authors":
            authors += _authors(author_list)
    row["authors"] = authors
    row["language"] = [t for t in (el.text.strip() for el in doc.iterchildren("Language") if el.text) if t]
    row["publication_types"] = _texts(doc.iterchildren("PublicationType"))
    row["doi"] = _doi_from_ids(doc.find("ArticleIdList"))
    if row["doi"] is None:
        row["doi"] = _doi_from_ids(record.find("PubmedBookData/ArticleIdList"))
    return row


def _deleted_pmids(elem: etree._Element) -> list[int]:
    return [parse_pmid(el.text) for el in elem.iterchildren("PMID") if el.text and el.text.strip()]


# ------------------------------------------------------------------------ streaming


def _open_source(src: str | os.PathLike[str] | BinaryIO) -> tuple[BinaryIO, str, list[BinaryIO]]:
    """A binary stream of decompressed XML, a name for messages, and the streams to close."""
    to_close: list[BinaryIO] = []
    raw: Any
    if isinstance(src, str | os.PathLike):
        name = os.fspath(src)
        raw = open(name, "rb")  # noqa: SIM115 - closed by the caller
        to_close.append(raw)
    else:
        raw = src
        name = getattr(src, "name", None) or "stream"
    if not hasattr(raw, "peek"):
        raw = io.BufferedReader(raw)
    if raw.peek(2)[:2] == _GZIP_MAGIC:
        unpacked: Any = gzip.GzipFile(fileobj=raw, mode="rb")
        to_close.insert(0, unpacked)
        return unpacked, str(name), to_close
    return raw, str(name), to_close


def _location(exc: BaseException) -> str:
    line = getattr(exc, "lineno", None)
    return f" line {line}" if line else ""


def iter_pubmed_records(
    src: str | Path | BinaryIO,
    *,
    source: str = "baseline",
    fetched_at: dt.datetime | None = None,
    name: str | None = None,
) -> Iterator[Article | Deletion]:
    """Stream the records of a PubMed XML document as `Article` and `Deletion` items.

    ``src`` is a path or a binary stream; gzip input (by its magic bytes, whatever the
    name) is decompressed on the fly. Memory stays constant: every record element is
    cleared, with its already-parsed siblings, once it has been turned into a row.
    Rows carry ``source`` and ``fetched_at`` (default: now, UTC). ``name`` overrides the
    input name used in error messages.

    Raises `MalformedXMLError` for a truncated or ill-formed document, an unexpected
    root element, or a record without a usable PMID. Records before the fault have
    already been yielded by then; callers that need all-or-nothing collect first.
    """
    stamp = fetched_at or dt.datetime.now(dt.UTC)
    stream, label, to_close = _open_source(src)
    label = name or label
    try:
        events = etree.iterparse(
            stream,
            events=("end",),
            tag=_RECORD_TAGS,
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,  # libxml2's limits: 10 MB per text node, 256 levels of nesting
            remove_comments=True,
            remove_pis=True,
        )
        root_checked = False
        try:
            for _, elem in events:
                parent = elem.getparent()
                if not root_checked:
                    root = elem.getroottree().getroot()
                    if root.tag not in _ROOTS:
                        raise MalformedXMLError(
                            f"{label}: expected a PubmedArticleSet or MedlineCitationSet document, got <{root.tag}>"
                        )
                    root_checked = True
                if parent is None or parent.getparent() is not None:
                    continue  # a MedlineCitation inside a PubmedArticle: handled with its record
                tag = elem.tag
                try:
                    if tag == "PubmedArticle":
                        item: Article | Deletion = Article(_article_row(elem, source, stamp))
                    elif tag == "MedlineCitation":
                        item = Article(_citation_row(elem, source, stamp))
                    elif tag == "PubmedBookArticle":
                        item = Article(_book_row(elem, source, stamp))
                    else:
                        item = Deletion(_deleted_pmids(elem))
                except (ValueError, RecursionError) as exc:
                    raise MalformedXMLError(f"{label}: bad <{tag}> record at line {elem.sourceline}: {exc}") from None
                elem.clear(keep_tail=False)
                while elem.getprevious() is not None:
                    del parent[0]
                yield item
            root = events.root
        except etree.XMLSyntaxError as exc:
            where = "" if "line" in (exc.msg or "") else _location(exc)
            raise MalformedXMLError(f"{label}: malformed or truncated XML{where}: {exc.msg}") from None
        except (EOFError, OSError, gzip.BadGzipFile) as exc:
            raise MalformedXMLError(f"{label}: truncated or corrupt compressed data: {exc}") from None
        if root is None:
            raise MalformedXMLError(f"{label}: empty document")
        if root.tag not in _ROOTS:
            raise MalformedXMLError(
                f"{label}: expected a PubmedArticleSet or MedlineCitationSet document, got <{root.tag}>"
            )
    finally:
        for handle in to_close:
            handle.close()


def parse_efetch(body: bytes, *, source: str = "efetch", fetched_at: dt.datetime | None = None) -> EfetchResult:
    """Parse one efetch response body into article rows and deleted PMIDs.

    Raises `eutils.responses.EutilsError` for an error document sent with HTTP
    200, and `MalformedXMLError` for a truncated or malformed body. An empty
    ``<PubmedArticleSet/>`` (what efetch answers for unknown PMIDs) gives no articles.
    """
    check_error_body(body)
    if not body.strip():
        raise MalformedXMLError("efetch response: empty body")
    result = EfetchResult()
    for item in iter_pubmed_records(io.BytesIO(body), source=source, fetched_at=fetched_at, name="efetch response"):
        if isinstance(item, Article):
            result.articles.append(item.row)
        else:
            result.deleted.extend(item.pmids)
    return result
