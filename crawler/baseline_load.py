"""Loads PubMed annual baseline and daily update files into the article store.

`load_files` (``python -m crawler.baseline FILES...``) streams each
``pubmedYYnNNNN.xml.gz`` (or plain ``.xml``) through `eutils.pubmed_xml`, so memory
stays flat however big the file, and applies its ``DeleteCitation`` PMIDs as deletions.

Files are loaded in the order given, each one all-or-nothing:

1. a sibling ``FILE.md5`` (NCBI's ``MD5(name)= hex``) is checked first when present;
2. rows are written as Parquet parts into ``<store>/_staging/<name>/`` (invisible to
   readers);
3. once the whole file has parsed, the list of its parts is recorded in
   ``<store>/_loaded/<name>.publishing.json`` and the parts are renamed into
   ``articles/`` and ``deletions/``;
4. ``<store>/_loaded/<name>.done`` is written atomically.

A rerun skips files with a ``.done`` marker, finishes a publication a crash interrupted,
and restarts a file whose parsing never completed. A bad file (checksum mismatch,
truncated or malformed XML) stops the run with exit status 1 and publishes nothing of it.
`stage_stream` (step 2, from any stream) and `publish_staged` (steps 3 and 4) also serve a
download that stages a file while its bytes arrive and publishes it only once its checksum
has verified (`crawler.baseline_follow`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from eutils.pubmed_xml import Article, iter_pubmed_records
from store.atomic import atomic_write_json, fsync_dir
from store.writer import ARTICLES_DIR, DELETIONS_DIR, ArticleWriter

log = logging.getLogger(__name__)

LOADED_DIR = "_loaded"
STAGING_DIR = "_staging"
DEFAULT_STORE = Path("data/pubmed")
_MD5_LINE = re.compile(
    r"^\s*MD5\s*\((?P<name>.+)\)\s*=\s*(?P<hex>[0-9a-fA-F]{32})\s*$"  # NCBI: MD5(file)= hex
    r"|^\s*(?P<hex2>[0-9a-fA-F]{32})\s+\*?(?P<name2>\S.*)$"  # md5sum: hex  file
)


class BaselineError(RuntimeError):
    """A baseline file could not be loaded; the message names the file and the reason."""


@dataclass
class LoadSummary:
    """What one `load_files` call did."""

    files: int = 0
    skipped: int = 0
    articles: int = 0
    deletions: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        skipped = f" ({self.skipped} already loaded, skipped)" if self.skipped else ""
        return (
            f"baseline: {self.files} files loaded{skipped}, {self.articles:,} articles, "
            f"{self.deletions:,} deletions in {self.seconds:.1f} s"
        )


def md5_from_text(text: str, where: str) -> str:
    """The checksum in the text of an NCBI ``.md5`` file (``MD5(name)= hex``, or md5sum style)."""
    text = text.strip()
    match = _MD5_LINE.match(text.splitlines()[0] if text else "")
    if not match:
        raise BaselineError(f"{where}: not an MD5 checksum file (expected 'MD5(name)= <32 hex digits>')")
    return (match.group("hex") or match.group("hex2")).lower()


def expected_md5(md5_file: Path) -> str:
    """The checksum recorded in an NCBI ``.md5`` file."""
    return md5_from_text(md5_file.read_text(encoding="utf-8", errors="replace"), str(md5_file))


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(path: Path, *, require: bool = False) -> str | None:
    """Check ``path`` against ``path.md5`` when that file exists; returns the checksum or None.

    With ``require`` a file without a ``.md5`` beside it is refused.
    """
    md5_file = path.with_name(path.name + ".md5")
    if not md5_file.exists():
        if require:
            raise BaselineError(
                f"{path}: no checksum ({md5_file.name} missing); not loaded. "
                "Rerun with --no-require-md5 to load files without a checksum"
            )
        return None
    want = expected_md5(md5_file)
    got = file_md5(path)
    if got != want:
        raise BaselineError(f"{path}: MD5 mismatch (file {got}, {md5_file.name} says {want}); file not loaded")
    return got


class _CountingReader(io.RawIOBase):
    """A raw reader that reports the bytes it hands out to a progress bar."""

    def __init__(self, handle: Any, bar: tqdm) -> None:
        self._handle = handle
        self._bar = bar

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n: int = self._handle.readinto(buffer)
        self._bar.update(n)
        return n

    def close(self) -> None:
        self._handle.close()
        super().close()


def file_markers(store: Path, name: str) -> tuple[Path, Path, Path]:
    """Where ``store`` keeps file ``name``'s state: (``.done`` marker, ``.publishing.json`` plan, staging folder)."""
    loaded = store / LOADED_DIR
    return loaded / f"{name}.done", loaded / f"{name}.publishing.json", store / STAGING_DIR / name


def drop_staging(staging: Path) -> None:
    """Delete one file's staging folder, and ``_staging/`` itself once no other file is staged there."""
    shutil.rmtree(staging, ignore_errors=True)
    with contextlib.suppress(OSError):
        staging.parent.rmdir()  # only when no other file is being staged


def _publish(store: Path, plan_path: Path, staging: Path, done: Path) -> dict[str, Any]:
    """Move the staged parts listed in ``plan_path`` into the store, then mark the file done."""
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    for kind in (ARTICLES_DIR, DELETIONS_DIR):
        target = store / kind
        target.mkdir(parents=True, exist_ok=True)
        for part in plan["parts"][kind]:
            src = staging / kind / part
            if src.exists():  # a part already moved by an interrupted run is simply done
                os.replace(src, target / part)
        fsync_dir(target)
    plan["loaded_at"] = dt.datetime.now(dt.UTC).isoformat()
    atomic_write_json(done, plan)
    plan_path.unlink()
    drop_staging(staging)
    return dict(plan)


