"""Benchmark: fetch 13,025 PMIDs through a rate-limited, faulty local E-utilities server.

The server (devtools.local_eutils) enforces 3 requests/second (429 above it) and injects
faults into 5% of efetch requests (500, truncated XML, error inside HTTP 200, short
batch). Three clients do the same job in the same run:

- ``scrapy crawl pubmed`` (this project; a subprocess, start-up included): wall time as a
  ratio to the floor ceil(N / batch) / rate, 429s received, records lost and duplicated
  (read back from the store);
- the common way: asyncio + aiohttp, one efetch per PMID, aiolimiter at 3/s;
- Biopython's ``Entrez.efetch`` one PMID at a time, as its tutorial loops do.

The two peers run on a time budget; their full-job time is extrapolated from the
PMIDs/second they achieved. The Scrapy crawl runs under each of ``--conditions``:
``idle`` (target: process wall at most 1.15 x floor), ``jitter`` (every request waits a
random 0-``--jitter`` s before the server reads it) and ``load`` (that jitter plus a CPU
hog of ``--hogs`` busy-loop processes beside the crawl; target at most 1.30 x floor);
zero 429s in every one. Usage::

    python benchmarks/crawl.py [--count 13025] [--budget 60] [--bioasq training12b.json]
                               [--conditions idle,jitter,load] [--jitter 0.03] [--hogs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devtools.local_eutils import LocalEutils, load_records, synthetic_pmids  # noqa: E402
from eutils.inputs import bioasq_pmids  # noqa: E402
from eutils.pubmed_xml import parse_efetch  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from cpu_hog import cpu_hog  # noqa: E402

RATE = 3
BATCH = 200
FAULT_KINDS = ("500", "truncated", "error_xml", "error_json", "short")


def choose_pmids(count: int, bioasq: Path | None) -> list[int]:
    pmids = bioasq_pmids(bioasq)[:count] if bioasq else []
    if len(pmids) < count:
        have = set(pmids)
        pmids += [p for p in synthetic_pmids(count + len(pmids), seed=13025) if p not in have][: count - len(pmids)]
    return pmids


def store_counts(store: Path, wanted: list[int]) -> tuple[int, int, int]:
    """(rows, lost, duplicated) from every published article part."""
    rows: list[int] = []
    for part in sorted((store / "articles").glob("part-*.parquet")):
        rows += pq.read_table(part, columns=["pmid"]).column("pmid").to_pylist()
    unique = set(rows)
    return len(rows), len(set(wanted) - unique), len(rows) - len(unique)


def run_scrapy(server: LocalEutils, pmids: list[int], work: Path) -> dict[str, Any]:
    ids = work / "ids.txt"
    ids.write_text("".join(f"{p}\n" for p in pmids))
    store = work / "store"
    command = [
        sys.executable,
        "-m",
        "scrapy",
        "crawl",
        "pubmed",
        "-a",
        f"pmids={ids}",
        "-s",
        f"PUBMED_EUTILS_URL={server.url}",
        "-s",
        f"PUBMED_STORE={store}",
        "-s",
        f"PUBMED_RATE={RATE}",
        "-s",
        f"PUBMED_BATCH_SIZE={BATCH}",
        "-s",
        "LOG_LEVEL=INFO",
    ]
    server.reset()
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"scrapy crawl failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    rows, lost, duplicated = store_counts(store, pmids)
    log = server.requests()
    summary = json.loads((store / "crawl-summary.json").read_text())
    return {
        "wall": wall,
        "rows": rows,
        "lost": lost,
        "duplicated": duplicated,
        "requests": len(log),
        "rate_limited": server.rate_limited,
        "received_429": sum(1 for r in log if r.status == 429),
        "faults": dict(server.faults_served),
        "retries": summary["retries"],
        "refetched": summary["refetched"],
        "crawl_seconds": float(summary["seconds"]),
        "summary_line": next((line for line in done.stderr.splitlines() if "pubmed crawl finished" in line), ""),
    }


async def common_way(server: LocalEutils, pmids: list[int], budget: float) -> dict[str, Any]:
    """One GET efetch per PMID through aiohttp, paced by aiolimiter's AsyncLimiter(3, 1)."""
    import aiohttp
    from aiolimiter import AsyncLimiter

    limiter = AsyncLimiter(RATE, 1)
    got: set[int] = set()
    counts = {"429": 0, "other_errors": 0, "requests": 0}

    async def fetch(session: aiohttp.ClientSession, pmid: int) -> None:
        async with limiter:
            counts["requests"] += 1
            try:
                async with session.get(f"{server.url}/efetch.fcgi", params={"db": "pubmed", "id": str(pmid)}) as r:
                    body = await r.read()
                    if r.status == 429:
                        counts["429"] += 1
                        return
                    r.raise_for_status()
                got.update(a["pmid"] for a in parse_efetch(body).articles)
            except Exception:  # the common way: log and move on
                counts["other_errors"] += 1

    server.reset()
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        tasks = [asyncio.create_task(fetch(session, p)) for p in pmids]
        await asyncio.wait(tasks, timeout=budget)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.monotonic() - started
    return {"elapsed": elapsed, "fetched": len(got), "rate_limited": server.rate_limited, **counts}


