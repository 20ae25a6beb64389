"""`store` command: inspect, check and compact an article store (`store stats`, `store verify`, `store compact`)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from store.cli_contract import config_option, fail, load_stage, make_app, show_config_option
from store.compact import DEFAULT_RANGE_WIDTH
from store.config import StoreConfig

app = make_app("Inspect the Parquet article store that `scrapy crawl pubmed` and `python -m crawler.baseline` fill.")
StorePath = Annotated[
    Path | None,
    typer.Argument(
        help="Store folder (the one holding articles/ and deletions/).",
        show_default="[store] path of pipeline.toml, else data/pubmed",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]
ConfigOpt = Annotated[Path | None, config_option("store")]
ShowConfig = Annotated[bool, show_config_option()]


def _store_path(config: Path | None, show: bool) -> Path:
    return Path(load_stage(StoreConfig, "store", config, show=show).config.path)


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{size} B"


@app.command()
def stats(
    path: StorePath = None, as_json: AsJson = False, config: ConfigOpt = None, show_config: ShowConfig = False
) -> None:
    """Counts, PMID range, size on disk and schema version of a store."""
    from store.inspect import store_stats

    result = store_stats(_store_path(config, show_config))
    if as_json:
        print(json.dumps(dataclasses.asdict(result), indent=2))
        return
    table = Table(title=f"store {result.path}", show_header=False)
    table.add_row("schema version", str(result.schema_version))
    table.add_row("live articles", f"{result.live_articles:,}")
    table.add_row("  with abstract", f"{result.with_abstract:,}")
    table.add_row("  by source", ", ".join(f"{k}: {v:,}" for k, v in sorted(result.by_source.items())) or "-")
    table.add_row("rows (all versions)", f"{result.rows:,}")
    table.add_row("deletions recorded", f"{result.deletions:,}")
    table.add_row("PMID range", f"{result.pmid_min} .. {result.pmid_max}" if result.pmid_min else "-")
    table.add_row("parts", f"{result.article_parts} articles, {result.deletion_parts} deletions")
    table.add_row("size on disk", _human_bytes(result.bytes_on_disk))
    Console().print(table)


@app.command()
def verify(
    path: StorePath = None,
    as_json: AsJson = False,
    fail_on_duplicates: Annotated[
        bool, typer.Option(help="Exit 1 when a PMID version is stored more than once (readers dedupe them anyway).")
    ] = False,
    config: ConfigOpt = None,
    show_config: ShowConfig = False,
) -> None:
    """Read every part in full: unreadable parts and schema drift fail; duplicates are reported."""
    from store.inspect import verify_store

    report = verify_store(_store_path(config, show_config))
    if as_json:
        print(json.dumps({**dataclasses.asdict(report), "ok": report.ok}, indent=2))
    else:
        for problem in report.problems:
            print(f"problem: {problem}")
        for temp in report.leftover_temps:
            print(f"note: temp file of an unfinished write (ignored by readers): {temp}")
        dup = report.duplicate_pmids
        shown = ", ".join(map(str, dup[:10])) + (" ..." if len(dup) > 10 else "")
        print(f"duplicates: {report.duplicate_rows} extra rows over {len(dup)} PMIDs" + (f" ({shown})" if dup else ""))
        status = "ok" if report.ok else f"FAILED ({len(report.problems)} problems)"
        print(f"verify {report.path}: {report.parts_checked} parts read, {status}")
    if not report.ok:
        raise typer.Exit(1)
    if fail_on_duplicates and report.duplicate_pmids:
        fail(f"{report.path}: {len(report.duplicate_pmids)} PMIDs stored more than once (--fail-on-duplicates)")


@app.command()
def compact(
    path: StorePath = None,
    range_width: Annotated[
        int, typer.Option(min=1, help="PMIDs per range: each range becomes one or a few sorted parts.")
    ] = DEFAULT_RANGE_WIDTH,
    wait: Annotated[bool, typer.Option(help="Wait for another compact of this store instead of failing.")] = False,
    config: ConfigOpt = None,
    show_config: ShowConfig = False,
) -> None:
    """Rewrite the parts as PMID-sorted parts per range, without old versions or deleted articles (crash-safe)."""
    from tqdm.auto import tqdm

    from store.compact import compact as compact_store

    folder = _store_path(config, show_config)
    bar = tqdm(desc="compact", unit="range", disable=not sys.stderr.isatty(), dynamic_ncols=True)

    def on_range(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        summary = compact_store(folder, range_width=range_width, wait=wait, on_range=on_range)
    finally:
        bar.close()
    print(summary.line())


def main() -> None:
    app(prog_name="store")


if __name__ == "__main__":
    main()
