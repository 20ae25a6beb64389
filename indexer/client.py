"""A client of `indexer serve` on the standard library: no model, FAISS or aiohttp import.

`search_server` posts queries in batches of at most `BATCH` (the server's default
bound) and returns hits as dicts (pmid, chunk, score, text); errors become one-line
`ServerError`s naming the URL and the server's message. Memory: one batch of results.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from indexer.errors import IndexerError

BATCH = 64
PMID_BATCH = 10_000
TIMEOUT = 120.0


class ServerError(IndexerError):
    """The server could not be reached or refused the request."""


def read_token(path: Path | None) -> str | None:
    """The bearer token in ``path`` (surrounding whitespace stripped), or None."""
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServerError(f"{path}: cannot read token file ({exc})") from None
    if not token:
        raise ServerError(f"{path}: token file is empty")
    return token


def _request(url: str, body: dict[str, Any] | None, token: str | None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        raise ServerError(f"{url}: HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerError(f"{url}: cannot reach the server ({reason}); is `indexer serve` running?") from None


def health(server: str, token: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = _request(server.rstrip("/") + "/health", None, token)
    return result


def indexed_on_server(server: str, pmids: Iterable[int], token: str | None = None) -> set[int]:
    """Which of ``pmids`` the served index holds (asked in batches of `PMID_BATCH`)."""
    url = server.rstrip("/") + "/indexed"
    wanted = sorted({int(p) for p in pmids})
    found: set[int] = set()
    for first in range(0, len(wanted), PMID_BATCH):
        found.update(_request(url, {"pmids": wanted[first : first + PMID_BATCH]}, token)["indexed"])
    return found


def search_server(
    server: str,
    queries: Sequence[str],
    k: int = 10,
    pmids: Iterable[int] | Sequence[Iterable[int]] | None = None,
    token: str | None = None,
) -> list[list[dict[str, Any]]]:
    """Hits per query from a running `indexer serve`; ``pmids`` is one list for all or one per query."""
    url = server.rstrip("/") + "/search"
    per_query: list[list[int]] | None = None
    shared: list[int] | None = None
    if pmids is not None:
        items: list[Any] = list(pmids)
        if items and not isinstance(items[0], int):
            per_query = [[int(p) for p in group] for group in items]
        else:
            shared = [int(p) for p in items]
    out: list[list[dict[str, Any]]] = []
    for first in range(0, len(queries), BATCH):
        body: dict[str, Any] = {"queries": list(queries[first : first + BATCH]), "k": k}
        if per_query is not None:
            body["pmids"] = per_query[first : first + BATCH]
        elif shared is not None:
            body["pmids"] = shared
        out.extend(_request(url, body, token)["results"])
    return out
