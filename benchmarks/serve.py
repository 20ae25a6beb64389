"""Search and serving benchmark: opening an index, `indexer serve` throughput, CLI start-up.

Each part prints a ratio against a named peer measured in the same run:

1. open: synthetic shards of N vectors (default 1M and 5M; the ids Parquet holds a
   ~200-character text per vector) opened by the previous open path (read and hash
   every shard, deserialise, merge IVF shards in memory, load every id and text) and by
   `indexer.search.open_index` (memory-mapped), each in a fresh process. Targets: RSS
   added by the open at most 10% of the vectors' size on disk, and open time under 2 s,
   whatever N. Each is measured warm (files just written: their page cache holds large
   folios, and a fault maps a whole folio) and cold (evicted first, as after a restart),
   and the RSS after a first query is shown split into private and file-backed pages.
2. serve: queries/s and p50/p99 latency of `indexer serve` (the packaged
   all-MiniLM-L6-v2 model on CPU) at 1, 8 and 32 concurrent clients sending one query
   per request, against the same queries through `open_index` in one process (one per
   call, and all in one call). Target: at 32 clients at least 3x the single-client rate.
3. cli: wall time of one `indexer search` query that loads the model against the same
   query with ``--server``. Target: at most 1/4.

Usage: python benchmarks/serve.py [--data /tmp/bench-serve] [--sizes 1000000,5000000] [--dim 128]
                                  [--skip open|serve|cli] [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARD_PMIDS = 250_000
CHUNKS_PER_ARTICLE = 2
WORDS = [
    "protein",
    "expression",
    "patients",
    "cohort",
    "randomized",
    "trial",
    "tumour",
    "cells",
    "mice",
    "receptor",
    "signalling",
    "pathway",
    "clinical",
    "outcome",
    "mortality",
    "risk",
    "factor",
    "gene",
    "variant",
    "association",
    "inflammation",
    "therapy",
    "dose",
    "response",
]
QUESTIONS = [
    "Is BRCA1 associated with breast cancer risk?",
    "Does metformin reduce mortality in type 2 diabetes?",
    "Are statins effective for primary prevention of stroke?",
    "Is vitamin D supplementation linked to fewer fractures?",
    "Does aspirin lower the risk of colorectal cancer?",
    "Is obesity a risk factor for severe influenza?",
    "Do beta blockers improve survival after myocardial infarction?",
    "Is the APOE4 allele associated with Alzheimer disease?",
]


def rss_bytes() -> int:
    return rss_split()["VmRSS"]


def rss_split() -> dict[str, int]:
    """VmRSS and its private (RssAnon) and file-backed (RssFile: mapped page cache) parts, in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(line.split()[1]) * 1024
    return out


