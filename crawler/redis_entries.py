"""The data-only format of a distributed crawl's queue entries: JSON of what a batch needs.

A queued request is never pickled: an entry is a small JSON object naming the work and
nothing else, and the worker that pops it rebuilds the request with its own spider
(URL, tool, email and the API key from its own environment, added only then), so no
code and no secret ever sits in Redis. Entries::

    {"v": 1, "kind": "efetch", "pmids": [...], "rounds": {"pmid": n}, "round": n,
     "priority": p, "retry_times": n, "not_before": wall-clock seconds or null}
    {"v": 1, "kind": "esearch", "span": [lo, hi] or null, "priority": p, ...}

`decode_entry` checks every field (types, PMID bounds through `store.schema.check_pmid`,
sizes) and raises `InvalidEntry` for anything else, e.g. a pickle someone pushed into
the queue; the queue logs and drops such entries. Memory: one entry (at most
`MAX_ENTRY_BYTES`) at a time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from store.schema import PMID_MAX, check_pmid

VERSION = 1
MAX_ENTRY_BYTES = 1 << 20
MAX_PMIDS = 10_000
MAX_COUNTER = 1000
KINDS = ("efetch", "esearch")


class InvalidEntry(ValueError):
    """A queue entry that is not a valid JSON work item; the message says why."""


@dataclass
class Entry:
    """One unit of queued work: an efetch batch or an esearch (of a PMID range)."""

    kind: str
    pmids: list[int] = field(default_factory=list)
    rounds: dict[int, int] = field(default_factory=dict)
    round: int = 0
    span: tuple[int, int] | None = None
    priority: int = 0
    retry_times: int = 0
    not_before: float | None = None  # wall-clock (time.time) backoff deadline


def encode_entry(entry: Entry) -> bytes:
    doc: dict[str, Any] = {"v": VERSION, "kind": entry.kind, "priority": entry.priority}
    if entry.kind == "efetch":
        doc["pmids"] = entry.pmids
        doc["rounds"] = {str(p): r for p, r in entry.rounds.items()}
        doc["round"] = entry.round
    else:
        doc["span"] = list(entry.span) if entry.span is not None else None
    doc["retry_times"] = entry.retry_times
    doc["not_before"] = entry.not_before
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _int(doc: dict[str, Any], name: str, low: int, high: int, default: int = 0) -> int:
    value = doc.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidEntry(f"field {name!r} must be an integer from {low} to {high}, got {value!r}"[:200])
    return value


def _pmid(value: Any, where: str) -> int:
    try:
        return check_pmid(value)
    except ValueError:
        raise InvalidEntry(f"{where} is not a PMID: {value!r}"[:200]) from None


def decode_entry(raw: bytes | str) -> Entry:
    """The `Entry` in ``raw``; `InvalidEntry` when it is anything but a valid one."""
    if len(raw) > MAX_ENTRY_BYTES:
        raise InvalidEntry(f"entry of {len(raw)} bytes is larger than {MAX_ENTRY_BYTES}")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidEntry("entry is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidEntry(f"entry must be a JSON object, got {type(doc).__name__}")
    if doc.get("v") != VERSION:
        raise InvalidEntry(f"entry version must be {VERSION}, got {doc.get('v')!r}"[:200])
    kind = doc.get("kind")
    if kind not in KINDS:
        raise InvalidEntry(f"field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}"[:200])
    known = {"v", "kind", "priority", "retry_times", "not_before"}
    known |= {"pmids", "rounds", "round"} if kind == "efetch" else {"span"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise InvalidEntry(f"unknown field {unknown[0]!r}"[:200])
    not_before = doc.get("not_before")
    if not_before is not None and (
        not isinstance(not_before, int | float) or isinstance(not_before, bool) or not math.isfinite(not_before)
    ):
        raise InvalidEntry(f"field 'not_before' must be a number or null, got {not_before!r}"[:200])
    entry = Entry(
        kind=kind,
        priority=_int(doc, "priority", -MAX_COUNTER, MAX_COUNTER),
        retry_times=_int(doc, "retry_times", 0, MAX_COUNTER),
        not_before=float(not_before) if not_before is not None else None,
    )
    if kind == "efetch":
        pmids = doc.get("pmids")
        if not isinstance(pmids, list) or not 1 <= len(pmids) <= MAX_PMIDS:
            raise InvalidEntry(f"field 'pmids' must be a list of 1 to {MAX_PMIDS} PMIDs")
        entry.pmids = [_pmid(p, "a 'pmids' item") for p in pmids]
        rounds = doc.get("rounds", {})
        if not isinstance(rounds, dict):
            raise InvalidEntry("field 'rounds' must be an object")
        for key, value in rounds.items():
            pmid = _pmid(int(key) if isinstance(key, str) and key.isdigit() else key, "a 'rounds' key")
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNTER:
                raise InvalidEntry(f"round of PMID {pmid} must be a small integer, got {value!r}"[:200])
            entry.rounds[pmid] = value
        entry.round = _int(doc, "round", 0, MAX_COUNTER)
    else:
        span = doc.get("span")
        if span is not None:
            if not isinstance(span, list) or len(span) != 2:
                raise InvalidEntry("field 'span' must be [lo, hi] or null")
            lo, hi = (_pmid(v, "a 'span' end") for v in span)
            if lo > hi:
                raise InvalidEntry(f"field 'span' must have lo <= hi, got {span!r}")
            entry.span = (lo, hi)
    return entry


def entry_of(meta: dict[str, Any], priority: int, not_before: float | None) -> Entry:
    """The `Entry` of a request of the ``pubmed`` spider, from its meta."""
    retry_times = int(meta.get("retry_times", 0))
    if "pmids" in meta:
        return Entry(
            kind="efetch",
            pmids=[int(p) for p in meta["pmids"]],
            rounds={int(p): int(r) for p, r in meta.get("rounds", {}).items()},
            round=int(meta.get("round", 0)),
            priority=priority,
            retry_times=retry_times,
            not_before=not_before,
        )
    if "span" in meta:
        span = meta["span"]
        return Entry(
            kind="esearch",
            span=(int(span[0]), int(span[1])) if span is not None else None,
            priority=priority,
            retry_times=retry_times,
            not_before=not_before,
        )
    raise InvalidEntry("request is neither an efetch batch nor an esearch: it cannot be queued")


__all__ = ["PMID_MAX", "Entry", "InvalidEntry", "decode_entry", "encode_entry", "entry_of"]
