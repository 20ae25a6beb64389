"""Parses a PubMed article web page into a store row, for the rare PMID efetch cannot serve.

Two layouts are understood (beautifulsoup4 with lxml's HTML parser):

* the current pubmed.ncbi.nlm.nih.gov page: ``h1.heading-title``, the abstract in
  ``div.abstract-content.selected`` (one ``<p>`` per section, its label in
  ``strong.sub-title``), and ``meta name="citation_*"`` tags (pmid, title, journal, date,
  DOI, authors, language);
* the legacy www.ncbi.nlm.nih.gov/pubmed "AbstractPlus" page: ``meta name="ncbi_uidlist"``,
  the title in an ``<h2>``, authors in ``div.authors``, the abstract in ``p.abstract``.

Rows carry ``source="html"`` and pass `store.schema.validate_article`.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from typing import Any

from bs4 import BeautifulSoup, Tag, XMLParsedAsHTMLWarning

__all__ = ["HTMLPageError", "parse_article_html"]

_YEAR = re.compile(r"\b(\d{4})\b")
_LEGACY_CITATION = re.compile(r"(\d{4}(?: [A-Z][a-z]{2}(?:-[A-Z][a-z]{2})?)?(?: \d{1,2})?)\s*[;:.]")


class HTMLPageError(ValueError):
    """The page is not a PubMed article page this parser understands; the message says why."""


def _text(node: Tag | None) -> str | None:
    if node is None:
        return None
    text = " ".join(node.get_text().split())  # inline markup (sub, sup, em) joins without spaces
    return text or None


def _meta(soup: BeautifulSoup, name: str) -> str | None:
    tag = soup.find("meta", attrs={"name": name})
    if not isinstance(tag, Tag):
        return None
    content = tag.get("content")
    if not isinstance(content, str):
        return None
    return " ".join(content.split()) or None


def _metas(soup: BeautifulSoup, name: str) -> list[str]:
    out = []
    for tag in soup.find_all("meta", attrs={"name": name}):
        content = tag.get("content") if isinstance(tag, Tag) else None
        if isinstance(content, str) and content.strip():
            out.append(" ".join(content.split()))
    return out


def _year(text: str | None) -> int | None:
    match = _YEAR.search(text or "")
    return int(match.group(1)) if match else None


def _section_label(strong: Tag) -> str:
    return strong.get_text(" ", strip=True).rstrip(":").strip()


def _modern_abstract(soup: BeautifulSoup) -> list[dict[str, str | None]]:
    content = soup.select_one("div.abstract-content.selected") or soup.select_one("div.abstract-content")
    if content is None:
        return []
    sections: list[dict[str, str | None]] = []
    for para in content.find_all("p"):
        label = None
        strong = para.find("strong", class_="sub-title")
        if isinstance(strong, Tag):
            label = _section_label(strong) or None
            strong.extract()
        text = _text(para)
        if text:
            sections.append({"label": label, "category": None, "text": text})
    return sections


def _split_authors(value: str) -> list[str]:
    return [name.strip() for name in re.split(r"[;,]", value) if name.strip()]


def _modern(soup: BeautifulSoup) -> dict[str, Any]:
    pmid_text = _meta(soup, "citation_pmid") or _meta(soup, "uid") or _text(soup.select_one("strong.current-id"))
    title = _text(soup.select_one("h1.heading-title")) or _meta(soup, "citation_title")
    authors_meta = _meta(soup, "citation_authors")
    if authors_meta:
        authors = _split_authors(authors_meta)
    else:
        authors = _metas(soup, "citation_author") or [
            t for t in (_text(a) for a in soup.select("div.authors-list a.full-name")) if t
        ]
    pub_date = _meta(soup, "citation_date") or _meta(soup, "citation_publication_date")
    mesh = []
    for button in soup.select("div#mesh-terms button.keyword-actions-trigger"):
        term = _text(button)
        if term:
            mesh.append(term.split("/")[0].rstrip("*").strip())
    return {
        "pmid_text": pmid_text,
        "title": title,
        "abstract_sections": _modern_abstract(soup),
        "journal": _meta(soup, "citation_journal_title"),
        "pub_date": pub_date,
        "authors": authors,
        "mesh_terms": mesh,
        "language": _metas(soup, "citation_language"),
        "doi": _meta(soup, "citation_doi"),
    }


def _legacy(soup: BeautifulSoup) -> dict[str, Any]:
    uidlist = _meta(soup, "ncbi_uidlist") or ""
    abstract_p = soup.select_one("p.abstract")
    block = abstract_p.parent if abstract_p is not None else soup.select_one("dd.abstract") or soup.body or soup
    title = _text(block.find("h2")) if isinstance(block, Tag) else None
    authors: list[str] = []
    author_div = block.select_one("div.authors") if isinstance(block, Tag) else None
    if author_div is not None:
        authors = [t for t in (_text(a) for a in author_div.find_all("a")) if t]
    sections: list[dict[str, str | None]] = []
    for para in soup.select("p.abstract"):
        text = _text(para)
        if text:
            sections.append({"label": None, "category": None, "text": text})
    journal = pub_date = None
    citation = soup.select_one("div.abstitle span.ti") or soup.select_one("div.cit")
    if citation is not None:
        span = citation.find("span", attrs={"title": True})
        if isinstance(span, Tag):
            raw_title = span.get("title")
            journal = raw_title.strip().rstrip(".") if isinstance(raw_title, str) else None
            span.extract()
        match = _LEGACY_CITATION.search(citation.get_text(" ", strip=True))
        pub_date = match.group(1) if match else None
    return {
        "pmid_text": uidlist.split(",")[0].strip() or None,
        "title": title,
        "abstract_sections": sections,
        "journal": journal,
        "pub_date": pub_date,
        "authors": authors,
        "mesh_terms": [],
        "language": [],
        "doi": None,
    }


def parse_article_html(
    html: str | bytes, *, pmid: int | None = None, fetched_at: dt.datetime | None = None
) -> dict[str, Any]:
    """A store article row (``source="html"``) from one PubMed article page.

    ``pmid`` is the PMID the page was requested for; when given, a page about another
    PMID is an error. Raises `HTMLPageError` when the page has no PMID or no title.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)  # legacy pages are XHTML
        soup = BeautifulSoup(html, "lxml")
    modern = soup.select_one("h1.heading-title") is not None or _meta(soup, "citation_pmid") is not None
    fields = _modern(soup) if modern else _legacy(soup)
    pmid_text = fields.pop("pmid_text")
    page_pmid = int(pmid_text) if pmid_text and pmid_text.isdigit() else None
    if page_pmid is None:
        if pmid is None:
            raise HTMLPageError("page names no PMID (no citation_pmid / ncbi_uidlist meta tag)")
        page_pmid = pmid
    if pmid is not None and page_pmid != pmid:
        raise HTMLPageError(f"page is about PMID {page_pmid}, not the requested {pmid}")
    if not fields["title"]:
        raise HTMLPageError(f"PMID {page_pmid}: page has no article title")
    sections = fields["abstract_sections"]
    abstract = "\n".join(f"{s['label']}: {s['text']}" if s["label"] else str(s["text"]) for s in sections) or None
    return {
        "pmid": page_pmid,
        "version": 1,
        "title": fields["title"],
        "vernacular_title": None,
        "abstract": abstract,
        "abstract_sections": sections,
        "journal": fields["journal"],
        "pub_year": _year(fields["pub_date"]),
        "pub_date": fields["pub_date"],
        "authors": fields["authors"],
        "mesh_terms": fields["mesh_terms"],
        "publication_types": [],
        "language": fields["language"],
        "doi": fields["doi"],
        "source": "html",
        "fetched_at": fetched_at or dt.datetime.now(dt.UTC),
    }
