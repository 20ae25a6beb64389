"""EDirect's date filters of a ``-a query`` crawl: ``mindate``, ``maxdate``, ``reldate``, ``datetype``.

They are esearch parameters: ``mindate`` and ``maxdate`` (``YYYY``, ``YYYY/MM`` or
``YYYY/MM/DD``; ``-`` is accepted for ``/``) bound a date range and go together;
``reldate=N`` keeps the last N days; ``datetype`` says which date (``pdat`` publication,
``edat`` Entrez, ``mdat`` modification, ``crdt`` create; NCBI's default is ``pdat``).
`date_filters` checks them and returns the esearch parameters, or raises
`DateFilterError` with a one-line message naming the argument.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

DATE_ARGS = ("mindate", "maxdate", "reldate", "datetype")
DATETYPES = ("pdat", "edat", "mdat", "crdt")
_DATE = re.compile(r"^(\d{4})(?:[/-](\d{1,2})(?:[/-](\d{1,2}))?)?$")


class DateFilterError(ValueError):
    """A date filter that esearch would not understand; the message names the argument."""


def _date(name: str, value: str) -> tuple[str, tuple[int, int, int]]:
    match = _DATE.match(value.strip())
    if not match:
        raise DateFilterError(f"-a {name}={value!r}: expected YYYY, YYYY/MM or YYYY/MM/DD")
    year, month, day = (int(g) if g else None for g in match.groups())
    assert year is not None
    try:
        dt.date(year, month or 1, day or 1)
    except ValueError as exc:
        raise DateFilterError(f"-a {name}={value!r}: {exc}") from None
    text = "/".join(f"{p:02d}" if i else str(p) for i, p in enumerate(x for x in (year, month, day) if x is not None))
    return text, (year, month or 0, day or 0)


def date_filters(args: Mapping[str, Any], input_kind: str = "query") -> dict[str, str]:
    """The esearch parameters of the date filters in ``args`` (spider arguments), checked."""
    given = {k: str(args[k]).strip() for k in DATE_ARGS if args.get(k) not in (None, "")}
    if not given:
        return {}
    if input_kind != "query":
        raise DateFilterError(f"-a {next(iter(given))} filters an esearch: it needs -a query, not -a {input_kind}")
    params: dict[str, str] = {}
    if ("mindate" in given) != ("maxdate" in given):
        raise DateFilterError("-a mindate and -a maxdate go together (esearch needs both ends of the range)")
    if "mindate" in given:
        if "reldate" in given:
            raise DateFilterError("give -a reldate or -a mindate/-a maxdate, not both")
        params["mindate"], low = _date("mindate", given["mindate"])
        params["maxdate"], high = _date("maxdate", given["maxdate"])
        if low > high:
            raise DateFilterError(f"-a mindate={given['mindate']} is after -a maxdate={given['maxdate']}")
    if "reldate" in given:
        if not given["reldate"].isdigit() or int(given["reldate"]) < 1:
            raise DateFilterError(f"-a reldate={given['reldate']!r}: expected a whole number of days (1 or more)")
        params["reldate"] = str(int(given["reldate"]))
    if "datetype" in given:
        if given["datetype"].lower() not in DATETYPES:
            raise DateFilterError(f"-a datetype={given['datetype']!r}: expected one of {', '.join(DATETYPES)}")
        if not params:
            raise DateFilterError("-a datetype needs -a reldate or -a mindate/-a maxdate")
        params["datetype"] = given["datetype"].lower()
    return params
