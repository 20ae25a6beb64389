"""Spider ``pubmed``: fetch PubMed records by PMID list, BioASQ file or esearch query.

Exactly one input::

    scrapy crawl pubmed -a pmids=ids.txt         # one PMID or PubMed URL per line
    scrapy crawl pubmed -a bioasq=training.json  # documents + snippet documents of every question
    scrapy crawl pubmed -a query="crispr AND 2020[dp]"

PMIDs already in the store (``PUBMED_STORE``) are skipped, so a rerun after a crash
fetches only what is missing. Records are fetched with efetch POSTs of
``PUBMED_BATCH_SIZE`` PMIDs; the records of every answer are counted and PMIDs it lacked
are asked for again, up to ``PUBMED_FETCH_ROUNDS`` rounds, then reported as missing (not
in PubMed); PMIDs whose requests kept failing are reported as failed. Records of PMIDs
the batch did not ask for are dropped, and a record whose PMID is out of bounds makes
the whole answer unusable (retried like a malformed body).
Batches are cut only when the downloader has room for another request, so PMIDs to ask
for again ride along in a batch still to be cut (usually the last, partial one) instead
of costing a request of their own; once every batch is cut, they go out in smaller
batches of their own. A query is run with esearch; when it finds more than 9,999 PMIDs
(the most esearch will list) it is split by PMID range, halving the range until each
part fits (at most ``PUBMED_ESEARCH_MAX_SPLITS`` splits), and the PMIDs collected are
checked against the reported Count. Unknown or empty ``-a`` arguments are usage errors.

What other components may use (the spider's public contract; nothing else is read from
outside): ``input_kind`` and ``input_value`` (the one input), ``input_ids`` (its PMIDs in
input order; empty for a query), ``batch_size``, ``stored`` (PMIDs already live in the
store, read when ``start()`` begins), ``efetch(pmids)`` and ``esearch(span)`` (build a
request), ``request_gave_up(request, reason)``, the outcome ``missing``, ``failed``,
``store_error``, ``search_failures``, ``search_problems``, and the meta of its requests:
``pmids`` and ``round`` (0 for a start batch) on efetch, ``span`` on esearch (None for
the query itself). ``PUBMED_CUT_LAZILY`` (on by default) cuts start batches only as the
downloader has room; a component that re-cuts the start batches itself turns it off.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import scrapy
from scrapy.http import FormRequest, Request, Response
from twisted.python.failure import Failure

from crawler.pipelines import DeletedPmids
from crawler.query_dates import DATE_ARGS, date_filters
from eutils import inputs
from eutils.inputs import bioasq_pmids
from eutils.policy import ESEARCH_LIMIT
from eutils.pubmed_xml import parse_efetch
from eutils.responses import parse_esearch
from store.reader import StoreError, stored_pmids

log = logging.getLogger(__name__)

BACKOUT_POLL_S = 0.02  # how often start() looks whether the downloader has room for the next batch
USAGE = 'give exactly one of -a pmids=FILE, -a bioasq=FILE or -a query="TERM"'
INPUTS = ("pmids", "bioasq", "query")
# Arguments that narrow a query by date (passed on to esearch).
DATE_ARGUMENTS = ("mindate", "maxdate", "reldate", "datetype")
KNOWN_ARGUMENTS = INPUTS + DATE_ARGUMENTS
_email_warned = False


class InputError(ValueError):
    """A crawl input that cannot be used; the message names the argument, file and line."""


def check_arguments(args: dict[str, Any]) -> None:
    """Raise `InputError` for an unknown ``-a`` argument or an empty one (a typo like ``-a pmid=``)."""
    for name, value in args.items():
        if name not in KNOWN_ARGUMENTS:
            raise InputError(f"unknown argument -a {name}; known: {', '.join(KNOWN_ARGUMENTS)} ({USAGE})")
        if not str(value).strip():
            raise InputError(f"argument -a {name} is empty ({USAGE})")


def choose_input(args: dict[str, Any]) -> tuple[str, str]:
    """The one input of a crawl as (kind, value); raises `InputError` with the usage otherwise."""
    given = [(kind, str(args[kind])) for kind in INPUTS if args.get(kind)]
    if len(given) != 1:
        named = ", ".join(f"-a {kind}" for kind, _ in given) or "none"
        raise InputError(f"{USAGE} (got {named})")
    return given[0]


def read_pmid_file(path: str | os.PathLike[str]) -> list[int]:
    """PMIDs of a file with one PMID or PubMed URL per line (`eutils.inputs`), as an `InputError`."""
    try:
        return inputs.read_pmid_file(path)
    except inputs.InputFileError as exc:
        raise InputError(str(exc)) from None


def load_input(kind: str, value: str) -> list[int]:
    """The PMIDs of a ``pmids`` or ``bioasq`` input; raises `InputError` naming what and where."""
    if kind == "pmids":
        return read_pmid_file(value)
    if kind == "bioasq":
        if not Path(value).is_file():
            raise InputError(f"{value}: no such BioASQ file")
        try:
            return bioasq_pmids(value)
        except (OSError, ValueError) as exc:
            raise InputError(str(exc)) from None
    raise InputError(f"input {kind!r} has no PMID list")


def chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class PubmedSpider(scrapy.Spider):
    name = "pubmed"
    # Set from the crawl settings in from_crawler.
    base_url: str
    batch_size: int
    fetch_rounds: int
    max_pmid: int
    max_splits: int
    store_path: str
    cut_lazily: bool
    common_params: dict[str, str]

    def __init__(self, pmids: str | None = None, bioasq: str | None = None, query: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.input_kind, self.input_value = choose_input({"pmids": pmids, "bioasq": bioasq, "query": query})
        # EDirect's date filters (mindate/maxdate/reldate/datetype) travel with every esearch of a query.
        self.date_params = date_filters({k: kwargs.pop(k, None) for k in DATE_ARGS}, self.input_kind)
        self.input_ids: list[int] = [] if self.input_kind == "query" else load_input(self.input_kind, self.input_value)
        self.requested: dict[int, None] = dict.fromkeys(self.input_ids)
        self.stored: set[int] = set()
        self.fetched: set[int] = set()
        self.missing: dict[int, str] = {}  # not in PubMed: asked for in every round, never returned
        self.failed: dict[int, str] = {}  # requests failed (or records unusable) in every round: retried next run
        self.store_error: str | None = None
        self.search_failures: list[str] = []
        self.splits = 0
        self.queued: list[int] = []
        # PMIDs waiting for a batch to be cut, and the re-request round of those asked for again.
        self.pending: deque[int] = deque()
        self.rounds: dict[int, int] = {}
        self.cutting = False
        self.searches_pending = 0
        self.search_count: int | None = None
        self.search_problems: list[str] = []

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> PubmedSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        settings = crawler.settings
        spider.base_url = settings.get("PUBMED_EUTILS_URL").rstrip("/")
        spider.batch_size = max(1, settings.getint("PUBMED_BATCH_SIZE"))
        spider.fetch_rounds = max(1, settings.getint("PUBMED_FETCH_ROUNDS"))
        spider.max_pmid = settings.getint("PUBMED_MAX_PMID")
        spider.max_splits = settings.getint("PUBMED_ESEARCH_MAX_SPLITS")
        spider.store_path = settings.get("PUBMED_STORE")
        spider.cut_lazily = settings.getbool("PUBMED_CUT_LAZILY", True)
        params = {"tool": settings.get("PUBMED_TOOL"), "email": settings.get("NCBI_EMAIL")}
        global _email_warned
        if not params["email"] and not _email_warned:
            _email_warned = True
            log.warning("NCBI_EMAIL is not set: NCBI asks every E-utilities client for a contact address")
        # The key comes from the environment only and travels in POST bodies, never in URLs or logs.
        params["api_key"] = os.environ.get("NCBI_API_KEY", "")
        spider.common_params = {k: v for k, v in params.items() if v}
        return spider

    # ------------------------------------------------------------------ requests

    def _post(self, utility: str, meta: dict[str, Any], priority: int = 0, **params: str) -> FormRequest:
        callback, errback = (
            (self.parse_efetch, self.efetch_failed)
            if utility == "efetch"
            else (self.parse_esearch, self.esearch_failed)
        )
        return FormRequest(
            f"{self.base_url}/{utility}.fcgi",
            formdata={"db": "pubmed", **params, **self.common_params},
            callback=callback,
            errback=errback,
            meta=meta,
            priority=priority,
            dont_filter=True,
        )

    def efetch(self, pmids: list[int]) -> FormRequest:
        """An efetch batch; ``meta["rounds"]`` carries the round of each PMID asked for again."""
        rounds = {p: r for p in pmids if (r := self.rounds.pop(p, 0))}
        meta = {"pmids": pmids, "rounds": rounds, "round": max(rounds.values(), default=0)}
        return self._post("efetch", meta, id=",".join(map(str, pmids)), retmode="xml")

    def esearch(self, span: tuple[int, int] | None, *, counted: bool = True) -> FormRequest:
        """An esearch of the query (``span`` None) or of one PMID range of it.

        ``counted``: the crawl waits for its answer before cutting the last batches; False
        for a request rebuilt from a queue entry, counted where it was first asked for.
        """
        if counted:
            self.searches_pending += 1
        term = self.input_value if span is None else f"({self.input_value}) AND {span[0]}:{span[1]}[uid]"
        # Searches go first: their PMIDs feed the efetch batches.
        return self._post(
            "esearch", {"span": span}, 10, term=term, retstart="0", retmax=str(ESEARCH_LIMIT), **self.date_params
        )

    async def start(self) -> AsyncIterator[Any]:
        try:
            self.stored = stored_pmids(self.store_path)
        except StoreError as exc:
            self.store_error = str(exc)
            log.error(
                "cannot read the store %s: %s; nothing fetched (fix or move it, then rerun)", self.store_path, exc
            )
            return
        if self.input_kind == "query":
            yield self.esearch(None)
            return
        todo = [p for p in self.requested if p not in self.stored]
        self._stat("pubmed/requested", len(self.requested))
        self._stat("pubmed/already_stored", len(self.requested) - len(todo))
        log.info(
            "%s: %d PMIDs, %d already in %s, %d to fetch",
            self.input_value,
            len(self.requested),
            len(self.requested) - len(todo),
            self.store_path,
            len(todo),
        )
        if not self.cut_lazily:
            for batch in chunks(todo, self.batch_size):
                yield self.efetch(batch)
            return
        self.pending.extend(todo)
        self.cutting = True
        try:
            async for request in self._cut_batches():
                yield request
        finally:
            self.cutting = False

    async def _cut_batches(self) -> AsyncIterator[Request]:
        """Cut ``pending`` into batches, one whenever the downloader can take another request."""
        engine = self.crawler.engine
        while self.pending:
            while engine is not None and engine.needs_backout() and engine.running:
                await asyncio.sleep(BACKOUT_POLL_S)
            size = min(self.batch_size, len(self.pending))
            yield self.efetch([self.pending.popleft() for _ in range(size)])

    def _stat(self, key: str, value: int = 1, *, set_: bool = True) -> None:
        stats = self.crawler.stats
        assert stats is not None
        if set_:
            stats.set_value(key, value)
        else:
            stats.inc_value(key, value)

    # ------------------------------------------------------------------ efetch

    def parse_efetch(self, response: Response) -> list[Any]:
        result = parse_efetch(response.body)  # MalformedXMLError / EutilsError: retried by middleware
        wanted: list[int] = response.meta["pmids"]
        asked = set(wanted)
        out: list[Any] = []
        deleted = [p for p in result.deleted if p in asked]
        if deleted:
            out.append(DeletedPmids(deleted))
        returned: set[int] = set()
        foreign = [row["pmid"] for row in result.articles if row["pmid"] not in asked]
        foreign += [p for p in result.deleted if p not in asked]
        if foreign:
            self._stat("pubmed/unexpected_pmids", len(foreign), set_=False)
            log.warning(
                "efetch answer held %d PMIDs the batch did not ask for (dropped): %s", len(foreign), foreign[:5]
            )
        for row in result.articles:
            pmid = row["pmid"]
            if pmid not in asked:
                continue
            returned.add(pmid)
            if pmid not in self.fetched:
                self.fetched.add(pmid)
                out.append(row)
        self._stat("pubmed/fetched", len(self.fetched))
        lacking = [p for p in wanted if p not in returned]
        if lacking:
            self._stat("pubmed/short_batches", set_=False)
            out.extend(self._fetch_again(lacking, response.meta.get("rounds", {}), "not returned by efetch"))
        return out

    def _fetch_again(
        self, pmids: Iterable[int], rounds: dict[int, int], reason: str, *, failed: bool = False
    ) -> Iterator[Request]:
        """Ask again for PMIDs an answer lacked, until their rounds run out.

        While batches are still being cut they join the PMIDs waiting for one; after
        that they go out in batches of their own, halved with every round.
        """
        again: list[int] = []
        given_up: list[int] = []
        for pmid in pmids:
            if pmid in self.fetched:
                continue
            round_ = rounds.get(pmid, 0) + 1
            if round_ >= self.fetch_rounds:
                given_up.append(pmid)
                if failed:
                    self.missing.pop(pmid, None)
                    self.failed[pmid] = reason
                else:
                    self.failed.pop(pmid, None)
                    self.missing[pmid] = reason
            else:
                self.rounds[pmid] = round_
                again.append(pmid)
        if given_up:
            self._stat("pubmed/missing", len(self.missing))
            self._stat("pubmed/failed", len(self.failed))
            log.info("%d PMIDs given up after %d rounds (%s)", len(given_up), self.fetch_rounds, reason)
        if not again:
            return
        self._stat("pubmed/refetched", len(again), set_=False)
        if self.cutting:
            self.pending.extend(again)
            return
        by_round: dict[int, list[int]] = {}
        for pmid in again:
            by_round.setdefault(self.rounds[pmid], []).append(pmid)
        for round_, group in sorted(by_round.items()):
            for batch in chunks(group, max(1, self.batch_size >> round_)):
                yield self.efetch(batch)

    def efetch_failed(self, failure: Failure) -> Iterator[Request]:
        request = failure.request  # type: ignore[attr-defined]
        return self.request_gave_up(request, failure.getErrorMessage())

    def request_gave_up(self, request: Request, reason: str) -> Iterator[Request]:
        """Retries of ``request`` ran out (called by the errbacks and the parse-error middleware)."""
        if "pmids" in request.meta:
            log.warning("efetch of %d PMIDs failed: %s", len(request.meta["pmids"]), reason)
            rounds = request.meta.get("rounds", {})
            yield from self._fetch_again(request.meta["pmids"], rounds, f"efetch failed: {reason}", failed=True)
            return
        span = request.meta.get("span")
        self.search_failures.append(f"esearch {span or 'query'} failed: {reason}")
        self.searches_pending -= 1
        yield from self._search_done()

    # ------------------------------------------------------------------ esearch

    def parse_esearch(self, response: Response) -> Iterator[Request]:
        result = parse_esearch(response.body)  # EutilsError: retried by middleware
        span: tuple[int, int] | None = response.meta["span"]
        self.searches_pending -= 1
        if span is None:
            self.search_count = result.count
            self._stat("pubmed/esearch_count", result.count)
            log.info("esearch %r: Count %d", self.input_value, result.count)
        if result.count > ESEARCH_LIMIT:
            lo, hi = span or (1, self.max_pmid)
            if lo < hi and self.splits >= self.max_splits:
                if not any("PUBMED_ESEARCH_MAX_SPLITS" in f for f in self.search_failures):
                    self.search_failures.append(
                        f"esearch {self.input_value!r} needed more than PUBMED_ESEARCH_MAX_SPLITS={self.max_splits} "
                        "PMID-range splits; narrow the query (dates, terms) or raise the setting"
                    )
            elif lo < hi:
                self.splits += 1
                mid = (lo + hi) // 2
                self._stat("pubmed/esearch_splits", set_=False)
                yield self.esearch((lo, mid))
                yield self.esearch((mid + 1, hi))
            else:
                self.search_failures.append(f"PMID {lo} alone matches {result.count} records")
        else:
            if len(result.ids) != result.count:
                self.search_problems.append(f"range {span}: Count {result.count} but {len(result.ids)} PMIDs listed")
            for pmid in result.ids:
                if pmid not in self.requested:
                    self.requested[pmid] = None
                    if pmid not in self.stored:
                        self.queued.append(pmid)
            while len(self.queued) >= self.batch_size:
                batch, self.queued = self.queued[: self.batch_size], self.queued[self.batch_size :]
                yield self.efetch(batch)
        yield from self._search_done()

    def esearch_failed(self, failure: Failure) -> Iterator[Request]:
        return self.request_gave_up(failure.request, failure.getErrorMessage())  # type: ignore[attr-defined]

    def _search_done(self) -> Iterator[Request]:
        if self.searches_pending > 0:
            return
        if self.queued:
            batches, self.queued = list(chunks(self.queued, self.batch_size)), []
            for batch in batches:
                yield self.efetch(batch)
        found = len(self.requested)
        already = sum(1 for p in self.requested if p in self.stored)
        self._stat("pubmed/requested", found)
        self._stat("pubmed/already_stored", already)
        self._stat("pubmed/esearch_ids", found)
        if self.search_count is not None and found != self.search_count:
            self.search_problems.append(f"esearch Count was {self.search_count} but {found} PMIDs were collected")
        for problem in self.search_problems:
            log.warning("%s", problem)
        for failure in self.search_failures:
            log.error("%s", failure)
        log.info(
            "esearch %r: %d PMIDs collected (Count %s), %d already stored",
            self.input_value,
            found,
            self.search_count,
            already,
        )