def stage_stream(stream: BinaryIO, name: str, staging: Path, part_rows: int, fetched_at: dt.datetime) -> dict[str, Any]:
    """Parse the file read from ``stream`` into Parquet parts under ``staging``; returns its publication plan.

    Nothing is published: `publish_staged` does that. A parse error raises with the
    parts written so far still in ``staging``; the caller drops them.
    """
    writer = ArticleWriter(staging, part_rows=part_rows)
    articles = deletions = 0
    for item in iter_pubmed_records(stream, source="baseline", fetched_at=fetched_at, name=name):
        if isinstance(item, Article):
            writer.write(item.row)
            articles += 1
        else:
            writer.delete(item.pmids, "baseline")
            deletions += len(item.pmids)
    writer.flush()  # only reached when the whole file parsed: nothing of a bad file is staged for publication
    parts: dict[str, list[str]] = {ARTICLES_DIR: [], DELETIONS_DIR: []}
    for part in writer.parts_written:
        parts[part.parent.name].append(part.name)
    return {"file": Path(name).name, "parts": parts, "articles": articles, "deletions": deletions}


def publish_staged(store: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """Publish the parts `stage_stream` staged for ``plan["file"]`` and mark the file done; returns its record."""
    done, plan_path, staging = file_markers(store, plan["file"])
    (store / LOADED_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan_path, plan)
    return _publish(store, plan_path, staging, done)


def discard_staged(store: Path, name: str) -> None:
    """Drop what was staged for ``name`` without publishing it."""
    drop_staging(file_markers(store, name)[2])


def load_file(
    path: Path,
    store: Path,
    *,
    part_rows: int = 10_000,
    fetched_at: dt.datetime | None = None,
    require_md5: bool = False,
    checked_md5: str | None = None,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Load one file into ``store``; returns its record (counts, parts) or None when already loaded.

    ``checked_md5``: the caller has just verified the file against this checksum (a
    download), so it is not read twice. ``progress``: a per-file bar on a terminal.
    """
    done, plan_path, staging = file_markers(store, path.name)
    if done.exists():
        log.info("%s: already loaded (%s), skipped", path, done)
        return None
    if plan_path.exists():
        log.info("%s: finishing an interrupted publication", path)
        return _publish(store, plan_path, staging, done)
    if not path.is_file():
        raise BaselineError(f"{path}: no such file")
    if staging.exists():
        shutil.rmtree(staging)  # parts of a load that never finished parsing
    md5 = checked_md5 or verify_md5(path, require=require_md5)
    stamp = fetched_at or dt.datetime.now(dt.UTC)
    bar = tqdm(
        total=path.stat().st_size,
        unit="B",
        unit_scale=True,
        desc=path.name,
        disable=not (progress and sys.stderr.isatty()),
    )
    try:
        with open(path, "rb", buffering=0) as raw:
            stream = io.BufferedReader(_CountingReader(raw, bar), buffer_size=1 << 20)
            plan = stage_stream(stream, str(path), staging, part_rows, stamp)
    except BaseException:
        drop_staging(staging)
        raise
    finally:
        bar.close()
    plan["md5"] = md5
    return publish_staged(store, plan)


class Loader:
    """Loads files one after another into one store, each stamped after the one before.

    Each file's rows are stamped after the previous file's deletions, so a PMID that a
    later update file brings back is not hidden by an earlier DeleteCitation.
    """

    def __init__(
        self,
        store: Path,
        *,
        part_rows: int = 10_000,
        require_md5: bool = False,
        progress: bool = True,
        run: Callable[..., dict[str, Any] | None] | None = None,
    ):
        """``run`` replaces the in-process `load_file` call (same arguments), e.g. to load in another process."""
        self.store = Path(store)
        self.run = run or load_file
        self.part_rows = part_rows
        self.require_md5 = require_md5
        self.progress = progress
        self.summary = LoadSummary()
        self._last: dt.datetime | None = None

    def load(self, path: Path, *, checked_md5: str | None = None) -> dict[str, Any] | None:
        """Load ``path`` (see `load_file`), counting it in ``summary``; None when already loaded."""
        return self.load_with(
            lambda stamp: self.run(
                Path(path),
                self.store,
                part_rows=self.part_rows,
                fetched_at=stamp,
                require_md5=self.require_md5,
                checked_md5=checked_md5,
                progress=self.progress,
            )
        )

    def load_with(self, load: Callable[[dt.datetime], dict[str, Any] | None]) -> dict[str, Any] | None:
        """Run ``load(stamp)``, which loads one file with rows stamped ``stamp``, counting its record."""
        started = time.perf_counter()
        stamp = dt.datetime.now(dt.UTC)
        if self._last is not None and stamp <= self._last:
            stamp = self._last + dt.timedelta(milliseconds=1)
        try:
            record = load(stamp)
        finally:
            self._last = max(dt.datetime.now(dt.UTC), stamp + dt.timedelta(milliseconds=1))
            self.summary.seconds += time.perf_counter() - started
        if record is None:
            self.summary.skipped += 1
        else:
            self.summary.files += 1
            self.summary.articles += int(record["articles"])
            self.summary.deletions += int(record["deletions"])
        return record


def load_files(
    paths: Sequence[Path], store: Path = DEFAULT_STORE, *, part_rows: int = 10_000, require_md5: bool = False
) -> LoadSummary:
    """Load ``paths`` in order into ``store``; raises `BaselineError` / `MalformedXMLError` on a bad file."""
    started = time.perf_counter()
    loader = Loader(Path(store), part_rows=part_rows, require_md5=require_md5)
    for path in paths:
        loader.load(Path(path))
    loader.summary.seconds = time.perf_counter() - started
    return loader.summary
