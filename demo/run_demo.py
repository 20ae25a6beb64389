"""The offline end-to-end demo: `pipeline run` on a bundled PubMedQA sample.

It writes the sample's questions and their abstracts (as PubMed XML) into the output
folder, starts a local E-utilities server on 127.0.0.1 serving those abstracts at NCBI's
rate without a key, and runs ``pipeline run --pubmedqa ... --eutils-url <server>`` with
that folder as the work folder: crawl, index, splits, fit, eval (see docs/pipeline.md).
Run it again and the finished steps are skipped; it ends by printing where the run
report is.

Usage: python demo/run_demo.py [--out data/demo] [--limit N] [--max-steps N] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.pubmedqa_xml import build  # noqa: E402
from devtools.local_eutils import LocalEutils, load_records  # noqa: E402
from store.atomic import atomic_write_bytes  # noqa: E402

RUN_NAME = "demo"


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.is_file() or path.read_bytes() != data:
        atomic_write_bytes(path, data)


def run(out: Path, sample: Path, limit: int | None, max_steps: int | None, fresh: bool = False) -> Path:
    """Prepare the demo inputs in ``out`` and run the pipeline there; returns the report path."""
    records = json.loads(sample.read_text(encoding="utf-8"))
    if limit is not None:
        records = dict(list(records.items())[:limit])
    if fresh and out.exists():
        shutil.rmtree(out)
    questions = out / "pubmedqa_questions.json"
    xml = out / "server" / "pubmedqa_sample.xml"
    _write_if_changed(questions, json.dumps(records, ensure_ascii=False).encode("utf-8"))
    _write_if_changed(xml, build(records))
    with LocalEutils(load_records([xml]), rate_limit=3) as server:
        print(f"local E-utilities server at {server.url} (3 requests/second, like NCBI without a key)", flush=True)
        argv = [sys.executable, "-m", "pipeline", "run", "--pubmedqa", str(questions), "--work", str(out)]
        argv += ["--eutils-url", server.url, "--rate", "3", "--seed", "13", "--run-name", RUN_NAME]
        if max_steps is not None:
            argv += ["--max-steps", str(max_steps)]
        code = subprocess.run(argv, cwd=ROOT, check=False).returncode
    if code != 0:
        raise SystemExit(f"demo: pipeline run failed with exit code {code}")
    report = out / "runs" / RUN_NAME / "report.html"
    print(f"\ndemo finished: report at {report}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "demo", help="demo work folder")
    parser.add_argument("--sample", type=Path, default=ROOT / "demo" / "pubmedqa_sample.json")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N questions")
    parser.add_argument("--max-steps", type=int, default=None, help="cap training steps")
    parser.add_argument("--fresh", action="store_true", help="delete the work folder first instead of resuming")
    args = parser.parse_args(argv)
    run(args.out.resolve(), args.sample, args.limit, args.max_steps, args.fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
