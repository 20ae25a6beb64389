"""Question loaders: BioASQ and PubMedQA parsing, and malformed files rejected with the field named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.conftest import synthetic_questions
from trainer.questions import QuestionFileError, load_bioasq, load_pubmedqa, parse_bioasq, parse_pubmedqa


def test_bioasq_yesno_questions_parsed(bioasq_file: Path) -> None:
    questions = load_bioasq(bioasq_file)
    assert len(questions) == 20
    q = questions[0]
    assert (q.id, q.answer, q.documents) == ("q000", "no", (900000, 900001))
    assert q.snippets[0].pmid == 900000 and "aspirin" in q.snippets[0].text


def test_other_question_types_skipped() -> None:
    data = synthetic_questions(3, 1)
    data["questions"][1]["type"] = "factoid"
    assert [q.id for q in parse_bioasq(data)] == ["q000", "q002"]


def test_list_form_exact_answer_accepted() -> None:
    data = synthetic_questions(2, 1)
    data["questions"][1]["exact_answer"] = ["Yes"]
    assert parse_bioasq(data)[1].answer == "yes"


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda q: q.pop("exact_answer"), "question #1 (id q001): field 'exact_answer'"),
        (lambda q: q.update(exact_answer="perhaps"), "field 'exact_answer'"),
        (lambda q: q.update(body=""), "question #1 (id q001): field 'body'"),
        (lambda q: q.update(documents=["http://example.org/x"]), "field 'documents[0]'"),
        (lambda q: q["snippets"][1].pop("text"), "field 'snippets[1].text'"),
        (lambda q: q.update(snippets="none"), "field 'snippets'"),
        (lambda q: q.update(id=""), "question #1: field 'id'"),
    ],
)
def test_malformed_bioasq_names_question_and_field(mutate, needle: str) -> None:  # type: ignore[no-untyped-def]
    data = synthetic_questions(3, 1)
    mutate(data["questions"][1])
    with pytest.raises(QuestionFileError) as info:
        parse_bioasq(data, "f.json")
    assert needle in str(info.value)
    assert str(info.value).startswith("f.json: ")


def test_duplicate_id_rejected() -> None:
    data = synthetic_questions(3, 1)
    data["questions"][2]["id"] = "q000"
    with pytest.raises(QuestionFileError, match="question #2 .*repeats"):
        parse_bioasq(data)


def test_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(QuestionFileError, match="bad.json: not valid JSON"):
        load_bioasq(bad)
    with pytest.raises(QuestionFileError, match="file not found"):
        load_bioasq(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[]", encoding="utf-8")
    with pytest.raises(QuestionFileError, match='"questions" list'):
        load_bioasq(tmp_path / "list.json")


def _pqa() -> dict[str, object]:
    return {
        "111": {"QUESTION": "Is A linked to B?", "CONTEXTS": ["A rises with B.", "B falls."], "final_decision": "yes"},
        "222": {"QUESTION": "Is C linked to D?", "CONTEXTS": ["No link."], "final_decision": "no"},
        "333": {"QUESTION": "Is E linked to F?", "CONTEXTS": ["Unclear."], "final_decision": "maybe"},
    }


def test_pubmedqa_parsed_and_maybe_dropped(tmp_path: Path) -> None:
    path = tmp_path / "pqa.json"
    path.write_text(json.dumps(_pqa()), encoding="utf-8")
    questions = load_pubmedqa(path)
    assert [(q.id, q.answer, q.documents, len(q.snippets)) for q in questions] == [
        ("111", "yes", (111,), 2),
        ("222", "no", (222,), 1),
    ]
    assert len(load_pubmedqa(path, keep_maybe=True)) == 3


def test_pubmedqa_malformed_named() -> None:
    data = _pqa()
    data["222"] = {"QUESTION": "Is C linked to D?", "CONTEXTS": ["x"], "final_decision": "unsure"}
    with pytest.raises(QuestionFileError, match=r"question #1 \(id 222\): field 'final_decision'"):
        parse_pubmedqa(data)
    data = _pqa()
    data["111"] = {"QUESTION": "Q?", "CONTEXTS": [], "final_decision": "yes"}
    with pytest.raises(QuestionFileError, match="field 'CONTEXTS'"):
        parse_pubmedqa(data)


BIOASQ_2024 = Path(__file__).resolve().parents[1] / "data" / "bioasq" / "yesno-2024.json"


def _old_site_copy(out: Path) -> Path:
    text = BIOASQ_2024.read_text(encoding="utf-8")
    text = text.replace('"https://pubmed.ncbi.nlm.nih.gov/', '"http://www.ncbi.nlm.nih.gov/pubmed/').replace('/"', '"')
    out.write_text(text, encoding="utf-8")
    return out


def test_bioasq_2024_file_loads_with_new_and_old_site_urls(tmp_path: Path) -> None:
    questions = load_bioasq(BIOASQ_2024)
    assert len(questions) == 12 and {q.answer for q in questions} == {"yes", "no"}
    assert questions[0].documents == (29768149, 31687927)
    assert [s.pmid for s in questions[0].snippets] == [29768149, 31687927]
    assert questions[0].ideal_answer.startswith("Yes. ")
    assert load_bioasq(_old_site_copy(tmp_path / "old.json")) == questions


def test_snippet_without_document_is_kept_without_pmid() -> None:
    data = synthetic_questions(2, 1)
    del data["questions"][1]["snippets"][0]["document"]
    snippets = parse_bioasq(data)[1].snippets
    assert snippets[0].pmid is None and snippets[1].pmid == 900003


def test_trainer_splits_takes_the_2024_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from trainer.cli import app
    from trainer.splits import read_split

    monkeypatch.chdir(tmp_path)
    for name, path in (("new", BIOASQ_2024), ("old", _old_site_copy(tmp_path / "old.json"))):
        out = tmp_path / name
        result = CliRunner().invoke(app, ["splits", "--bioasq", str(path), "--out", str(out), "--index", "none-here"])
        assert result.exit_code == 0, result.output
        views = [v for split in ("train", "valid", "test") for v in read_split(out, split)]
        assert {v.question_id for v in views} == {q.id for q in load_bioasq(BIOASQ_2024)}


def test_trainer_eval_takes_the_2024_file(tiny_run: tuple[Any, Any], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from trainer.cli import app

    cfg, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(cfg.out, run)
    result = CliRunner().invoke(app, ["eval", "--run", str(run), "--bioasq", str(BIOASQ_2024)])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.json").read_text())["questions"] == 12
