"""Error bodies inside HTTP 200 and esearch answers, on real E-utilities output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eutils.responses import EutilsError, check_error_body, parse_esearch

DATA = Path(__file__).resolve().parents[1] / "data" / "pubmed"


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.mark.parametrize(
    ("body", "quoted"),
    [
        (b"<ERROR>Empty id list - nothing todo</ERROR>", "Empty id list"),
        (
            b'<?xml version="1.0" ?>\n<eFetchResult>\n\t<ERROR>Cannot retrieve</ERROR>\n</eFetchResult>',
            "Cannot retrieve",
        ),
        (b'{"error":"API rate limit exceeded","count":"11"}', "API rate limit exceeded"),
        (b'{"header":{},"esearchresult":{"ERROR":"Invalid query"}}', "Invalid query"),
        (read("biopython/epost2.xml"), "Invalid db name specified: nothing"),
        (read("biopython/epost3.xml"), "Empty ID list; Nothing to store"),
        (b"<eSearchResult><ERROR>Search Backend failed</ERROR></eSearchResult>", "Search Backend failed"),
        (b"<eSearchResult><ErrorList><FieldNotFound>badfield</FieldNotFound></ErrorList></eSearchResult>", "badfield"),
        (
            b"<eSearchResult><Count>0</Count><IdList/><ErrorList><FieldNotFound>zz</FieldNotFound></ErrorList>"
            b"</eSearchResult>",
            "FieldNotFound: zz",
        ),
    ],
)
def test_error_bodies_detected(body: bytes, quoted: str) -> None:
    with pytest.raises(EutilsError, match=quoted):
        check_error_body(body)


@pytest.mark.parametrize(
    "name",
    [
        "biopython/pubmed1.xml",
        "biopython/esearch1.xml",
        "biopython/esearch8.xml",
        "biopython/epost1.xml",
        "metapub/37909814.xml",
        "tipplerow_pubmed/pubmed_sample.xml",
    ],
)
def test_good_bodies_pass(name: str) -> None:
    check_error_body(read(name))


def test_truncated_record_body_is_left_to_the_parser() -> None:
    body = read("biopython/pubmed2.xml")
    check_error_body(body[:300])


def test_esearch_plain() -> None:
    result = parse_esearch(read("biopython/esearch1.xml"))
    assert (result.count, result.retstart, result.retmax) == (63, 0, 20)
    assert len(result.ids) == 20 and all(isinstance(i, int) for i in result.ids)
    assert result.webenv is None and result.query_key is None


def test_esearch_history() -> None:
    result = parse_esearch(read("biopython/esearch2.xml"))
    assert (result.count, result.retmax) == (42249, 100)
    assert result.query_key == "1"
    assert result.webenv is not None and result.webenv.startswith("MCID_")
    assert result.ids[0] == 41297076 and len(result.ids) == 100


def test_esearch_retstart() -> None:
    result = parse_esearch(read("biopython/esearch3.xml"))
    assert (result.count, result.retstart, result.retmax) == (2651, 6, 6)
    assert result.ids == [11121077, 11121076, 11121075, 11121074, 11121073, 11121072]


def test_esearch_translation_stack() -> None:
    result = parse_esearch(read("biopython/esearch5.xml"))
    assert result.count == 5 and len(result.ids) == 5


def test_esearch_phrase_not_found_is_an_empty_result() -> None:
    result = parse_esearch(read("biopython/esearch8.xml"))
    assert result.count == 0 and result.ids == []
    assert "PhraseNotFound: abcXYZ" in result.warnings
    assert "OutputMessage: No items found." in result.warnings


def test_esearch_from_recorded_exchange() -> None:
    cassette = read("biocommons_eutils/test_esearchresult").decode()
    start = cassette.index("<eSearchResult>")
    end = cassette.index("</eSearchResult>") + len("</eSearchResult>")
    body = cassette[start:end].replace("\n      ", "").encode()
    result = parse_esearch(body)
    assert result.count == 34 and result.query_key == "1" and result.webenv


def test_esearch_json() -> None:
    body = json.dumps(
        {"esearchresult": {"count": "3", "retmax": "3", "retstart": "0", "idlist": ["1", "2", "3"], "webenv": "W"}}
    ).encode()
    result = parse_esearch(body)
    assert result.ids == [1, 2, 3] and result.count == 3 and result.webenv == "W"


def test_esearch_rejects_other_documents() -> None:
    with pytest.raises(EutilsError, match="eSearchResult"):
        parse_esearch(read("biopython/epost1.xml"))
    with pytest.raises(EutilsError, match="unparseable"):
        parse_esearch(b"<eSearchResult><Count>3</Count><IdList><Id>1</Id>")