def biopython_way(server: LocalEutils, pmids: list[int], budget: float) -> dict[str, Any]:
    """``Entrez.efetch`` + ``Entrez.read`` per PMID; Bio.Entrez's fixed NCBI host is redirected to the server."""
    from Bio import Entrez

    real_urlopen = Entrez.urlopen
    local = server.url

    def to_local(request: urllib.request.Request, *args: Any, **kwargs: Any) -> Any:
        request.full_url = request.full_url.replace("https://eutils.ncbi.nlm.nih.gov/entrez/eutils", local)
        return real_urlopen(request, *args, **kwargs)

    Entrez.urlopen = to_local
    Entrez.email = "benchmark@example.org"
    server.reset()
    got = 0
    errors = 0
    started = time.monotonic()
    try:
        for pmid in pmids:
            if time.monotonic() - started >= budget:
                break
            try:
                handle = Entrez.efetch(db="pubmed", id=str(pmid), retmode="xml")
                record = Entrez.read(handle)
                handle.close()
                got += len(record["PubmedArticle"]) + len(record["PubmedBookArticle"])
            except Exception:
                errors += 1
    finally:
        Entrez.urlopen = real_urlopen
    elapsed = time.monotonic() - started
    log = server.requests()
    return {
        "elapsed": elapsed,
        "fetched": got,
        "errors": errors,
        "requests": len(log),
        "429": sum(1 for r in log if r.status == 429),
        "rate_limited": server.rate_limited,
    }


def extrapolate(n: int, fetched: int, elapsed: float) -> float:
    return math.inf if fetched == 0 else n * elapsed / fetched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=13_025, help="PMIDs to fetch")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds given to each peer")
    parser.add_argument("--fault-rate", type=float, default=0.05, help="share of efetch requests given a fault")
    parser.add_argument("--bioasq", type=Path, help="take PMIDs from this BioASQ JSON (topped up with synthetic ones)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-peers", action="store_true", help="run only the Scrapy crawl")
    parser.add_argument("--conditions", default="idle,jitter,load", help="comma list of idle, jitter, load")
    parser.add_argument("--jitter", type=float, default=0.03, help="server-side delay drawn from 0..S seconds")
    parser.add_argument("--hogs", type=int, default=2, help="busy-loop processes of the load condition")
    args = parser.parse_args()
    conditions = [c for c in args.conditions.split(",") if c]
    for condition in conditions:
        if condition not in ("idle", "jitter", "load"):
            parser.error(f"--conditions: unknown condition {condition!r}; choose from idle, jitter, load")

    pmids = choose_pmids(args.count, args.bioasq)
    records = load_records([REPO / "tests" / "data" / "pubmed"])
    server = LocalEutils(
        records,
        synthesize=True,
        rate_limit=RATE,
        fault_rate=args.fault_rate,
        fault_kinds=FAULT_KINDS,
        seed=args.seed,
    )
    floor = math.ceil(len(pmids) / BATCH) / RATE
    with server, tempfile.TemporaryDirectory(prefix="crawl-bench-") as tmp:
        print(
            f"job: {len(pmids)} PMIDs, server limit {RATE} req/s (429 above), "
            f"{args.fault_rate:.0%} efetch faults {'/'.join(FAULT_KINDS)}; floor ceil({len(pmids)}/{BATCH})/{RATE} "
            f"= {floor:.1f} s"
        )
        results: dict[str, dict[str, Any]] = {}
        for condition in conditions:
            server.jitter = args.jitter if condition in ("jitter", "load") else 0.0
            with cpu_hog(args.hogs if condition == "load" else 0):
                work = Path(tmp) / condition
                work.mkdir()
                s = results[condition] = run_scrapy(server, pmids, work)
            print(
                f"scrapy crawl pubmed [{condition}, jitter 0-{server.jitter * 1000:.0f} ms, "
                f"{args.hogs if condition == 'load' else 0} hogs]: crawl {s['crawl_seconds']:.1f} s = "
                f"{s['crawl_seconds'] / floor:.3f} x floor; process wall {s['wall']:.1f} s = {s['wall'] / floor:.3f} x "
                f"floor; {s['requests']} requests, 429s received {s['received_429']} (server rate limit "
                f"{s['rate_limited']}), faults served {s['faults']}, retries {s['retries']}, re-requested PMIDs "
                f"{s['refetched']}; lost {s['lost']}, duplicated {s['duplicated']} ({s['rows']} rows)"
            )
            print(f"  {s['summary_line'].split('] INFO: ', 1)[-1]}")
        server.jitter = 0.0
        ok = all(r["received_429"] == 0 and r["lost"] == 0 and r["duplicated"] == 0 for r in results.values())
        limits = {"idle": 1.15, "jitter": 1.30, "load": 1.30}
        ok = ok and all(results[c]["wall"] / floor <= limits[c] for c in results)
        print(
            "targets (process wall <= 1.15 x floor idle, <= 1.30 under jitter and load; 0 429s, 0 lost, "
            f"0 duplicated): {'met' if ok else 'NOT met'}"
        )
        s = results[conditions[0]]
        if args.skip_peers:
            return
        a = asyncio.run(common_way(server, pmids, args.budget))
        a_full = extrapolate(len(pmids), a["fetched"], a["elapsed"])
        a_rate = a["fetched"] / a["elapsed"]
        print(
            f"aiohttp+aiolimiter  : {a['fetched']} PMIDs in {a['elapsed']:.1f} s ({a_rate:.2f}/s), "
            f"{a['requests']} requests, 429s {a['429']}, other errors {a['other_errors']} (not retried); "
            f"full job ~{a_full:.0f} s = {a_full / s['wall']:.1f}x scrapy's process wall"
        )
        b = biopython_way(server, pmids, args.budget)
        b_full = extrapolate(len(pmids), b["fetched"], b["elapsed"])
        b_rate = b["fetched"] / b["elapsed"]
        print(
            f"Biopython Entrez    : {b['fetched']} PMIDs in {b['elapsed']:.1f} s ({b_rate:.2f}/s), "
            f"{b['requests']} requests, 429s {b['429']}, errors {b['errors']}; "
            f"full job ~{b_full:.0f} s = {b_full / s['wall']:.1f}x scrapy's process wall"
        )


if __name__ == "__main__":
    main()
