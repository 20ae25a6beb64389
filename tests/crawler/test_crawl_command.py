"""``scrapy crawl pubmed``: exit codes (0, 1, 2), the summary as the last line, the stats dump on request."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from crawl_helpers import REPO, crawl_command, crawl_env, write_ids
from scrapy.settings import Settings

from crawler.commands.crawl import UsageProblem, check_usage
from crawler.setting_checks import SettingError, check_settings, known_settings

DUMP = "Dumping Scrapy stats"


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, env=crawl_env(), capture_output=True, text=True, timeout=90, check=False)


@pytest.fixture
def ids(records: dict[int, bytes], tmp_path: Path) -> Path:
    return write_ids(tmp_path / "ids.txt", sorted(records)[:5])


def test_the_summary_is_the_last_line_and_the_stats_dump_is_off(eutils, crawl, ids) -> None:
    done = crawl(eutils(), f"pmids={ids}")

    assert done.returncode == 0, done.stderr[-3000:]
    assert DUMP not in done.stderr
    assert "pubmed crawl finished: requested 5, already stored 0, stored 5" in last_line(done.stderr)
    assert "Spider closed (finished)" in done.stderr


@pytest.mark.parametrize("how", ["--stats", "LOG_LEVEL=DEBUG"])
def test_the_stats_dump_comes_with_stats_or_debug_and_the_summary_stays_last(eutils, ids, tmp_path, how) -> None:
    settings = {"LOG_LEVEL": "DEBUG"} if how.startswith("LOG_LEVEL") else {}
    command = crawl_command(eutils(), tmp_path / "store", [f"pmids={ids}"], settings)
    if how == "--stats":
        command.append("--stats")

    done = run(command)

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count(DUMP) == 1
    assert done.stderr.index(DUMP) < done.stderr.index("pubmed crawl finished:")
    assert "'pubmed/stored': 5" in done.stderr
    assert "pubmed crawl finished: requested 5" in last_line(done.stderr)


def test_an_explicit_stats_dump_setting_wins_over_debug(eutils, ids, tmp_path) -> None:
    command = crawl_command(eutils(), tmp_path / "store", [f"pmids={ids}"], {"LOG_LEVEL": "DEBUG", "STATS_DUMP": "0"})

    done = run(command)

    assert done.returncode == 0, done.stderr[-3000:]
    assert DUMP not in done.stderr


USAGE_CASES = [
    # (-a arguments, -s settings, text of the one-line error)
    (["pmids={absent}"], {}, "error: -a pmids={absent}: no such file"),
    (["bioasq={absent}"], {}, "error: -a bioasq={absent}: no such file"),
    (["pmid={ids}"], {}, "error: unknown argument -a pmid; known: pmids"),
    (["pmids="], {}, "error: argument -a pmids is empty"),
    (["query=x", "mindate=2020/13", "maxdate=2021"], {}, "error: -a mindate='2020/13'"),
    (["pmids={empty}"], {}, "error: -a pmids={empty}: holds no PMID"),
    (["pmids={ids}"], {"PUBMED_RATE": "fast"}, "error: -s PUBMED_RATE=fast: not a number"),
    (["pmids={ids}"], {"PUBMED_BATCH_SIZE": "0"}, "error: -s PUBMED_BATCH_SIZE=0: must be at least 1"),
    (["pmids={ids}"], {"PUBMED_BATCH_SIZE": "2.5"}, "error: -s PUBMED_BATCH_SIZE=2.5: not a whole number"),
    (["pmids={ids}"], {"PUBMED_RATEE": "3"}, "error: -s PUBMED_RATEE=3: unknown setting; did you mean PUBMED_RATE?"),
    (["pmids={ids}"], {"PUBMED_EUTILS_URL": "ftp://x"}, "error: -s PUBMED_EUTILS_URL=ftp://x: not a http://"),
    (
        ["pmids={ids}"],
        {"PUBMED_REDIS_URL": "http://:secret@host:6379"},
        "error: -s PUBMED_REDIS_URL=http://:***@host:6379: not a redis://",
    ),
]


@pytest.mark.parametrize(("args", "settings", "message"), USAGE_CASES)
def test_bad_usage_exits_2_with_one_line_naming_the_argument_or_setting(
    eutils, ids, tmp_path, args, settings, message
) -> None:
    paths = {"absent": tmp_path / "absent.txt", "ids": ids, "empty": write_ids(tmp_path / "empty.txt", ["# none"])}
    server = eutils()
    command = crawl_command(server, tmp_path / "store", [a.format(**paths) for a in args], settings)

    done = run(command)

    assert done.returncode == 2, done.stderr[-3000:]
    assert last_line(done.stderr).startswith(message.format(**paths))
    assert "Traceback" not in done.stderr and "secret" not in done.stderr
    assert server.requests() == []
    assert not (tmp_path / "store").exists()


def test_an_input_file_with_a_bad_entry_is_a_pipeline_error(eutils, tmp_path) -> None:
    bioasq = tmp_path / "broken.json"
    bioasq.write_text(json.dumps({"questions": [{"documents": ["not a url"]}]}))
    lines = write_ids(tmp_path / "ids.txt", ["123", "not a pmid"])
    server = eutils()

    broken = run(crawl_command(server, tmp_path / "store", [f"bioasq={bioasq}"], {}))
    bad_line = run(crawl_command(server, tmp_path / "store", [f"pmids={lines}"], {}))

    assert broken.returncode == 1 and last_line(broken.stderr).startswith("error: ") and str(bioasq) in broken.stderr
    assert bad_line.returncode == 1 and last_line(bad_line.stderr) == (
        f"error: {lines}:2: not a PMID or PubMed URL: 'not a pmid'"
    )
    assert server.requests() == []


def test_failed_pmids_exit_1(eutils, crawl, ids) -> None:
    done = crawl(eutils(fault_all="500"), f"pmids={ids}", RETRY_TIMES="1", PUBMED_FETCH_ROUNDS="1")

    assert done.returncode == 1, done.stderr[-3000:]
    assert "pubmed crawl incomplete (exit 1): 5 PMIDs failed" in done.stderr
    assert "pubmed crawl finished:" in last_line(done.stderr) and "failed 5" in last_line(done.stderr)


def test_every_project_setting_passes_its_own_check() -> None:
    settings = Settings()
    settings.setmodule("crawler.settings", priority="project")

    check_settings(settings)  # the defaults are valid
    assert {"PUBMED_RATE", "PUBMED_REDIS_URL", "PUBMED_CUT_LAZILY"} <= set(known_settings())
    settings.set("PUBMED_FLUSH_SECONDS", "-1", priority="cmdline")
    with pytest.raises(SettingError, match=r"-s PUBMED_FLUSH_SECONDS=-1: must be a finite number, not negative"):
        check_settings(settings)


def test_check_usage_returns_the_input_pmids(ids, records) -> None:
    settings = Settings()
    settings.setmodule("crawler.settings", priority="project")

    assert check_usage({"pmids": str(ids)}, settings) == sorted(records)[:5]
    assert check_usage({"query": "crispr"}, settings) is None
    with pytest.raises(UsageProblem, match="give exactly one of"):
        check_usage({}, settings)
