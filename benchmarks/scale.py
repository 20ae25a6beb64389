"""Benchmark: distributed crawl rate on Redis, and the Ray index engine's embedding throughput.

Part 1, crawl: request rate of 1, 2 and 4 crawl workers sharing one Redis rate limit.

A local E-utilities server (devtools.local_eutils) allows ``--rate`` requests/second
(429 above it). For each worker count, that many ``scrapy crawl pubmed -s
PUBMED_REDIS_URL=...`` processes share one job. The rate achieved is measured at the
server, twice: over the whole job (requests between the first and the last arrival;
process start-up before the first arrival is excluded) and "all up", over the part of
the job in which every worker crawls (from the first arrival of the worker that arrived
last, each worker told apart by its own User-Agent, to the last arrival: the first
second or so, while later workers still boot Scrapy on the same cores, is left out).
Both are printed as ratios to the allowed rate, the second also to the named peer
measured in the same run: one ordinary single-process crawl (in-process
`LocalRateLimiter`, no Redis). Also printed: the most requests the server saw in any
1-second window (never above the rate) and the 429s received (targets: none, and every
distributed "all up" rate at least 90% of the allowed one). ``--jitter S`` delays every
request a random 0-S seconds before the server reads it, ``--hogs N`` runs N busy-loop
processes beside the crawls. Needs ``redis-server`` on PATH (Debian: ``apt-get install
redis-server``).

Part 2, embedding: chunks/second of the Ray engine's actor pool (a local Ray cluster
on this machine's cores, one model copy per actor) against the local engine's
`Embedder` in this process, on the same chunks of ``--embed-abstracts`` abstracts,
in interleaved rounds after both are warm; printed as the Ray engine's overhead
(target: at most 15%). Ray's start-up is timed separately. Usage::

    python benchmarks/scale.py [--rate 10] [--requests 120] [--workers 1,2,4] [--jitter 0.03] [--hogs 2]
                               [--embed-abstracts 1500] [--skip crawl|embedding]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devtools.local_eutils import LocalEutils, load_records, max_in_any_window, synthetic_pmids  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from cpu_hog import cpu_hog  # noqa: E402

BATCH = 10
AGENT = "pubmed-pipeline benchmark worker"  # + the worker's number: the server tells the workers apart by it


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("redis-server not found: install it with `apt-get install -y redis-server`")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [server, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return process, f"redis://127.0.0.1:{port}/0"


def crawl(server: LocalEutils, workers: int, pmids: list[int], work: Path, redis_url: str | None, rate: int) -> Any:
    ids = work / "ids.txt"
    ids.write_text("".join(f"{p}\n" for p in pmids))
    store = work / "store"
    settings = {
        "PUBMED_EUTILS_URL": server.url,
        "PUBMED_STORE": str(store),
        "PUBMED_RATE": str(rate),
        "PUBMED_BATCH_SIZE": str(BATCH),
        "PUBMED_PROGRESS_INTERVAL": "0",
        "LOG_LEVEL": "WARNING",
    }
    if redis_url:
        settings["PUBMED_REDIS_URL"] = redis_url
    command = [sys.executable, "-m", "scrapy", "crawl", "pubmed", "-a", f"pmids={ids}"]
    for key, value in settings.items():
        command += ["-s", f"{key}={value}"]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    server.reset()
    procs = [
        subprocess.Popen(command + ["-s", f"USER_AGENT={AGENT} {n}"], cwd=REPO, env=env, stderr=subprocess.PIPE)
        for n in range(workers)
    ]
    failed = [p.communicate()[1].decode()[-1500:] for p in procs if p.wait() != 0]
    if failed:
        sys.exit("crawl failed:\n" + "\n".join(failed))
    log = server.requests()
    times = sorted(r.time for r in log)
    all_up = max(min(r.time for r in log if r.user_agent == agent) for agent in {r.user_agent for r in log})
    return {
        "requests": len(log),
        "achieved": rate_between(times, times[0]),
        "all_up": rate_between(times, all_up),
        "max_window": max_in_any_window(times),
        "http_429": server.rate_limited,
    }


def rate_between(times: list[float], start: float) -> float:
    """Arrivals per second from the arrival at ``start`` to the last one (``times`` sorted)."""
    seen = [t for t in times if t >= start]
    span = seen[-1] - seen[0] if seen else 0.0
    return (len(seen) - 1) / span if span > 0 else 0.0


def bench_ray_embedding(n_abstracts: int, rounds: int = 2) -> None:
    """A full `rebuild` with the local engine against the same rebuild with the Ray engine, alternating."""
    from benchmarks.scale_index import make_store
    from indexer.build import rebuild
    from indexer.config import IndexerConfig

    seconds = {"local": 0.0, "ray": 0.0}
    vectors = 0
    with tempfile.TemporaryDirectory() as work:
        store = Path(work) / "store"
        make_store(store, n_abstracts, seed=3)
        for n in range(rounds):
            order = ["local", "ray"] if n % 2 == 0 else ["ray", "local"]
            for engine in order:
                index = Path(work) / f"index-{engine}-{n}"
                cfg = IndexerConfig(store=store, index=index, engine=engine, device="cpu", progress=False)
                t0 = time.perf_counter()
                vectors = rebuild(cfg).vectors
                seconds[engine] += time.perf_counter() - t0
    local, ray = seconds["local"] / rounds, seconds["ray"] / rounds
    print(f"rebuild: {n_abstracts} synthetic articles, {vectors} vectors, {rounds} interleaved rounds each")
    print(f"  peer: local engine:  {local:7.1f} s")
    print(f"  Ray engine (local cluster, start-up included): {ray:7.1f} s")
    print(f"  Ray overhead: {ray / local - 1:+.1%} (target at most 15% once start-up is amortised)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=10, help="requests/second the server allows (429 above)")
    parser.add_argument("--requests", type=int, default=120, help=f"efetch requests per job (of {BATCH} PMIDs each)")
    parser.add_argument("--workers", default="1,2,4", help="comma list of worker counts")
    parser.add_argument("--jitter", type=float, default=0.0, help="crawl part: server-side delay of 0..S seconds")
    parser.add_argument("--hogs", type=int, default=0, help="crawl part: busy-loop processes beside the crawls")
    parser.add_argument("--embed-abstracts", type=int, default=1500, help="abstracts chunked for the embedding part")
    parser.add_argument("--skip", action="append", default=[], choices=["crawl", "embedding"], help="skip a part")
    args = parser.parse_args()
    if "crawl" not in args.skip:
        bench_crawl(args)
    if "embedding" not in args.skip:
        bench_ray_embedding(args.embed_abstracts)


def bench_crawl(args: argparse.Namespace) -> None:
    counts = [int(n) for n in args.workers.split(",") if n]
    records = load_records([REPO / "tests" / "data" / "pubmed"])
    redis_process, redis_url = start_redis()
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        with (
            LocalEutils(records, synthesize=True, rate_limit=args.rate, jitter=args.jitter) as server,
            cpu_hog(args.hogs),
        ):
            for label, workers, url in [("peer: 1 process, local limiter", 1, None)] + [
                (f"{n} worker(s), Redis", n, redis_url) for n in counts
            ]:
                pmids = synthetic_pmids(args.requests * BATCH, seed=workers + (100 if url else 0))
                with tempfile.TemporaryDirectory() as work:
                    rows.append((label, crawl(server, workers, pmids, Path(work), url, args.rate)))
    finally:
        redis_process.terminate()
        redis_process.wait(10)
    peer = rows[0][1]["all_up"]
    print(
        f"server allows {args.rate} requests/s; {args.requests} efetch requests of {BATCH} PMIDs per job; "
        f"server-side jitter 0-{args.jitter * 1000:.0f} ms; {args.hogs} CPU hog processes"
    )
    print(
        f"{'crawl':34} {'whole job':>9} {'of allowed':>10} {'all up':>7} {'of allowed':>10} {'vs peer':>8} "
        f"{'max in 1 s':>10} {'429s':>5}"
    )
    for label, row in rows:
        print(
            f"{label:34} {row['achieved']:9.2f} {row['achieved'] / args.rate:10.1%} {row['all_up']:7.2f} "
            f"{row['all_up'] / args.rate:10.1%} {row['all_up'] / peer:8.2f} "
            f"{row['max_window']:10d} {row['http_429']:5d}"
        )
    distributed = [row for label, row in rows[1:]]
    ok = all(r["http_429"] == 0 for _, r in rows) and all(r["all_up"] >= 0.9 * args.rate for r in distributed)
    verdict = "met" if ok else "NOT met"
    print(f"targets (0 429s, every distributed rate with all workers up >= 90% of allowed): {verdict}")


if __name__ == "__main__":
    main()
