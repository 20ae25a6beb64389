"""Request building: efetch/esearch bodies carry tool, email and key; the key stays out of URLs and logs."""

from __future__ import annotations

import pytest

from eutils import policy
from eutils.request import Identity, efetch_form, endpoint, esearch_form, redact


def test_identity_from_env_and_masked_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCBI_API_KEY", "secret-key")
    monkeypatch.setenv("NCBI_EMAIL", "me@example.org")
    who = Identity.from_env()
    assert (who.tool, who.email, who.api_key, who.rate) == (policy.TOOL, "me@example.org", "secret-key", 10.0)
    assert "secret-key" not in repr(who)
    assert Identity.from_env(email="", api_key="").params() == {"tool": policy.TOOL}
    monkeypatch.delenv("NCBI_API_KEY")
    assert Identity.from_env().rate == 3.0


def test_efetch_and_esearch_bodies() -> None:
    who = Identity("t", "e@x.org", "k")
    assert efetch_form([3, 1, 2], who) == {
        "db": "pubmed",
        "retmode": "xml",
        "id": "3,1,2",
        "tool": "t",
        "email": "e@x.org",
        "api_key": "k",
    }
    with pytest.raises(ValueError, match="at least one PMID"):
        efetch_form([], who)
    form = esearch_form("crispr", Identity("t"), dates={"mindate": "2020", "datetype": "pdat"})
    assert form == {
        "db": "pubmed",
        "term": "crispr",
        "retstart": "0",
        "retmax": "9999",
        "mindate": "2020",
        "datetype": "pdat",
        "tool": "t",
    }
    with pytest.raises(ValueError, match="at most 9999"):
        esearch_form("x", who, retmax=10_000)


def test_urls_never_carry_the_key() -> None:
    who = Identity("t", "e@x.org", "k")
    assert who.query_url("https://ftp.example/a.gz") == "https://ftp.example/a.gz?tool=t&email=e%40x.org"
    assert who.query_url("https://h/p?x=1") == "https://h/p?x=1&tool=t&email=e%40x.org"
    assert Identity("", "").query_url("https://h/p") == "https://h/p"
    assert who.headers("baseline download") == {"User-Agent": "t (baseline download)", "From": "e@x.org"}
    assert endpoint(policy.EUTILS_URL, "efetch") == "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/efetch.fcgi"
    assert endpoint("http://127.0.0.1:8/entrez/eutils", "esearch") == "http://127.0.0.1:8/entrez/eutils/esearch.fcgi"


def test_redact_masks_every_key() -> None:
    text = "POST db=pubmed&api_key=abc123&id=1 then 'api_key=zz9'"
    assert redact(text) == "POST db=pubmed&api_key=***&id=1 then 'api_key=***'"
