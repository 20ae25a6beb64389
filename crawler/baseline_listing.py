"""Reads NCBI's baseline and update-file index pages into the list of files to fetch.

NCBI serves ``/pubmed/baseline/`` and ``/pubmed/updatefiles/`` as Apache-style HTML
listings: one ``<a href="pubmedYYnNNNN.xml.gz">`` per file, followed by its date and a
rounded size, with a ``.md5`` entry beside it. `parse_listing` turns one page into
`RemoteFile` entries (the ``.md5`` URL only where the page lists one), sorted by name,
which is NCBI's file order. Memory: one listing page (about 300 KB for 1,300 files).
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser

DEFAULT_BASE_URL = "https://ftp.ncbi.nlm.nih.gov/pubmed/"
BASELINE, UPDATES = "baseline", "updatefiles"
DATA_FILE = re.compile(r"^(pubmed|medline)\d{2}n\d{4,}\.xml\.gz$")
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}:\d{2}))?")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGT]?)\s*$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class RemoteFile:
    """One data file of a listing: where it and its checksum are, its listed date and rough size."""

    name: str
    url: str
    listing: str
    md5_url: str | None
    modified: dt.datetime | None
    size_hint: int | None


class _Anchors(HTMLParser):
    """Collects (href, text that follows the link up to the next one)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.entries: list[list[str]] = []
        self._in_a = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.entries.append([href, ""])
                self._in_a = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._in_a = False

    def handle_data(self, data: str) -> None:
        if self.entries and not self._in_a:
            self.entries[-1][1] += data


def _date(text: str) -> dt.datetime | None:
    match = _DATE.search(text)
    if not match:
        return None
    stamp = match.group(1) + (" " + match.group(2) if match.group(2) else " 00:00")
    try:
        return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _size(text: str) -> int | None:
    match = _SIZE.search(text.strip())
    if not match:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def parse_listing(page: str, page_url: str, listing: str) -> list[RemoteFile]:
    """The data files an index page lists, in name order; hrefs are resolved against ``page_url``."""
    parser = _Anchors()
    parser.feed(page)
    parser.close()
    base = page_url if page_url.endswith("/") else page_url + "/"
    data: dict[str, tuple[str, str]] = {}
    md5s: dict[str, str] = {}
    for href, after in parser.entries:
        url = urllib.parse.urljoin(base, href)
        name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        if DATA_FILE.match(name):
            data[name] = (url, after)
        elif name.endswith(".md5") and DATA_FILE.match(name[:-4]):
            md5s[name[:-4]] = url
    return [
        RemoteFile(name, url, listing, md5s.get(name), _date(after), _size(after))
        for name, (url, after) in sorted(data.items())
    ]


def listing_url(base_url: str, listing: str) -> str:
    return urllib.parse.urljoin(base_url if base_url.endswith("/") else base_url + "/", listing + "/")


def since_filter(files: Iterable[RemoteFile], since: dt.date | None) -> list[RemoteFile]:
    """Files listed on or after ``since`` (files without a listed date are kept)."""
    if since is None:
        return list(files)
    return [f for f in files if f.modified is None or f.modified.date() >= since]
