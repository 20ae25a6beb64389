"""The README's demo, end to end on a reduced sample: every stage's outputs, the report page
as a browser renders it (headless Chromium: plots present, no console errors), and a second
run that skips every finished step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from store.reader import read_articles
from tests.browser import open_page

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "demo" / "pubmedqa_sample.json"
LIMIT = 40


def test_demo_pipeline_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    argv = [sys.executable, "demo/run_demo.py", "--out", str(out), "--limit", str(LIMIT), "--max-steps", "6"]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = out / "runs" / "demo" / "report.html"
    assert f"demo finished: report at {report}" in result.stdout
    steps = ("crawl", "index", "splits", "fit", "eval")
    assert all(f"[{i}/5] {name}: done in " in result.stdout for i, name in enumerate(steps, start=1))

    # crawl -> store: exactly the sample's articles, with their abstracts
    sample = json.loads(SAMPLE.read_text())
    expected = [int(pmid) for pmid in list(sample)[:LIMIT]]
    articles = read_articles(out / "store", columns=["abstract"])
    assert sorted(articles.column("pmid").to_pylist()) == sorted(expected)
    assert all(text for text in articles.column("abstract").to_pylist())

    # index: the manifest is published and covers every article
    manifest = json.loads((out / "index" / "manifest.json").read_text())
    assert manifest["dim"] == 384 and manifest["n_articles"] == LIMIT
    id_tables = [pq.read_table(out / "index" / shard["ids_file"]) for shard in manifest["shards"]]
    indexed = {pmid for table in id_tables for pmid in table.column("pmid").to_pylist()}
    assert indexed == set(expected)

    # splits: no question in two splits
    ids = {
        name: set(pq.read_table(out / "splits" / f"{name}.parquet").column("question_id").to_pylist())
        for name in ("train", "valid", "test")
    }
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["valid"] and not ids["valid"] & ids["test"]
    assert ids["train"] | ids["valid"] | ids["test"] == {str(p) for p in expected}

    # run: metrics beside three baselines, plots, report
    run = out / "runs" / "demo"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["questions"] == len(ids["test"])
    assert 0.0 <= metrics["model"]["macro_f1"] <= 1.0
    baselines = {name.split(" (")[0] for name in metrics["baselines"]}
    assert baselines == {"all-yes", "nearest-neighbour", "TF-IDF classifier"}
    plots = ["confusion_matrix.png", "learning_curves.png", "view_scores.png"]
    for name in plots:
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    visit = open_page(report.as_uri(), tmp_path / "report.png")
    assert visit.errors == []
    assert visit.title == "Run report: demo"
    assert sorted(img["src"] for img in visit.images) == sorted(plots)
    assert all(img["complete"] and img["width"] > 100 for img in visit.images), visit.images
    assert (tmp_path / "report.png").stat().st_size > 10_000

    # a second run finds every step finished and leaves the outputs alone
    stamp = report.stat().st_mtime_ns
    again = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert again.stdout.count(", skipped") == 5 and "5 steps, 0 run, 5 already finished" in again.stdout
    assert report.stat().st_mtime_ns == stamp
