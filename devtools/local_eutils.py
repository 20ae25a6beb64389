"""A local E-utilities server (efetch + esearch) with fault injection, for tests and benchmarks.

It answers like NCBI from real PubMed records and can misbehave on demand, so the crawler
and the aiohttp client are tested against real HTTP rather than mocks.

Endpoints (GET and POST, form or query parameters, under ``/entrez/eutils``):

- ``efetch.fcgi?db=pubmed&id=1,2,3`` -> a ``PubmedArticleSet`` holding exactly the
  requested PMIDs the server has, in request order; unknown PMIDs are silently absent (as
  NCBI does). Records come from real fixture files (``records``); with ``synthesize=True``
  any other PMID is served from a real template record with its PMID replaced.
- ``esearch.fcgi?db=pubmed&term=Q&retstart=&retmax=`` -> ``eSearchResult`` with Count,
  RetStart, RetMax and IdList (descending PMIDs). ``queries`` maps a term to its PMIDs.
  ``Q AND lo:hi[uid]`` (also parenthesised, repeated) restricts to a PMID range, so the
  EDirect-style range split can be tested. ``retstart`` above 9,998 gets NCBI's error
  inside HTTP 200; ``retmode=json`` answers JSON.
- ``/_log`` -> the request log and counters as JSON (for a server in another process).

Misbehaviour, per server:

- ``rate_limit=N``: at most N served requests in any sliding 1-second window; requests
  above it get ``429`` with ``Retry-After: 1`` and the JSON body NCBI sends; counted in
  ``rate_limited``. Every answer carries ``X-RateLimit-Limit`` / ``X-RateLimit-Remaining``.
- ``faults={n: kind}``: the n-th E-utilities request (1-based, efetch and esearch
  together) gets fault ``kind``; ``fault_rate`` with ``fault_kinds`` and ``seed`` draws
  faults at random for efetch requests. Kinds (`FAULT_KINDS`): ``429`` (with
  ``Retry-After: retry_after``), ``500``/``502``/``503``, ``truncated`` (200, body cut in
  half), ``error_xml`` (200, ``<eFetchResult><ERROR>``), ``error_json`` (200,
  ``{"error": ...}``), ``short`` (200, the last third of the requested records left out,
  once), ``hang`` (sleeps ``hang_seconds`` before answering) and ``drop`` (connection
  closed without an answer). Hostile kinds: ``foreign_pmid`` (200, the answer also holds
  a record nobody asked for), ``huge_pmid`` (200, plus a record whose PMID is 10^20),
  ``deep`` (200, plus a record nested 1,200 elements deep), ``gzip_bomb`` (200,
  ``Content-Encoding: gzip`` of 100 MiB of zeros) and ``count_too_large`` (esearch:
  ``Count`` 10^6 for every term and range, no PMIDs). ``fault_all=kind`` gives every
  request that fault.
- ``jitter=S``: every request waits a random 0-S seconds before the server reads it (and
  logs its arrival and counts it against ``rate_limit``), like a jittery network.
- ``redirect_to=URL``: every E-utilities request is answered ``307`` to ``URL`` plus
  its path and query (see `devtools.local_recorder` for a server that records what
  reaches it).

Use from Python (the server runs on its own thread and event loop)::

    with LocalEutils(load_records(["tests/data/pubmed"]), rate_limit=3) as server:
        server.url            # "http://127.0.0.1:PORT/entrez/eutils"
        server.requests()     # list[LoggedRequest]: time, endpoint, ids, status, fault
        server.rate_limited   # 429s served by the rate limit

or from a shell: ``python -m devtools.local_eutils --port 8089 --articles tests/data/pubmed``.
Only loopback addresses are ever bound. Where allowed, the server thread runs at a raised
priority (nice -10), so that a busy machine does not distort the arrival times it logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any

import typer
from aiohttp import web
from lxml import etree

from eutils import policy

log = logging.getLogger(__name__)

FAULT_KINDS = (
    "429",
    "500",
    "502",
    "503",
    "truncated",
    "error_xml",
    "error_json",
    "short",
    "hang",
    "drop",
    "foreign_pmid",
    "huge_pmid",
    "deep",
    "gzip_bomb",
    "count_too_large",
)
HUGE_PMID = 10**20
DEEP_LEVELS = 1200
BOMB_BYTES = 100 * 1024 * 1024
_bomb: bytes | None = None


def gzip_bomb() -> bytes:
    """100 MiB of zeros, gzipped (about 100 KB), made once per process."""
    global _bomb
    if _bomb is None:
        _bomb = gzip.compress(bytes(BOMB_BYTES), compresslevel=9)
    return _bomb


ESEARCH_LIMIT = policy.ESEARCH_LIMIT
BASE_PATH = "/entrez/eutils"

_HEAD = (
    b'<?xml version="1.0" ?>\n'
    b'<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" '
    b'"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n'
    b"<PubmedArticleSet>\n"
)
_TAIL = b"</PubmedArticleSet>\n"
_RANGE = re.compile(r"^(?P<rest>.*?)\s+AND\s+(?P<lo>\d+):(?P<hi>\d+)\[uid\]\s*$", re.I | re.S)
_RETSTART_ERROR = (
    "Search Backend failed: Exception:\n'retstart' cannot be larger than 9998. For PubMed, ESearch can only "
    "retrieve the first 9,999 records matching the query. To obtain more than 9,999 PubMed records, consider "
    "using EDirect that contains additional logic to batch PubMed search results automatically so that an "
    "arbitrary number can be retrieved."
)


@dataclass
class LoggedRequest:
    """One request as the server saw it (``time`` is ``time.time()`` at arrival)."""

    time: float
    method: str
    endpoint: str
    ids: list[int]
    term: str | None
    status: int
    fault: str | None
    rate_limited: bool
    api_key: str | None = None
    tool: str | None = None
    email: str | None = None
    returned: int = 0
    params: dict[str, str] = field(default_factory=dict)  # every parameter but api_key (kept apart above)
    user_agent: str | None = None


def _record_pmid(elem: etree._Element) -> int | None:
    text = elem.findtext("MedlineCitation/PMID") or elem.findtext("BookDocument/PMID")
    if text is None or not text.strip().isdigit():
        return None
    return int(text.strip())


def _iter_files(paths: Iterable[str | Path]) -> Iterable[Path]:
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.name.endswith((".xml", ".xml.gz")))
        else:
            yield path


def load_records(paths: Iterable[str | Path]) -> dict[int, bytes]:
    """PMID -> serialized ``PubmedArticle``/``PubmedBookArticle`` from XML files or folders.

    Files that hold no PubMed records (esearch answers, epost answers) are skipped; a later
    record of the same PMID replaces an earlier one.
    """
    records: dict[int, bytes] = {}
    for path in _iter_files(paths):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as handle:
            try:
                for _, elem in etree.iterparse(
                    handle, events=("end",), tag=("PubmedArticle", "PubmedBookArticle"), resolve_entities=False
                ):
                    pmid = _record_pmid(elem)
                    if pmid is not None:
                        records[pmid] = etree.tostring(elem, encoding="utf-8")
                    elem.clear()
            except etree.XMLSyntaxError as exc:
                log.debug("skipping %s: %s", path, exc)
    return records


class _Template:
    """A real record whose PMID can be swapped for any other, for synthetic records."""

    def __init__(self, pmid: int, record: bytes) -> None:
        self.parts = record.split(b">%d<" % pmid)

    def render(self, pmid: int) -> bytes:
        return (b">%d<" % pmid).join(self.parts)


@dataclass
class _Counters:
    rate_limited: int = 0
    faults: Counter[str] = field(default_factory=Counter)


class LocalEutils:
    """A local E-utilities server on 127.0.0.1 (port 0 picks a free port); see module docs."""

    def __init__(
        self,
        records: Mapping[int, bytes] | None = None,
        *,
        synthesize: bool = False,
        template_pmid: int | None = None,
        unavailable: Iterable[int] = (),
        queries: Mapping[str, Sequence[int]] | None = None,
        rate_limit: int | None = None,
        faults: Mapping[int, str] | None = None,
        fault_rate: float = 0.0,
        fault_kinds: Sequence[str] = ("500", "truncated", "error_xml", "short"),
        seed: int = 0,
        retry_after: float = 1.0,
        hang_seconds: float = 30.0,
        fault_all: str | None = None,
        jitter: float = 0.0,
        redirect_to: str | None = None,
        port: int = 0,
    ) -> None:
        self.records = dict(records or {})
        self.synthesize = synthesize
        self.unavailable = set(unavailable)
        self.queries = {term: sorted(set(ids), reverse=True) for term, ids in (queries or {}).items()}
        self.rate_limit = rate_limit
        self.faults: dict[int, str] = {}
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        if fault_all is not None:
            _check_kind(fault_all)
        self.fault_all = fault_all
        self.jitter = max(0.0, jitter)
        self.redirect_to = redirect_to.rstrip("/") if redirect_to else None
        self.set_faults(faults or {})
        for kind in self.fault_kinds:
            _check_kind(kind)
        self._random = random.Random(seed)
        self._template: _Template | None = None
        if synthesize:
            if not self.records:
                raise ValueError("synthesize=True needs at least one real template record")
            pmid = template_pmid if template_pmid is not None else _smallest_with_abstract(self.records)
            if pmid is None:
                pmid = next(iter(self.records))
            self._template = _Template(pmid, self.records[pmid])
        self._port = port
        self._lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._window: deque[float] = deque()
        self._counters = _Counters()
        self._n = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.port = 0

    # ------------------------------------------------------------------ control

    def set_faults(self, faults: Mapping[int, str]) -> None:
        """Replace the per-request-number fault schedule (request numbers count from 1)."""
        for kind in faults.values():
            _check_kind(kind)
        self.faults = dict(faults)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{BASE_PATH}"

    @property
    def rate_limited(self) -> int:
        """How many 429s the rate limit (not fault injection) has served."""
        with self._lock:
            return self._counters.rate_limited

    @property
    def faults_served(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counters.faults)

    def requests(self) -> list[LoggedRequest]:
        """A copy of the request log."""
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        """Clear the log, counters, request numbering and rate window."""
        with self._lock:
            self._log.clear()
            self._window.clear()
            self._counters = _Counters()
            self._n = 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": [asdict(r) for r in self._log],
                "rate_limited": self._counters.rate_limited,
                "faults": dict(self._counters.faults),
            }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LocalEutils:
        self._thread = threading.Thread(target=self._serve, name="local-eutils", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._start_error is not None:
            raise RuntimeError(f"local E-utilities server did not start: {self._start_error}")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(30)
        self._loop = None

    def __enter__(self) -> LocalEutils:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        _raise_priority()
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # report to the starting thread
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        loop.run_forever()
        loop.close()

    async def _startup(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for name in ("efetch.fcgi", "esearch.fcgi"):
            app.router.add_route("GET", f"{BASE_PATH}/{name}", self._handle)
            app.router.add_route("POST", f"{BASE_PATH}/{name}", self._handle)
        app.router.add_get("/_log", self._handle_log)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ handlers

    async def _handle_log(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    def _admit(self, now: float) -> tuple[int, bool, int | None]:
        """Number this request and apply the rate window: (request number, rate-limited, remaining)."""
        with self._lock:
            self._n += 1
            n = self._n
            if self.rate_limit is None:
                return n, False, None
            while self._window and self._window[0] <= now - 1.0:
                self._window.popleft()
            if len(self._window) >= self.rate_limit:
                self._counters.rate_limited += 1
                return n, True, 0
            self._window.append(now)
            return n, False, self.rate_limit - len(self._window)

    def _pick_fault(self, n: int, endpoint: str) -> str | None:
        with self._lock:
            fault = self.faults.get(n, self.fault_all)
            drawn = fault is None and endpoint == "efetch" and self.fault_rate > 0 and self.fault_kinds
            if drawn and self._random.random() < self.fault_rate:
                fault = self._random.choice(self.fault_kinds)
            if fault is not None:
                self._counters.faults[fault] += 1
            return fault

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.jitter:
            with self._lock:
                delay = self._random.uniform(0.0, self.jitter)
            await asyncio.sleep(delay)
        arrived = time.time()
        params: dict[str, str] = dict(request.query)
        if request.method == "POST":
            form = await request.post()
            params.update({k: str(v) for k, v in form.items()})
        endpoint = request.path.rsplit("/", 1)[-1].split(".", 1)[0]
        ids = _ids(params.get("id", ""))
        entry = LoggedRequest(
            time=arrived,
            method=request.method,
            endpoint=endpoint,
            ids=ids,
            term=params.get("term"),
            status=200,
            fault=None,
            rate_limited=False,
            api_key=params.get("api_key"),
            tool=params.get("tool"),
            email=params.get("email"),
            params={k: v for k, v in params.items() if k != "api_key"},
            user_agent=request.headers.get("User-Agent"),
        )
        with self._lock:
            self._log.append(entry)
        if self.redirect_to is not None:
            entry.status = 307
            target = self.redirect_to + request.path_qs
            return web.Response(status=307, headers={"Location": target}, text="moved\n")
        n, limited, remaining = self._admit(time.monotonic())
        headers = {}
        if self.rate_limit is not None:
            headers = {"X-RateLimit-Limit": str(self.rate_limit), "X-RateLimit-Remaining": str(remaining)}
        if limited:
            entry.status, entry.rate_limited = 429, True
            headers["Retry-After"] = "1"
            return web.json_response({"error": "API rate limit exceeded", "count": "4"}, status=429, headers=headers)
        fault = self._pick_fault(n, endpoint)
        entry.fault = fault
        if fault == "hang":
            await asyncio.sleep(self.hang_seconds)
        elif fault == "drop":
            entry.status = 0
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        elif fault in ("429", "500", "502", "503"):
            entry.status = int(fault)
            if fault == "429":
                headers["Retry-After"] = _seconds(self.retry_after)
                return web.json_response({"error": "API rate limit exceeded"}, status=429, headers=headers)
            return web.Response(status=entry.status, text=f"injected {fault}\n", headers=headers)
        elif fault == "error_xml":
            body = (
                b'<?xml version="1.0" ?>\n<eFetchResult>\n\t<ERROR>Unable to obtain query #1</ERROR>\n</eFetchResult>\n'
            )
            return web.Response(body=body, content_type="text/xml", headers=headers)
        elif fault == "error_json":
            return web.json_response({"error": "Backend server error, please retry"}, headers=headers)
        elif fault == "gzip_bomb":
            headers.update({"Content-Encoding": "gzip", "Content-Type": "text/xml"})
            return web.Response(body=gzip_bomb(), headers=headers)

        if endpoint == "efetch":
            body, entry.returned = self._efetch(params, ids, short=fault == "short")
            if fault == "truncated":
                body = body[: max(1, len(body) // 2)]
            elif fault in ("foreign_pmid", "huge_pmid", "deep"):
                body = body[: -len(_TAIL)] + self._hostile_record(fault, ids) + b"\n" + _TAIL
            return web.Response(body=body, content_type="text/xml", charset="utf-8", headers=headers)
        body, content_type = self._esearch(params, count_too_large=fault == "count_too_large")
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)

    def _record(self, pmid: int) -> bytes | None:
        if pmid in self.unavailable:
            return None
        record = self.records.get(pmid)
        if record is None and self._template is not None:
            record = self._template.render(pmid)
        return record

    def _efetch(self, params: Mapping[str, str], ids: list[int], *, short: bool) -> tuple[bytes, int]:
        if params.get("db", "pubmed") != "pubmed":
            return b"<ERROR>Invalid db name specified: %s</ERROR>\n" % params["db"].encode(), 0
        wanted = list(dict.fromkeys(ids))
        if short and len(wanted) > 1:
            wanted = wanted[: len(wanted) - max(1, len(wanted) // 3)]
        found = [r for r in map(self._record, wanted) if r is not None]
        return _HEAD + b"\n".join(found) + b"\n" + _TAIL, len(found)

    def _hostile_record(self, kind: str, ids: list[int]) -> bytes:
        """A record that must not reach the store: a PMID not asked for, one out of bounds, or nesting."""
        pmid, template = next(iter(self.records.items()))
        forged = _Template(pmid, template)
        if kind == "foreign_pmid":
            return forged.render(max(ids, default=0) + 1_000_003)
        if kind == "huge_pmid":
            return forged.render(HUGE_PMID)
        record = forged.render(ids[0] if ids else pmid)
        deep = b"<i>" * DEEP_LEVELS + b"deep" + b"</i>" * DEEP_LEVELS
        return re.sub(
            rb"<ArticleTitle>.*?</ArticleTitle>",
            b"<ArticleTitle>" + deep + b"</ArticleTitle>",
            record,
            count=1,
            flags=re.S,
        )

    def _esearch(self, params: Mapping[str, str], *, count_too_large: bool = False) -> tuple[bytes, str]:
        as_json = params.get("retmode") == "json"
        retstart = int(params.get("retstart") or 0)
        retmax = min(int(params.get("retmax") or 20), 10_000)
        if retstart > ESEARCH_LIMIT - 1:
            if as_json:
                return json.dumps({"esearchresult": {"ERROR": _RETSTART_ERROR}}).encode(), "application/json"
            return (
                b'<?xml version="1.0" encoding="UTF-8" ?>\n<eSearchResult><ERROR>'
                + _xml_escape(_RETSTART_ERROR).encode()
                + b"</ERROR></eSearchResult>\n"
            ), "text/xml"
        ids = self._search(params.get("term", ""))
        page = ids[retstart : min(retstart + retmax, ESEARCH_LIMIT)]
        count = 10**6 if count_too_large else len(ids)
        if count_too_large:
            page = []
        if as_json:
            doc = {
                "header": {"type": "esearch", "version": "0.3"},
                "esearchresult": {
                    "count": str(count),
                    "retmax": str(len(page)),
                    "retstart": str(retstart),
                    "idlist": [str(i) for i in page],
                },
            }
            return json.dumps(doc).encode(), "application/json"
        parts = [
            '<?xml version="1.0" encoding="UTF-8" ?>\n<!DOCTYPE eSearchResult PUBLIC "-//NLM//DTD esearch 20060628//EN"'
            ' "https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20060628/esearch.dtd">\n<eSearchResult>',
            f"<Count>{count}</Count><RetMax>{len(page)}</RetMax><RetStart>{retstart}</RetStart><IdList>\n",
            "".join(f"<Id>{i}</Id>\n" for i in page),
            "</IdList><TranslationSet/>",
        ]
        if not ids:
            parts.append("<WarningList><OutputMessage>No items found.</OutputMessage></WarningList>")
        parts.append("</eSearchResult>\n")
        return "".join(parts).encode(), "text/xml"

    def _search(self, term: str) -> list[int]:
        lo, hi = 0, 1 << 62
        text = term.strip()
        while match := _RANGE.match(text):
            lo, hi = max(lo, int(match["lo"])), min(hi, int(match["hi"]))
            text = match["rest"].strip()
        while text.startswith("(") and text.endswith(")"):
            text = text[1:-1].strip()
        return [i for i in self.queries.get(text, []) if lo <= i <= hi]


def _raise_priority() -> None:
    """Run this server thread ahead of ordinary processes, where allowed (root, CAP_SYS_NICE).

    A real server is not slowed by the client machine's load; on a busy test machine this
    thread would otherwise be starved, then handle queued requests in a burst and log
    arrivals that never happened that close together.
    """
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -10)


def _smallest_with_abstract(records: Mapping[int, bytes]) -> int | None:
    with_abstract = [p for p, r in records.items() if b"<AbstractText" in r and b"<MedlineCitation" in r]
    return min(with_abstract, key=lambda p: len(records[p])) if with_abstract else None


def _check_kind(kind: str) -> None:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; choose from {', '.join(FAULT_KINDS)}")


def _ids(text: str) -> list[int]:
    return [int(tok) for tok in (t.strip() for t in text.split(",")) if tok.isdigit()]


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def max_in_any_window(times: Iterable[float], window: float = 1.0) -> int:
    """The most requests that arrived within any half-open window of ``window`` seconds."""
    ordered = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def synthetic_pmids(count: int, seed: int = 0, high: int = 39_000_000) -> list[int]:
    """``count`` distinct PMIDs drawn from 1..``high``, sorted (for synthetic queries/benchmarks)."""
    return sorted(random.Random(seed).sample(range(1, high + 1), count))


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0] if __doc__ else None)


@app.command()
def serve(
    articles: Annotated[list[Path], typer.Option(help="XML files or folders of real PubMed records to serve.")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 0,
    synthesize: Annotated[bool, typer.Option(help="Serve any PMID from a real template record.")] = False,
    rate_limit: Annotated[int | None, typer.Option(help="Requests per second above which 429 is answered.")] = None,
    fault_rate: Annotated[float, typer.Option(help="Share of efetch requests given a random fault.")] = 0.0,
    fault_kinds: Annotated[
        str, typer.Option(help="Comma list of fault kinds to draw from.")
    ] = "500,truncated,error_xml,short",
    query: Annotated[
        list[str] | None, typer.Option(help="TERM=N: esearch TERM finds N synthetic PMIDs (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for fault draws and synthetic PMIDs.")] = 0,
) -> None:
    """Serve efetch/esearch on 127.0.0.1 until interrupted; prints the base URL."""
    records = load_records(articles)
    if not records:
        typer.echo(f"error: no PubMed records found in {', '.join(map(str, articles))}", err=True)
        raise typer.Exit(2)
    queries: dict[str, list[int]] = {}
    for item in query or []:
        term, sep, count = item.rpartition("=")
        if not sep or not count.isdigit():
            typer.echo(f"error: --query expects TERM=N, got {item!r}", err=True)
            raise typer.Exit(2)
        queries[term] = synthetic_pmids(int(count), seed)
    try:
        server = LocalEutils(
            records,
            synthesize=synthesize or bool(queries),
            rate_limit=rate_limit,
            fault_rate=fault_rate,
            fault_kinds=[k for k in fault_kinds.split(",") if k],
            queries=queries,
            seed=seed,
            port=port,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    with server:
        typer.echo(f"serving {len(records)} records at {server.url}", err=False)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    app()
