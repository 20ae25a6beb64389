"""``python -m crawler.baseline``: load baseline / update files, or download them from NCBI first.

``python -m crawler.baseline FILES... [--store DIR]`` loads files already on disk
(`crawler.baseline_load`). ``python -m crawler.baseline --download [--since YYYY-MM-DD]
[--updates-only] [--base-url URL] [--workers N]`` reads NCBI's listings, downloads what the
store lacks and loads it as it arrives (`crawler.baseline_download`). The store folder and
rows per part default to ``[store] path`` and ``part_rows`` of pipeline.toml. The command
follows `store.cli_contract`: exit 0 when every file loaded, 1 when any failed, 2 on bad
usage (a missing input file, a bad flag or config value); ``--version``, ``--show-config``.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Annotated

import typer

from crawler.baseline_load import (
    BaselineError,
    Loader,
    LoadSummary,
    expected_md5,
    file_markers,
    file_md5,
    load_file,
    load_files,
    md5_from_text,
    verify_md5,
)
from store.cli_contract import (
    UsageProblem,
    config_option,
    load_stage,
    make_app,
    show_config_option,
    version_option,
)
from store.config import StoreConfig

__all__ = [
    "BaselineError",
    "LoadSummary",
    "Loader",
    "app",
    "expected_md5",
    "file_md5",
    "load_file",
    "load_files",
    "md5_from_text",
    "verify_md5",
]


def _pipeline_errors() -> tuple[type[BaseException], ...]:
    return (BaselineError, ValueError, OSError)  # ValueError: MalformedXMLError, SchemaError


app = make_app("Load PubMed baseline / update XML files into the article store.", _pipeline_errors, group=False)

_DOWNLOAD_ONLY = ("--since", "--updates-only", "--base-url", "--workers", "--keep-files", "--tries", "--retries")


def _since(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected a date as YYYY-MM-DD, got {value!r}", param_hint="--since") from None


@app.command()
def main(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="Baseline or update files (.xml.gz or .xml), loaded in this order (not with --download)."),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            "--store", help="Store folder to load into.", show_default="[store] path of pipeline.toml, else data/pubmed"
        ),
    ] = None,
    download: Annotated[
        bool, typer.Option("--download", help="Fetch the files from NCBI's listings instead (see --base-url).")
    ] = False,
    since: Annotated[
        str | None, typer.Option("--since", metavar="YYYY-MM-DD", help="Only files listed on or after this date.")
    ] = None,
    updates_only: Annotated[
        bool, typer.Option("--updates-only", help="Skip the annual baseline; fetch the daily update files only.")
    ] = False,
    base_url: Annotated[
        str, typer.Option("--base-url", help="Folder holding baseline/ and updatefiles/.")
    ] = "https://ftp.ncbi.nlm.nih.gov/pubmed/",
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=8, help="Parallel downloads (connections to the server).")
    ] = 3,
    keep_files: Annotated[
        bool,
        typer.Option("--keep-files/--no-keep-files", help="Keep downloaded files in <store>/_download/ once loaded."),
    ] = False,
    require_md5: Annotated[
        bool | None,
        typer.Option(
            "--require-md5/--no-require-md5",
            help="Refuse a file without a .md5 checksum. Default: on with --download, off for local files.",
            show_default=False,
        ),
    ] = None,
    tries: Annotated[
        int, typer.Option("--tries", min=1, help="Downloads of a file whose MD5 mismatches before it fails.")
    ] = 3,
    retries: Annotated[
        int, typer.Option("--retries", min=0, help="Resumed attempts per file after a dropped connection or 5xx.")
    ] = 5,
    email: Annotated[
        str | None,
        typer.Option(
            "--email", help="Contact email sent with every request (default: NCBI_EMAIL, as for E-utilities)."
        ),
    ] = None,
    part_rows: Annotated[
        int | None,
        typer.Option("--part-rows", help="Rows per Parquet part.", show_default="[store] part_rows, else 10000"),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each file's progress.")] = False,
    config: Annotated[Path | None, config_option("store")] = None,
    show_config: Annotated[bool, show_config_option()] = False,
    show_version: Annotated[bool, version_option()] = False,
) -> None:
    """Load PubMed baseline / update XML files into the article store, applying their deletions.

    With FILES: load those files in order; a sibling FILE.md5 is checked when present.
    With --download: read NCBI's baseline/ and updatefiles/ listings, download what the
    store lacks (resuming partial files, checking every MD5) and load each file in order
    as it arrives. Either way, files already loaded (see <store>/_loaded/) are skipped, so
    the same command can be rerun after a failure; exit 1 when any file failed.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    cfg = load_stage(StoreConfig, "store", config, renames={"store": "path"}, show=show_config).config
    folder, rows = Path(cfg.path), cfg.part_rows
    files = files or []
    if download:
        if files:
            _usage("give FILES or --download, not both")
        _download(
            folder,
            _since(since),
            updates_only,
            base_url,
            workers,
            keep_files,
            require_md5 is not False,
            tries,
            retries,
            email,
            rows,
        )
        return
    if not files:
        _usage("give the FILES to load, or --download to fetch them from NCBI")
    given = [
        flag
        for flag, value in zip(
            _DOWNLOAD_ONLY,
            (
                since,
                updates_only,
                base_url != "https://ftp.ncbi.nlm.nih.gov/pubmed/",
                workers != 3,
                keep_files,
                tries != 3,
                retries != 5,
            ),
            strict=True,
        )
        if value
    ]
    if given:
        _usage(f"{given[0]} needs --download")
    missing = [str(p) for p in files if not p.is_file() and not file_markers(folder, p.name)[0].exists()]
    if missing:
        _usage(f"FILES: no such file: {missing[0]}")
    summary = load_files(files, folder, part_rows=rows, require_md5=bool(require_md5))
    typer.echo(summary.line())


def _usage(message: str) -> None:
    raise UsageProblem(f"{message} (see --help)")


def _download(
    store: Path,
    since: dt.date | None,
    updates_only: bool,
    base_url: str,
    workers: int,
    keep_files: bool,
    require_md5: bool,
    tries: int,
    retries: int,
    email: str | None,
    part_rows: int,
) -> None:
    from crawler import settings  # the E-utilities identity: one tool name and email for every request to NCBI
    from crawler.baseline_download import DownloadOptions, download_and_load
    from eutils.request import Identity

    options = DownloadOptions(
        identity=Identity(settings.PUBMED_TOOL, settings.NCBI_EMAIL if email is None else email),
        base_url=base_url,
        since=since,
        updates_only=updates_only,
        workers=workers,
        keep_files=keep_files,
        require_md5=require_md5,
        tries=tries,
        retries=retries,
        part_rows=part_rows,
    )
    summary = download_and_load(store, options)
    for failure in summary.failures:
        typer.echo(f"error: {failure}", err=True)
    typer.echo(summary.line())
    if summary.failures:
        raise typer.Exit(1)


if __name__ == "__main__":
    app(prog_name="python -m crawler.baseline")
