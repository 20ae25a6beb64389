"""PubMed web page parsing, on small pages written for these tests in both site layouts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from crawler.html_page import HTMLPageError, parse_article_html
from store.schema import validate_article

MODERN = """<!DOCTYPE html>
<html lang="en"><head>
<meta name="citation_title" content="A made-up study of yes/no answers">
<meta name="citation_journal_title" content="Journal of Invented Results">
<meta name="citation_date" content="2021 Mar 4">
<meta name="citation_doi" content="10.9999/jir.2021.001">
<meta name="citation_pmid" content="12345678">
<meta name="citation_authors" content="Doe J;Müller K;Ødegård T">
<meta name="citation_language" content="eng">
</head><body>
<main>
<h1 class="heading-title">
   A made-up study of <em>yes/no</em> answers
   in Zürich</h1>
<div class="authors-list"><span class="authors-list-item"><a class="full-name">Jane Doe</a></span></div>
<div class="abstract" id="abstract">
  <div class="abstract-content selected" id="eng-abstract">
    <p><strong class="sub-title"> Background: </strong>
       Questions come with   answers.</p>
    <p><strong class="sub-title"> Results: </strong> CO<sub>2</sub> rose by 3 µg/m<sup>3</sup>.</p>
  </div>
  <div class="abstract-content" id="spa-abstract"><p>Resumen en español.</p></div>
  <p><strong class="sub-title">Keywords:</strong> not part of the abstract.</p>
</div>
<div id="mesh-terms"><ul>
 <li><button class="keyword-actions-trigger">Humans</button></li>
 <li><button class="keyword-actions-trigger">Carbon Dioxide / analysis*</button></li>
</ul></div>
</main></body></html>
"""

LEGACY = """<html><head>
<meta name="ncbi_db" content="pubmed">
<meta name="ncbi_uidlist" content="7654321">
</head><body>
<div class="ResultSet"><dl class="AbstractPlusReport">
<dt class="head"><div class="abstitle"><span class="ti"><b>1: </b>
<span title="Annals of Example Medicine."><a href="#">Ann Ex Med.</a></span> 2004 Jan-Feb;12(1):1-9.</span></div></dt>
<dd class="abstract">
  <h2>An old-style page about &#946;-blockers.</h2>
  <div class="authors"><a href="#"><b>Smith A</b></a>, <a href="#"><b>Nowak B</b></a>.</div>
  <p class="affiliation">Somewhere.</p>
  <p class="abstract">One paragraph of
     abstract text.</p>
  <p class="pmid">PMID: 7654321</p>
</dd>
<dd class="ad"><h2>Related articles</h2></dd>
</dl></div></body></html>
"""


def test_modern_layout() -> None:
    when = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    row = parse_article_html(MODERN, pmid=12345678, fetched_at=when)
    assert validate_article(row) == row
    assert row["pmid"] == 12345678 and row["source"] == "html" and row["fetched_at"] == when
    assert row["title"] == "A made-up study of yes/no answers in Zürich"
    assert row["abstract_sections"] == [
        {"label": "Background", "category": None, "text": "Questions come with answers."},
        {"label": "Results", "category": None, "text": "CO2 rose by 3 µg/m3."},
    ]
    assert row["abstract"].startswith("Background: Questions come with answers.\nResults: ")
    assert "español" not in row["abstract"] and "Keywords" not in row["abstract"]
    assert row["authors"] == ["Doe J", "Müller K", "Ødegård T"]
    assert row["journal"] == "Journal of Invented Results"
    assert (row["pub_date"], row["pub_year"]) == ("2021 Mar 4", 2021)
    assert row["doi"] == "10.9999/jir.2021.001"
    assert row["mesh_terms"] == ["Humans", "Carbon Dioxide"]
    assert row["language"] == ["eng"]


def test_modern_layout_from_bytes_without_meta_authors() -> None:
    page = MODERN.replace('<meta name="citation_authors" content="Doe J;Müller K;Ødegård T">', "")
    row = parse_article_html(page.encode("utf-8"))
    assert row["pmid"] == 12345678
    assert row["authors"] == ["Jane Doe"]


def test_legacy_layout() -> None:
    row = parse_article_html(LEGACY)
    assert validate_article(row) == row
    assert row["pmid"] == 7654321
    assert row["title"] == "An old-style page about β-blockers."
    assert row["abstract"] == "One paragraph of abstract text."
    assert row["authors"] == ["Smith A", "Nowak B"]
    assert row["journal"] == "Annals of Example Medicine"
    assert (row["pub_date"], row["pub_year"]) == ("2004 Jan-Feb", 2004)


def test_wrong_pmid_and_non_article_pages() -> None:
    with pytest.raises(HTMLPageError, match="PMID 12345678, not the requested 1"):
        parse_article_html(MODERN, pmid=1)
    with pytest.raises(HTMLPageError, match="names no PMID"):
        parse_article_html("<html><body><h2>Page not found</h2></body></html>")
    with pytest.raises(HTMLPageError, match="no article title"):
        parse_article_html('<html><head><meta name="ncbi_uidlist" content="5"></head><body></body></html>')


SAVED_LEGACY_PAGE = Path("/work/shared/fixtures/pubmed/pyscholar/pubmed.html")


@pytest.mark.skipif(not SAVED_LEGACY_PAGE.exists(), reason="saved legacy PubMed page not available here")
def test_saved_legacy_page_outside_the_repository() -> None:
    row = parse_article_html(SAVED_LEGACY_PAGE.read_bytes(), pmid=15940349)
    assert row["title"] == "Isolation and characterization of pigeon breast muscle cytosolic 5'-nucleotidase-I (cN-I)."
    assert row["authors"] == ["Tkacz-Stachowska K", "Lechward K", "Skladanowski AC"]
    assert row["abstract"].startswith("5'-Nucleotidase specific towards dCMP and AMP")
    assert (row["journal"], row["pub_year"]) == ("Acta biochimica Polonica", 2005)
