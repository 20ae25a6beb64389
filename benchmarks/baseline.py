"""Download-and-load throughput of ``python -m crawler.baseline --download`` against curl + the loader.

A local NCBI-like file server (`devtools.baseline_server`) serves ``--files`` synthetic
baseline files of ``--file-mb`` MB of XML each (real records with fresh PMIDs, built
under ``--data``), throttled to ``--bandwidth`` bytes/second for the whole server, with a
``--send-buffer`` socket buffer per connection so that the throttled loopback link behaves
like a real one (a connection nobody reads stops taking bandwidth once its window is
full; see `devtools.baseline_server`). In the same run it measures, each in a fresh process:

- download only: plain ``curl`` of the same files, one after another (what wget/curl
  scripts do);
- load only: ``python -m crawler.baseline FILES`` of the downloaded files;
- ours: ``python -m crawler.baseline --download`` (download, verify and load overlapped).

Each of the three runs ``--repeat`` times, interleaved, and the fastest of each is kept
(on a shared machine the other load only ever adds time); each round also prints ours
against the larger of the other two in that round, and the median of those is reported
beside the headline ratio, since the three fastest times may come from different rounds.
Target: ours' wall time <= 1.1 x the larger of download-only and load-only, because
loading overlaps downloading; peak RSS (all its processes together, sampled) < 500 MB. ``--big-mb 200`` adds one
unthrottled download-and-load of a single file that large, to show memory stays flat.

    python benchmarks/baseline.py [--files 16] [--file-mb 10] [--bandwidth 4e6] [--repeat 3] [--big-mb 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.baseline_server import BaselineServer  # noqa: E402
from devtools.synthetic_pubmed import write_synthetic  # noqa: E402


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants now (Linux /proc), in MB."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


def run_measured(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run ``command``; returns (wall s, peak RSS MB of its whole process tree, sampled every 20 ms, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    peak = 0.0
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        while process.poll() is None:
            peak = max(peak, _tree_rss_mb(process.pid))
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode:
        raise SystemExit(f"{' '.join(command[:4])}... exited {process.returncode}: {stderr[-2000:]}")
    return seconds, peak, stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16, help="synthetic baseline files")
    parser.add_argument("--file-mb", type=float, default=10.0, help="MB of XML per file (about 1/5 of that gzipped)")
    parser.add_argument("--bandwidth", type=float, default=4e6, help="server bandwidth, bytes/second (all connections)")
    parser.add_argument(
        "--send-buffer", type=int, default=64 * 1024, help="server socket send buffer per connection, bytes (0: kernel)"
    )
    parser.add_argument("--workers", type=int, default=3, help="--workers of the download")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the fastest of each is kept")
    parser.add_argument("--big-mb", type=float, default=0.0, help="also download-and-load one file this large (MB XML)")
    parser.add_argument("--data", type=Path, default=Path("/work/bench-data/i17"), help="folder for generated data")
    args = parser.parse_args()

    data = args.data
    source = data / "files"
    shutil.rmtree(data / "runs", ignore_errors=True)
    source.mkdir(parents=True, exist_ok=True)
    names = [f"pubmed90n{i:04d}.xml.gz" for i in range(1, args.files + 1)]
    records = 0
    for i, name in enumerate(names):
        path = source / name
        marker = source / f"{name}.records"
        if not (path.exists() and marker.exists() and marker.read_text().split()[1] == f"{args.file_mb}"):
            count = write_synthetic(path, int(args.file_mb * 1e6), 10_000_000 + i * 1_000_000)
            marker.write_text(f"{count} {args.file_mb}\n")
        records += int(marker.read_text().split()[0])
    total_bytes = sum((source / n).stat().st_size for n in names)
    runs = data / "runs"
    runs.mkdir()

    best: dict[str, tuple[float, float, str]] = {}
    paired_ratios: list[float] = []  # ours / max(curl, load) within each round
    with BaselineServer(
        {"baseline": [source / n for n in names]}, bandwidth=args.bandwidth, send_buffer=args.send_buffer or None
    ) as server:
        urls = [f"{server.url}baseline/{n}" for n in names]
        for round_ in range(args.repeat):  # interleaved rounds; each measurement keeps its fastest
            folder = runs / f"round{round_}"
            (folder / "curl").mkdir(parents=True)
            ours = [sys.executable, "-m", "crawler.baseline", "--download", "--base-url", server.url]
            measured = {
                "curl": run_measured(["curl", "-sS", "-f", "--remote-name-all", *urls], folder / "curl"),
                "load": run_measured(
                    [sys.executable, "-m", "crawler.baseline", *names, "--store", str(folder / "store-load")],
                    folder / "curl",
                ),
                "ours": run_measured(
                    [*ours, "--store", str(folder / "store-ours"), "--workers", str(args.workers)], runs
                ),
            }
            paired = measured["ours"][0] / max(measured["curl"][0], measured["load"][0])
            paired_ratios.append(paired)
            print(
                f"round {round_ + 1}: "
                + ", ".join(f"{k} {v[0]:.1f} s" for k, v in measured.items())
                + f"; ratio {paired:.3f}",
                flush=True,
            )
            for key, value in measured.items():
                if key not in best or value[0] < best[key][0]:
                    best[key] = value
            shutil.rmtree(folder)
    curl_s, _, _ = best["curl"]
    load_s, load_rss, _ = best["load"]
    ours_s, ours_rss, ours_out = best["ours"]

    mb = total_bytes / 1e6
    floor = max(curl_s, load_s)
    print(
        f"job: {args.files} files, {mb:.1f} MB gzipped ({args.file_mb:g} MB XML each), {records:,} records; "
        f"server bandwidth {args.bandwidth / 1e6:g} MB/s, send buffer {args.send_buffer // 1024} KiB; "
        f"--workers {args.workers}; fastest of {args.repeat} interleaved rounds"
    )
    print(f"download only (curl, sequential)  : {curl_s:6.1f} s  {mb / curl_s:6.2f} MB/s")
    print(
        f"load only (crawler.baseline FILES): {load_s:6.1f} s  {records / load_s:8,.0f} articles/s  "
        f"peak {load_rss:.0f} MB"
    )
    print(f"curl then loader                  : {curl_s + load_s:6.1f} s")
    print(
        f"ours (--download, overlapped)     : {ours_s:6.1f} s  {records / ours_s:8,.0f} articles/s  "
        f"{mb / ours_s:6.2f} MB/s  peak {ours_rss:.0f} MB"
    )
    print(f"  {ours_out.strip()}")
    ratio = ours_s / floor
    print(
        f"ours / max(download only, load only) = {ratio:.3f} (target <= 1.1); "
        f"ours / (curl then loader) = {ours_s / (curl_s + load_s):.3f}; peak RSS {ours_rss:.0f} MB (target < 500 MB): "
        + ("met" if ratio <= 1.1 and ours_rss < 500 else "MISSED")
    )
    print(
        f"the same ratio within each round: median {statistics.median(paired_ratios):.3f}, "
        f"range {min(paired_ratios):.3f} to {max(paired_ratios):.3f}"
    )

    if args.big_mb:
        big = data / "big" / "pubmed91n0001.xml.gz"
        big.parent.mkdir(exist_ok=True)
        marker = big.with_name(big.name + ".records")
        if not (big.exists() and marker.exists() and marker.read_text().split()[1] == f"{args.big_mb}"):
            marker.write_text(f"{write_synthetic(big, int(args.big_mb * 1e6), 50_000_000)} {args.big_mb}\n")
        count = int(marker.read_text().split()[0])
        with BaselineServer({"baseline": [big]}) as server:
            seconds, rss, out = run_measured(
                [
                    sys.executable,
                    "-m",
                    "crawler.baseline",
                    "--download",
                    "--base-url",
                    server.url,
                    "--store",
                    str(runs / "store-big"),
                ],
                runs,
            )
        print(
            f"one {args.big_mb:g} MB-XML file ({big.stat().st_size / 1e6:.0f} MB gzipped, {count:,} records), "
            f"unthrottled: {seconds:.1f} s, {count / seconds:,.0f} articles/s, peak RSS {rss:.0f} MB "
            f"(target < 500 MB): {'met' if rss < 500 else 'MISSED'}"
        )
        print(f"  {out.strip()}")


if __name__ == "__main__":
    main()
