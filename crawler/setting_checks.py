"""Checks of the crawl's ``PUBMED_*`` settings, run by ``scrapy crawl`` before anything starts.

Every ``PUBMED_*`` setting must be one the project defines (crawler.settings: a typo such
as ``-s PUBMED_RATEE=5`` is an error naming the closest known setting), parse as the type
of its default (bool, int or float; numbers finite and not negative, some at least 1 or
above 0) and, for URLs, have a usable scheme. `check_settings` raises `SettingError`
with a one-line message naming the setting and its value (a password redacted); the crawl command turns it
into a usage error (exit 2).
"""

from __future__ import annotations

import difflib
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from crawler import settings as defaults
from crawler.redis_ratelimit import redacted

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

PREFIX = "PUBMED_"
# Numbers that must be above zero (the rest only not negative).
POSITIVE = {"PUBMED_RATE", "PUBMED_REDIS_LEASE_SECONDS"}
AT_LEAST_ONE = {"PUBMED_BATCH_SIZE", "PUBMED_FETCH_ROUNDS", "PUBMED_MAX_PMID", "PUBMED_PART_ROWS"}
URL_SCHEMES = {
    "PUBMED_EUTILS_URL": ("http", "https"),
    "PUBMED_REDIS_URL": ("redis", "rediss", "unix"),
}


class SettingError(ValueError):
    """A ``-s PUBMED_*`` setting that cannot be used; the message names it and its value."""


def known_settings() -> dict[str, Any]:
    """The project's ``PUBMED_*`` settings and their defaults."""
    return {name: getattr(defaults, name) for name in dir(defaults) if name.startswith(PREFIX)}


def check_settings(settings: BaseSettings) -> None:
    """Raise `SettingError` for the first unknown or unusable ``PUBMED_*`` setting."""
    known = known_settings()
    for name in sorted(n for n in settings if str(n).startswith(PREFIX)):
        value = settings[name]
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(sorted(known))}"
            raise SettingError(f"-s {name}={redacted(str(value))}: unknown setting{hint}")
        check_value(name, value, known[name])


def check_value(name: str, value: Any, default: Any) -> None:
    """Raise `SettingError` unless ``value`` is usable where ``default`` is the project's default."""
    where = f"-s {name}={redacted(str(value))}"
    if isinstance(default, bool):
        if str(value).strip().lower() not in {"0", "1", "true", "false", "yes", "no", "on", "off"}:
            raise SettingError(f"{where}: not a boolean (give True or False)")
        return
    if isinstance(default, int | float):
        try:
            number = int(value) if isinstance(default, int) else float(value)
        except (TypeError, ValueError):
            kind = "a whole number" if isinstance(default, int) else "a number"
            raise SettingError(f"{where}: not {kind}") from None
        if not math.isfinite(number) or number < 0:
            raise SettingError(f"{where}: must be a finite number, not negative")
        if name in AT_LEAST_ONE and number < 1:
            raise SettingError(f"{where}: must be at least 1")
        if name in POSITIVE and number <= 0:
            raise SettingError(f"{where}: must be above 0")
        return
    schemes = URL_SCHEMES.get(name)
    if schemes and str(value):
        parts = urlsplit(str(value))
        if parts.scheme not in schemes or not (parts.netloc or parts.scheme == "unix"):
            wanted = " or ".join(f"{scheme}://" for scheme in schemes)
            raise SettingError(f"{where}: not a {wanted} URL")
