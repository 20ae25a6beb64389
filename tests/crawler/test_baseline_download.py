"""`python -m crawler.baseline --download` against a real local NCBI-like file server."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from crawl_helpers import REPO, raw_pmids
from typer.testing import CliRunner

from crawler.baseline import app
from crawler.baseline_listing import parse_listing
from devtools.baseline_server import BaselineServer
from devtools.synthetic_pubmed import write_synthetic
from store.reader import deleted_pmids, stored_pmids

FIXTURES = REPO / "tests" / "data" / "pubmed" / "tipplerow_pubmed"
BASELINE = ["pubmed20n0001.xml.gz", "pubmed20n0002.xml.gz"]
UPDATE = "pubmed20n1203.xml.gz"  # 10 articles and 23 deletions
runner = CliRunner()


@pytest.fixture
def ftp(tmp_path: Path) -> Path:
    """A folder with the real fixture files and a synthetic third baseline file (~1 MB compressed)."""
    folder = tmp_path / "ftp"
    folder.mkdir()
    for name in [*BASELINE, UPDATE]:
        shutil.copy(FIXTURES / name, folder / name)
    write_synthetic(folder / "pubmed20n0003.xml.gz", 5_000_000, 80_000_000)
    return folder


@pytest.fixture
def serve(ftp: Path) -> Iterator[Callable[..., BaselineServer]]:
    servers: list[BaselineServer] = []

    def start(**kwargs: Any) -> BaselineServer:
        baseline = [ftp / n for n in [*BASELINE, "pubmed20n0003.xml.gz"]]
        server = BaselineServer({"baseline": baseline, "updatefiles": [ftp / UPDATE]}, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def download(server: BaselineServer, store: Path, *args: str) -> Any:
    return runner.invoke(app, ["--download", "--base-url", server.url, "--store", str(store), "--retries", "3", *args])


def data_gets(server: BaselineServer) -> list[str]:
    return [s.path.rsplit("/", 1)[-1] for s in server.served() if s.path.endswith(".xml.gz")]


def expected_pmids(ftp: Path) -> set[int]:
    from crawler.baseline import load_files

    store = ftp.parent / "reference-store"
    load_files([ftp / n for n in [*BASELINE, "pubmed20n0003.xml.gz", UPDATE]], store)
    return stored_pmids(store)


def test_full_download_loads_every_article_then_a_rerun_downloads_nothing(serve, ftp, tmp_path):
    server = serve(bandwidth=1_000_000)  # slow enough (1 s for the large file) that the workers overlap
    store = tmp_path / "store"

    result = download(server, store, "--email", "me@example.org")

    assert result.exit_code == 0, result.output
    assert stored_pmids(store) == expected_pmids(ftp)
    assert len(deleted_pmids(store)) == 23
    assert sorted(raw_pmids(store)) == sorted(set(raw_pmids(store)))
    assert "4 files listed, 0 already loaded; 4 downloaded" in result.output
    assert "4 loaded: 707 articles added or updated, 23 deletions applied; 0 failures" in result.output
    assert sorted(data_gets(server)) == sorted([*BASELINE, "pubmed20n0003.xml.gz", UPDATE])
    # NCBI's tool and email identify every request, as with E-utilities
    assert all(s.query.get("tool") == "pubmed-pipeline" for s in server.served())
    assert all(s.query.get("email") == "me@example.org" for s in server.served())
    assert 1 < server.max_in_flight <= 3  # --workers 3: parallel downloads, never more than three connections
    # downloaded files are gone once loaded (--no-keep-files is the default), no temp file is left
    assert list((store / "_download").iterdir()) == []

    server.reset()
    again = download(server, store)

    assert again.exit_code == 0, again.output
    assert data_gets(server) == []  # only the two listing pages were read
    assert "4 files listed, 4 already loaded; 0 downloaded" in again.output
    assert sorted(raw_pmids(store)) == sorted(set(raw_pmids(store)))


def test_a_new_update_file_is_fetched_and_applied_with_its_deletions(serve, ftp, tmp_path):
    server = serve()
    store = tmp_path / "store"
    assert download(server, store, "--keep-files").exit_code == 0
    assert {1, 2, 80_000_000} <= stored_pmids(store)
    new = ftp / "pubmed20n1204.xml.gz"
    write_synthetic(new, 20_000, 85_000_000, deletions=[1, 80_000_000])
    server.add("updatefiles", new)
    server.reset()

    result = download(server, store)

    assert result.exit_code == 0, result.output
    assert data_gets(server) == ["pubmed20n1204.xml.gz"]
    live = stored_pmids(store)
    assert 1 not in live and 80_000_000 not in live and 2 in live and 85_000_000 in live
    assert "1 loaded" in result.output and "2 deletions applied" in result.output
    assert (store / "_download" / "pubmed20n0001.xml.gz").is_file()  # kept by the first run's --keep-files


def test_dropped_connection_is_resumed_with_range_without_fetching_bytes_twice(serve, ftp, tmp_path):
    server = serve()
    name = "pubmed20n0003.xml.gz"
    server.drop_after[name] = 300_000
    store = tmp_path / "store"

    result = download(server, store)

    assert result.exit_code == 0, result.output
    gets = [s for s in server.served() if s.path.endswith("/" + name)]
    assert [(s.status, s.range, s.sent) for s in gets][0] == (200, None, 300_000)
    assert (gets[1].status, gets[1].range, gets[1].start) == (206, "bytes=300000-", 300_000)
    assert server.bytes_sent(name) == (ftp / name).stat().st_size  # every byte sent exactly once
    assert stored_pmids(store) == expected_pmids(ftp)


def test_corrupted_file_is_downloaded_again_then_refused(serve, tmp_path):
    server = serve(corrupt={"pubmed20n0002.xml.gz"})
    store = tmp_path / "store"

    result = download(server, store, "--tries", "2")

    assert result.exit_code == 1
    assert data_gets(server).count("pubmed20n0002.xml.gz") == 2
    assert "pubmed20n0002.xml.gz: MD5 mismatch after 2 downloads" in result.output
    assert stored_pmids(store) == set(range(1, 11))  # the file before it loaded; nothing after it did
    assert not (store / "_loaded" / "pubmed20n0002.xml.gz.done").exists()
    assert not (store / "_staging" / "pubmed20n0002.xml.gz").exists()  # what was staged as it arrived is dropped
    assert "1 failures" in result.output


def test_listed_file_that_answers_404_is_reported_and_exit_is_1(serve, tmp_path):
    server = serve(missing={UPDATE})
    store = tmp_path / "store"

    result = download(server, store)

    assert result.exit_code == 1
    assert f"error: {UPDATE}: HTTP 404" in result.output
    assert "3 loaded" in result.output and "1 failures" in result.output
    assert data_gets(server).count(UPDATE) == 1  # a 404 is not retried


def test_missing_md5_is_refused_unless_no_require_md5(serve, tmp_path):
    server = serve(no_md5={"pubmed20n0001.xml.gz"})
    store = tmp_path / "store"

    refused = download(server, store)

    assert refused.exit_code == 1
    assert "pubmed20n0001.xml.gz: no checksum (pubmed20n0001.xml.gz.md5 is not listed)" in refused.output
    assert "--no-require-md5" in refused.output
    assert "pubmed20n0001.xml.gz" not in data_gets(server)
    assert not (store / "_loaded").exists() or list((store / "_loaded").iterdir()) == []

    accepted = download(server, store, "--no-require-md5")

    assert accepted.exit_code == 0, accepted.output
    assert set(range(1, 11)) <= stored_pmids(store)


def test_since_and_updates_only_choose_the_files(serve, ftp, tmp_path):
    server = serve()
    server.add("updatefiles", ftp / UPDATE, modified=dt.datetime(2025, 6, 2, tzinfo=dt.UTC))
    for name in [*BASELINE, "pubmed20n0003.xml.gz"]:
        server.add("baseline", ftp / name, modified=dt.datetime(2024, 12, 4, tzinfo=dt.UTC))
    store = tmp_path / "store"

    assert download(server, store, "--since", "2025-06-01").exit_code == 0
    assert data_gets(server) == [UPDATE]
    server.reset()
    result = download(server, store, "--updates-only")
    assert result.exit_code == 0 and "1 files listed, 1 already loaded" in result.output
    assert [s.path for s in server.served()] == ["/pubmed/updatefiles/"]


def test_usage_errors_exit_2(tmp_path):
    store = str(tmp_path / "store")
    bad_since = runner.invoke(app, ["--download", "--since", "1 June", "--store", store])
    both = runner.invoke(app, ["--download", str(tmp_path / "x.xml.gz"), "--store", store])
    needs_download = runner.invoke(app, [str(tmp_path / "x.xml.gz"), "--since", "2025-01-01", "--store", store])
    neither = runner.invoke(app, ["--store", store])
    assert bad_since.exit_code == 2 and "--since" in bad_since.output and "YYYY-MM-DD" in bad_since.output
    assert both.exit_code == 2 and "not both" in both.output
    assert needs_download.exit_code == 2 and "--since needs --download" in needs_download.output
    assert neither.exit_code == 2 and "--download" in neither.output


def test_listing_parser_reads_ncbi_index_pages():
    page = (
        '<pre><a href="/pubmed/">Parent Directory</a>   -\n'
        '<a href="pubmed25n0002.xml.gz">pubmed25n0002.xml.gz</a>   2024-12-04 12:49   19M\n'
        '<a href="pubmed25n0001.xml.gz">pubmed25n0001.xml.gz</a>   2024-12-04 12:48   4.5M\n'
        '<a href="pubmed25n0001.xml.gz.md5">pubmed25n0001.xml.gz.md5</a>   2024-12-04 12:48   60\n'
        '<a href="README.txt">README.txt</a>   2024-12-18 16:09  4.0K\n</pre>'
    )
    files = parse_listing(page, "https://ftp.ncbi.nlm.nih.gov/pubmed/baseline/", "baseline")
    assert [f.name for f in files] == ["pubmed25n0001.xml.gz", "pubmed25n0002.xml.gz"]
    assert files[0].url == "https://ftp.ncbi.nlm.nih.gov/pubmed/baseline/pubmed25n0001.xml.gz"
    assert files[0].md5_url == files[0].url + ".md5" and files[1].md5_url is None
    assert files[1].modified == dt.datetime(2024, 12, 4, 12, 49, tzinfo=dt.UTC)
    assert files[1].size_hint == 19 << 20


def _cli(server: BaselineServer, store: Path) -> list[str]:
    return [sys.executable, "-m", "crawler.baseline", "--download", "--base-url", server.url, "--store", str(store)]


def test_sigkill_mid_download_then_rerun_loses_nothing_and_duplicates_nothing(serve, ftp, tmp_path):
    name = "pubmed20n0003.xml.gz"
    server = serve(bandwidth=400_000)  # ~3 s for the synthetic file: time to kill it mid-way
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(_cli(server, store), cwd=tmp_path, env=env)
    partial = store / "_download" / f".tmp-{name}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (partial.exists() and partial.stat().st_size > 200_000):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert partial.exists(), "the download never got under way"
    have = partial.stat().st_size
    assert 0 < have < (ftp / name).stat().st_size
    server.throttle.rate = None
    server.reset()

    rerun = subprocess.run(_cli(server, store), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    assert rerun.returncode == 0, rerun.stderr[-2000:]
    ranges = [s.range for s in server.served() if s.path.endswith("/" + name)]
    assert ranges == [f"bytes={have}-"]
    pmids = raw_pmids(store)
    assert len(pmids) == len(set(pmids))
    assert stored_pmids(store) == expected_pmids(ftp)


def test_the_command_forks_its_loading_process_and_loads_every_file(serve, ftp, tmp_path):
    """Its stderr is not a terminal, so a progress thread runs: the loading process must be forked before it."""
    server = serve()
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    run = subprocess.run(
        [*_cli(server, store), "-v"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )

    assert run.returncode == 0, run.stderr[-2000:]
    assert "loading process started (fork)" in run.stderr  # a spawned one imports everything afresh first
    assert "4 loaded" in run.stdout
    assert stored_pmids(store) == expected_pmids(ftp)


def test_memory_stays_flat_however_large_the_file(tmp_path):
    """Peak RSS of loading a file 4x larger grows by far less than the file (the 200 MB case: benchmarks)."""
    script = (
        "import sys; from pathlib import Path; from crawler.baseline import load_files; "
        "load_files([Path(sys.argv[1])], Path(sys.argv[2]), part_rows=1000); "
        # VmHWM starts afresh at exec; ru_maxrss would carry over the peak of this test process.
        "print(next(int(x.split()[1]) for x in Path('/proc/self/status').read_text().splitlines()"
        " if x.startswith('VmHWM:')) // 1024)"
    )
    peaks = []
    # Past the first tens of MB (allocator and pyarrow pool warm-up: 168 MB at 8 MB of XML,
    # 193 MB at 32 MB), the peak stays put: 196 MB at 128 MB.
    for size in (32_000_000, 128_000_000):
        path = tmp_path / f"pubmed20n{size // 1_000_000:04d}.xml.gz"
        write_synthetic(path, size, 70_000_000)
        out = subprocess.run(
            [sys.executable, "-c", script, str(path), str(tmp_path / f"store{size}")],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        peaks.append(int(out.stdout.strip().splitlines()[-1]))
    assert peaks[1] - peaks[0] < 24, f"peak RSS {peaks[0]} MB for 32 MB of XML, {peaks[1]} MB for 128 MB"


def test_a_listing_that_cannot_be_read_is_a_failure(serve, tmp_path):
    server = serve()
    result = runner.invoke(app, ["--download", "--base-url", server.url + "nowhere/", "--store", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "HTTP 404" in result.output and "nowhere/baseline/" in result.output
    assert "0 files listed" in result.output
