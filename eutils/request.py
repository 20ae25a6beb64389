"""E-utilities requests: who is asking (tool, email, API key) and the bodies of efetch and esearch.

`Identity` is what NCBI asks every request to carry. The API key goes only into POST
bodies (`Identity.params`), never into URLs (`Identity.query_url` adds tool and email
only) and never into logs: its ``repr`` masks it, and `redact` masks it in any text.
efetch and esearch are sent by POST (hundreds of PMIDs fit in a body, not in a URL).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field

from eutils import policy

__all__ = ["Identity", "efetch_form", "endpoint", "esearch_form", "redact"]

_KEY_IN_TEXT = re.compile(r"(api_key=)[^&\s'\"]+")


@dataclass(frozen=True)
class Identity:
    """The tool name, contact email and (optional) API key sent with every request."""

    tool: str = policy.TOOL
    email: str = ""
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, tool: str = policy.TOOL, email: str | None = None, api_key: str | None = None) -> Identity:
        """``email`` and ``api_key`` default to ``NCBI_EMAIL`` and ``NCBI_API_KEY``."""
        return cls(
            tool,
            policy.email_from_env() if email is None else email,
            policy.api_key_from_env() if api_key is None else (api_key or None),
        )

    @property
    def rate(self) -> float:
        """Requests per second NCBI allows this identity."""
        return policy.default_rate(self.api_key)

    def params(self) -> dict[str, str]:
        """``tool``, ``email`` and ``api_key`` (those that are set), for a POST body."""
        pairs = (("tool", self.tool), ("email", self.email), ("api_key", self.api_key or ""))
        return {name: value for name, value in pairs if value}

    def query_url(self, url: str) -> str:
        """``url`` with ``tool`` and ``email`` added to its query (never the API key)."""
        params = {k: v for k, v in (("tool", self.tool), ("email", self.email)) if v}
        if not params:
            return url
        sep = "&" if urllib.parse.urlsplit(url).query else "?"
        return url + sep + urllib.parse.urlencode(params)

    def headers(self, purpose: str) -> dict[str, str]:
        """``User-Agent`` naming the tool and ``purpose``, and ``From`` with the email when known."""
        headers = {"User-Agent": f"{self.tool} ({purpose})"}
        if self.email:
            headers["From"] = self.email
        return headers


def endpoint(base_url: str, utility: str) -> str:
    """The URL of one utility (``efetch``, ``esearch``...) under ``base_url``."""
    return f"{base_url.rstrip('/')}/{utility}.fcgi"


def efetch_form(pmids: Iterable[int], identity: Identity) -> dict[str, str]:
    """The POST body of an efetch of ``pmids`` as PubMed XML."""
    ids = ",".join(map(str, pmids))
    if not ids:
        raise ValueError("an efetch needs at least one PMID")
    return {"db": "pubmed", "retmode": "xml", "id": ids, **identity.params()}


def esearch_form(
    term: str,
    identity: Identity,
    *,
    retstart: int = 0,
    retmax: int = policy.ESEARCH_LIMIT,
    dates: dict[str, str] | None = None,
) -> dict[str, str]:
    """The POST body of an esearch for ``term``; ``dates`` are EDirect's mindate/maxdate/reldate/datetype."""
    if retstart < 0 or not 0 <= retmax <= policy.ESEARCH_LIMIT:
        raise ValueError(f"esearch retstart {retstart} / retmax {retmax}: retmax is at most {policy.ESEARCH_LIMIT}")
    return {
        "db": "pubmed",
        "term": term,
        "retstart": str(retstart),
        "retmax": str(retmax),
        **(dates or {}),
        **identity.params(),
    }


def redact(text: str) -> str:
    """``text`` with the value of every ``api_key=`` masked, for logs and error messages."""
    return _KEY_IN_TEXT.sub(r"\1***", text)
