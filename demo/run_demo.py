"""The offline end-to-end demo: the whole pipeline on a bundled PubMedQA sample.

1. a local E-utilities server on 127.0.0.1 serves the sample's abstracts as PubMed XML;
2. ``scrapy crawl pubmed`` fetches them into the article store;
3. ``indexer rebuild`` embeds them into the FAISS index (``indexer verify`` checks it);
4. ``trainer splits`` / ``fit`` / ``eval`` split the yes/no questions by id, retrieve each
   question's chunks, fine-tune a QLoRA adapter and evaluate it beside three baselines;
5. it ends by printing where the run report is.

Usage: python demo/run_demo.py [--out data/demo] [--limit N] [--max-steps N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.pubmedqa_xml import build  # noqa: E402
from devtools.local_eutils import LocalEutils, load_records  # noqa: E402

BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else (shutil.which(name) or name)


def _step(title: str, argv: list[str]) -> None:
    print(f"\n== {title}\n$ {' '.join(argv)}", flush=True)
    started = time.monotonic()
    result = subprocess.run(argv, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"demo: step '{title}' failed with exit code {result.returncode}")
    print(f"   ({time.monotonic() - started:.1f} s)", flush=True)


def run(out: Path, sample: Path, limit: int | None, max_steps: int | None) -> Path:
    import json

    records = json.loads(sample.read_text(encoding="utf-8"))
    if limit is not None:
        records = dict(list(records.items())[:limit])
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    questions = out / "pubmedqa_questions.json"
    questions.write_text(json.dumps(records, ensure_ascii=False))
    xml = out / "server" / "pubmedqa_sample.xml"
    xml.parent.mkdir()
    xml.write_bytes(build(records))
    pmids = out / "pmids.txt"
    pmids.write_text("".join(f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/\n" for pmid in records))
    store, index, splits, run_dir = out / "pubmed", out / "index", out / "splits", out / "runs" / "demo"

    with LocalEutils(load_records([xml]), rate_limit=3) as server:
        print(f"local E-utilities server at {server.url} (3 requests/second, like NCBI without a key)")
        _step(
            "crawl",
            [
                _tool("scrapy"),
                "crawl",
                "pubmed",
                "-a",
                f"pmids={pmids}",
                "-s",
                f"PUBMED_EUTILS_URL={server.url}",
                "-s",
                f"PUBMED_STORE={store}",
                "-s",
                "PUBMED_RATE=3",
                "-s",
                "LOG_LEVEL=WARNING",
            ],
        )
    _step("store stats", [_tool("store"), "stats", str(store)])
    _step("index", [_tool("indexer"), "rebuild", "--store", str(store), "--index", str(index)])
    _step("verify index", [_tool("indexer"), "verify", "--store", str(store), "--index", str(index), "--queries", "50"])
    _step(
        "splits",
        [
            _tool("trainer"),
            "splits",
            "--pubmedqa",
            str(questions),
            "--index",
            str(index),
            "--out",
            str(splits),
            "--seed",
            "13",
        ],
    )
    fit = [_tool("trainer"), "fit", "--splits", str(splits), "--out", str(run_dir), "--seed", "13"]
    if max_steps is not None:
        fit += ["--max-steps", str(max_steps)]
    _step("fit (QLoRA)", fit)
    _step("evaluate", [_tool("trainer"), "eval", "--run", str(run_dir)])
    report = run_dir / "report.html"
    print(f"\ndemo finished: report at {report}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "demo", help="demo output folder (replaced)")
    parser.add_argument("--sample", type=Path, default=ROOT / "demo" / "pubmedqa_sample.json")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N questions")
    parser.add_argument("--max-steps", type=int, default=None, help="cap training steps")
    args = parser.parse_args(argv)
    run(args.out.resolve(), args.sample, args.limit, args.max_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
