"""``scrapy crawl`` that checks the ``pubmed`` spider's arguments, input and settings first.

Exit codes of a ``pubmed`` crawl: 0 when every PMID was stored or is not in PubMed; 1 on
a pipeline error (any PMID failed, a store write failed, the store could not be read, a
search failed, an input file has a bad line or entry); 2 on bad usage, found before
Scrapy starts and reported in one line ``error: ...`` naming the argument or setting: a
wrong combination of ``-a`` arguments, an unknown, empty or malformed one (dates), an
input file that does not exist or holds no PMID, a bad ``-s PUBMED_*`` value
(`crawler.setting_checks`). The crawl's own summary (`crawler.progress`) is its last
line; Scrapy's stats dump is printed only with ``--stats`` or ``-s LOG_LEVEL=DEBUG``
(or ``-s STATS_DUMP=True``). Everything else is Scrapy's own ``crawl`` command.

When a ``pubmed`` crawl has finished, everything it wrote is on disk and closed, so the
process ends at once instead of spending ~0.3 s tearing the interpreter down (freeing
pyarrow's and lxml's memory one object at a time); logs and output are flushed first.
With ``--profile`` the normal exit is kept, since Scrapy writes the profile after this.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from scrapy.commands.crawl import Command as ScrapyCrawl
from scrapy.settings import SETTINGS_PRIORITIES

from crawler.progress import EXIT_STAT
from crawler.query_dates import DateFilterError, date_filters
from crawler.setting_checks import SettingError, check_settings
from crawler.spiders.pubmed import InputError, PubmedSpider, check_arguments, choose_input, load_input

if TYPE_CHECKING:
    from scrapy import Spider
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

USAGE_EXIT = 2


class UsageProblem(Exception):
    """Bad usage of ``scrapy crawl pubmed``: printed as one line, exit 2."""


def check_usage(spargs: dict[str, str], settings: BaseSettings) -> list[int] | None:
    """The input PMIDs of a ``pubmed`` crawl (None for a query); `UsageProblem` for bad usage.

    Raises `InputError` (a pipeline error, exit 1) for an input file that exists but has
    a bad line or entry.
    """
    try:
        check_arguments(spargs)
        kind, value = choose_input(spargs)
        date_filters(spargs, kind)
        check_settings(settings)
    except (InputError, DateFilterError, SettingError) as exc:
        raise UsageProblem(str(exc)) from None
    if kind == "query":
        return None
    if not Path(value).is_file():
        raise UsageProblem(f"-a {kind}={value}: {'not a file' if Path(value).exists() else 'no such file'}")
    pmids = load_input(kind, value)
    if not pmids:
        raise UsageProblem(f"-a {kind}={value}: holds no PMID, nothing to crawl")
    return pmids


class Command(ScrapyCrawl):
    crawler: Crawler | None = None

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--stats",
            action="store_true",
            help="print Scrapy's stats dump at the end (also on with -s LOG_LEVEL=DEBUG)",
        )

    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        super().process_options(args, opts)
        assert self.settings is not None
        given = (self.settings.getpriority("STATS_DUMP") or 0) >= SETTINGS_PRIORITIES["cmdline"]
        debug = str(self.settings.get("LOG_LEVEL", "")).upper() == "DEBUG"
        if not given and (getattr(opts, "stats", False) or debug):
            self.settings.set("STATS_DUMP", True, priority="cmdline")

    def _create_crawler(self, spidercls: type[Spider] | str) -> Crawler:
        self.crawler = super()._create_crawler(spidercls)
        return self.crawler

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        pubmed = bool(args) and args[0] == PubmedSpider.name
        if pubmed:
            assert self.settings is not None
            try:
                check_usage(opts.spargs, self.settings)
            except UsageProblem as exc:
                sys.stderr.write(f"error: {exc}\n")
                self.exitcode = USAGE_EXIT
                return
            except InputError as exc:
                sys.stderr.write(f"error: {exc}\n")
                self.exitcode = 1
                return
        super().run(args, opts)
        if pubmed and self.crawler is not None and self.crawler.stats is not None:
            code = self.crawler.stats.get_value(EXIT_STAT)
            if code is not None:
                self.exitcode = max(self.exitcode, int(code))
        if pubmed and not getattr(opts, "profile", None):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(self.exitcode)