def evict(folder: Path) -> None:
    """Drop an index's files from the page cache, as after a restart: the next open reads the disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def texts_for(ids: np.ndarray) -> list[str]:
    rng = np.random.default_rng(int(ids[0]) & 0xFFFF)
    picks = rng.integers(0, len(WORDS), size=(len(ids), 24))
    return [f"chunk {i}: " + " ".join(WORDS[w] for w in row) for i, row in zip(ids.tolist(), picks, strict=True)]


def make_index(folder: Path, n_vectors: int, dim: int, factory: str, model: str) -> float:
    """A published index of ``n_vectors`` random unit vectors in shards of `SHARD_PMIDS` PMIDs; returns GB on disk."""
    import faiss
    import pyarrow as pa

    from indexer.factory import new_index, quantizer_fingerprint
    from indexer.manifest import Manifest, write_manifest
    from indexer.shards import IDS_SCHEMA, write_shard

    rng = np.random.default_rng(0)
    sample = rng.standard_normal((min(50_000, n_vectors), dim)).astype(np.float32)
    sample /= np.linalg.norm(sample, axis=1, keepdims=True)
    trained = new_index(factory, dim)
    trained.train(sample)
    entries = []
    per_shard = SHARD_PMIDS * CHUNKS_PER_ARTICLE
    first_pmid = 10_000_000
    for number, start in enumerate(range(0, n_vectors, per_shard)):
        count = min(per_shard, n_vectors - start)
        pmids = first_pmid + number * SHARD_PMIDS + np.arange(count) // CHUNKS_PER_ARTICLE
        chunks = np.arange(count) % CHUNKS_PER_ARTICLE
        ids = (pmids << 8) | chunks
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index = faiss.clone_index(trained)
        index.add_with_ids(vectors, ids)
        del vectors
        texts = texts_for(ids)
        table = pa.table(
            {
                "id": ids,
                "pmid": pmids,
                "chunk": chunks.astype(np.int16),
                "start": np.zeros(count, np.int32),
                "end": np.array([len(t) for t in texts], np.int32),
                "doc_hash": ["0" * 16] * count,
                "key": [str(i) for i in ids.tolist()],
                "text": texts,
            },
            schema=IDS_SCHEMA,
        )
        shard_number = int(pmids[0]) // SHARD_PMIDS
        entries.append(write_shard(folder, shard_number, f"{number:012x}", index, table))
        del index, table, texts
    manifest = Manifest(
        model=model,
        dim=dim,
        chunker="synthetic",
        faiss_version=str(faiss.__version__),
        factory=factory,
        factory_auto=False,
        shard_size=SHARD_PMIDS,
        shards=entries,
        nprobe=16,
        quantizer_sha256=quantizer_fingerprint(trained),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    write_manifest(folder, manifest)
    return sum((folder / e.index_file).stat().st_size for e in entries) / 1e9


def legacy_open(folder: Path) -> Any:
    """The open path before memory-mapping: hash and load every shard, merge IVF, load all ids and texts."""
    import hashlib

    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    from indexer.factory import is_plain_ivf
    from indexer.manifest import read_manifest
    from indexer.shards import merge_ivf

    manifest = read_manifest(folder)
    assert manifest is not None
    indexes = []
    for entry in sorted(manifest.shards, key=lambda e: e.number):
        data = (folder / entry.index_file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry.index_sha256
        indexes.append(faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8)))
        del data
    if len(indexes) > 1 and all(is_plain_ivf(i) for i in indexes):
        indexes = [merge_ivf(indexes)]
    tables = [pq.read_table(folder / e.ids_file) for e in manifest.shards]
    ids_table = pa.concat_tables(tables)
    ids = ids_table.column("id").to_numpy()
    order = np.argsort(ids, kind="stable")
    return indexes, ids_table, ids[order]


def open_child(mode: str, folder: str) -> None:
    """Run in a fresh process: open one way, print seconds and RSS (after open, after one query) as JSON."""
    import faiss  # noqa: F401  (imports are not part of the open)
    import pandas  # noqa: F401  (pyarrow imports it on first use: a fixed cost of the process, whatever N)
    import pyarrow.parquet  # noqa: F401

    import indexer.search

    before = rss_split()
    started = time.perf_counter()
    if mode == "old":
        opened = legacy_open(Path(folder))
        seconds = time.perf_counter() - started
        after_open = after_query = rss_split()
    else:
        opened = indexer.search.open_index(folder)
        seconds = time.perf_counter() - started
        after_open = rss_split()
        vec = np.zeros((1, opened.manifest.dim), np.float32)
        vec[0, 0] = 1
        opened.search_vectors(vec, 10)  # one query with its texts, so the open is proven usable
        after_query = rss_split()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    added = {k: after_open[k] - before[k] for k in before}
    query = {k: after_query[k] - before[k] for k in before}
    print(json.dumps({"seconds": seconds, "open": added, "query": query, "peak": peak}))
    del opened


def run_open(data: Path, sizes: list[int], dim: int) -> None:
    from indexer.factory import auto_factory

    print(
        f"open (dim {dim}: small enough that the old path fits in a few GiB; auto factory per N; shards of "
        f"{SHARD_PMIDS * CHUNKS_PER_ARTICLE:,} vectors)\n"
        "  cache: warm = the files were just written (their page cache holds large folios, and a fault maps a whole "
        "folio), cold = evicted first, as after a restart.\n"
        "  RSS added by the open itself, then after a first query with its texts, as total = private + file-backed "
        "(mapped page cache, shared and reclaimable)"
    )
    print(
        f"  {'N':>10} {'factory':<22} {'vec GB':>6} {'path':<4} {'cache':<5} {'open s':>7} {'open MB':>8} "
        f"{'% vec':>6} {'+query MB (priv+file)':>22} {'% vec':>6}"
    )
    for n in sizes:
        folder = data / f"open-{n}"
        shutil.rmtree(folder, ignore_errors=True)
        # the auto tier for N, with 1024 lists so that k-means stays short on a small machine
        factory = re.sub(r"^IVF\d+", "IVF1024", auto_factory(n, dim, 50_000, 1_000_000, 20_000_000, 5_000_000))
        t0 = time.perf_counter()
        gb = make_index(folder, n, dim, factory, "synthetic")
        print(f"  (built {n:,} vectors in {time.perf_counter() - t0:.0f}s)", flush=True)
        rows = {}
        for mode, cache in (("old", "warm"), ("new", "warm"), ("old", "cold"), ("new", "cold")):
            if cache == "cold":
                evict(folder)
            out = subprocess.run(
                [sys.executable, __file__, "_open", mode, str(folder)], capture_output=True, text=True, check=True
            )
            r = rows[mode, cache] = json.loads(out.stdout.strip().splitlines()[-1])
            o, q = r["open"], r["query"]
            print(
                f"  {n:>10,} {factory:<22} {gb:>6.2f} {mode:<4} {cache:<5} {r['seconds']:>7.2f} "
                f"{o['VmRSS'] / 1e6:>8.1f} {100 * o['VmRSS'] / (gb * 1e9):>5.1f}% "
                f"{q['VmRSS'] / 1e6:>8.1f} ({q['RssAnon'] / 1e6:.1f}+{q['RssFile'] / 1e6:.1f})"
                f"{'':>4}{100 * q['VmRSS'] / (gb * 1e9):>5.1f}%",
                flush=True,
            )
        for cache in ("warm", "cold"):
            new, old = rows["new", cache], rows["old", cache]
            share = new["open"]["VmRSS"] / (gb * 1e9)
            print(
                f"  N={n:,} {cache}: new/old open time {new['seconds'] / old['seconds']:.3f}x, RSS added "
                f"{new['open']['VmRSS'] / max(old['open']['VmRSS'], 1):.3f}x; "
                f"target RSS after open <= 10% of vectors: {100 * share:.1f}% {'met' if share <= 0.10 else 'MISSED'}; "
                f"target open < 2 s: {new['seconds']:.2f}s {'met' if new['seconds'] < 2 else 'MISSED'}"
            )
        shutil.rmtree(folder, ignore_errors=True)


def start_server(index: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "indexer", "serve", "--index", str(index), "--port", "0", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split()[-1]


def post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url + "/search", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def load(url: str, clients: int, per_client: int) -> tuple[float, float, float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(per_client):
            q = QUESTIONS[(n + i) % len(QUESTIONS)] + f" ({n}.{i})"
            t = time.perf_counter()
            post(url, {"queries": [q], "k": 10})
            with lock:
                latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return len(latencies) / wall, statistics.median(latencies), p99


def run_serve_and_cli(data: Path, skip: set[str]) -> None:
    from indexer.search import open_index

    folder = data / "serve-index"
    shutil.rmtree(folder, ignore_errors=True)
    make_index(folder, 200_000, 384, "IVF256,Flat", "sentence-transformers/all-MiniLM-L6-v2")
    proc, url = start_server(folder)
    try:
        if "serve" not in skip:
            print(
                "serve (200,000 synthetic vectors, dim 384, IVF256,Flat; all-MiniLM-L6-v2 on CPU; "
                "clients on the same 2 cores)"
            )
            index = open_index(folder, device="cpu")
            index.search(["warm up"], k=10)
            qs = [QUESTIONS[i % len(QUESTIONS)] + f" ({i})" for i in range(16)]
            t = time.perf_counter()
            for q in qs:
                index.search([q], k=10)
            one = len(qs) / (time.perf_counter() - t)
            t = time.perf_counter()
            index.search(qs * 2, k=10)
            batched = 2 * len(qs) / (time.perf_counter() - t)
            del index
            print(f"  open_index in one process: {one:.1f} q/s one query per call, {batched:.1f} q/s 32 per call")
            rates = {}
            for clients, per in ((1, 16), (8, 6), (32, 3)):
                qps, p50, p99 = load(url, clients, per)
                rates[clients] = qps
                print(
                    f"  serve, {clients:>2} clients: {qps:6.1f} q/s  p50 {1000 * p50:7.0f} ms  "
                    f"p99 {1000 * p99:7.0f} ms  "
                    f"({qps / one:.2f}x open_index one per call)",
                    flush=True,
                )
            ratio = rates[32] / rates[1]
            print(
                f"  target: 32 clients >= 3x single client; measured {ratio:.2f}x {'met' if ratio >= 3 else 'MISSED'}"
            )
        if "cli" not in skip:
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            base = [sys.executable, "-m", "indexer", "search", QUESTIONS[0], "-k", "3"]
            times = {}
            for name, extra in (("loads the model", ["--index", str(folder)]), ("--server", ["--server", url])):
                t = time.perf_counter()
                subprocess.run(base + extra, capture_output=True, check=True, env=env)
                times[name] = time.perf_counter() - t
            ratio = times["--server"] / times["loads the model"]
            print(
                f"cli: one `indexer search` query: {times['loads the model']:.2f}s loading the model, "
                f"{times['--server']:.2f}s with --server; ratio {ratio:.3f} (target <= 0.25: "
                f"{'met' if ratio <= 0.25 else 'MISSED'})"
            )
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "_open":
        open_child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/bench-serve"), help="Scratch folder (removed after).")
    parser.add_argument("--sizes", default="1000000,5000000", help="Vector counts for the open part.")
    parser.add_argument("--dim", type=int, default=128, help="Vector dimension for the open part.")
    parser.add_argument("--skip", action="append", default=[], choices=["open", "serve", "cli"])
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder.")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    try:
        if "open" not in args.skip:
            run_open(args.data, [int(s) for s in args.sizes.split(",")], args.dim)
        if not {"serve", "cli"} <= set(args.skip):
            run_serve_and_cli(args.data, set(args.skip))
    finally:
        if not args.keep:
            shutil.rmtree(args.data, ignore_errors=True)


if __name__ == "__main__":
    main()
