"""``scrapy crawl`` that checks the ``pubmed`` spider's arguments and input file before starting.

A wrong combination of ``-a`` arguments, an unknown or empty argument, or an input that
holds no PMID is a usage error (exit 2, one line); an input file that cannot be read or
has a bad line is a one-line error naming file and line (exit 1). Everything else is
Scrapy's own ``crawl`` command. A ``pubmed`` crawl then exits with the code its summary
decided (`crawler.progress.exit_code`): 0 when every PMID was stored or is not in
PubMed, 1 when any failed, a write failed or the store could not be read.

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
from typing import TYPE_CHECKING

from scrapy.commands.crawl import Command as ScrapyCrawl
from scrapy.exceptions import UsageError

from crawler.progress import EXIT_STAT
from crawler.query_dates import DateFilterError, date_filters
from crawler.spiders.pubmed import InputError, PubmedSpider, check_arguments, choose_input, load_input

if TYPE_CHECKING:
    from scrapy import Spider
    from scrapy.crawler import Crawler


class Command(ScrapyCrawl):
    crawler: Crawler | None = None

    def _create_crawler(self, spidercls: type[Spider] | str) -> Crawler:
        self.crawler = super()._create_crawler(spidercls)
        return self.crawler

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        pubmed = bool(args) and args[0] == PubmedSpider.name
        if pubmed:
            try:
                check_arguments(opts.spargs)
                kind, value = choose_input(opts.spargs)
                date_filters(opts.spargs, kind)
            except (InputError, DateFilterError) as exc:
                raise UsageError(str(exc), print_help=False) from None
            if kind != "query":
                try:
                    pmids = load_input(kind, value)
                except InputError as exc:
                    sys.stderr.write(f"error: {exc}\n")
                    self.exitcode = 1
                    return
                if not pmids:
                    raise UsageError(f"-a {kind}={value}: holds no PMID, nothing to crawl", print_help=False)
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
