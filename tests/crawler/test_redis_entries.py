"""Queue entries of a distributed crawl: JSON data only, checked field by field, never a pickle."""

from __future__ import annotations

import pickle

import pytest

from crawler.redis_entries import Entry, InvalidEntry, decode_entry, encode_entry, entry_of
from crawler.spiders.pubmed import PubmedSpider


def spider(monkeypatch: pytest.MonkeyPatch) -> PubmedSpider:
    monkeypatch.setenv("NCBI_API_KEY", "k3y-that-must-stay-home")
    s = PubmedSpider(query="x")
    s.base_url, s.batch_size, s.fetch_rounds = "http://127.0.0.1:9/entrez/eutils", 10, 3
    s.common_params = {"tool": "t", "api_key": "k3y-that-must-stay-home"}
    return s


def test_an_efetch_request_becomes_json_of_its_pmids_and_round_and_no_key(monkeypatch):
    request = spider(monkeypatch).efetch([3, 1, 2])
    request.meta.update({"rounds": {2: 1}, "round": 1, "retry_times": 2})
    assert b"k3y" in request.body  # the request carries the key...
    raw = encode_entry(entry_of(request.meta, 5, 1234.5))
    assert b"k3y" not in raw and b"api_key" not in raw  # ...its queue entry does not
    entry = decode_entry(raw)
    assert entry == Entry("efetch", [3, 1, 2], {2: 1}, 1, None, 5, 2, 1234.5)
    search = decode_entry(encode_entry(Entry("esearch", span=(1, 50))))
    assert search.kind == "esearch" and search.span == (1, 50)


@pytest.mark.parametrize(
    "raw",
    [
        pickle.dumps({"url": "x"}),
        b"cos\nsystem\n(S'touch /tmp/owned'\ntR.",
        b"[1, 2]",
        b'{"v": 2, "kind": "efetch", "pmids": [1]}',
        b'{"v": 1, "kind": "shell", "pmids": [1]}',
        b'{"v": 1, "kind": "efetch", "pmids": []}',
        b'{"v": 1, "kind": "efetch", "pmids": [100000000000000000000]}',
        b'{"v": 1, "kind": "efetch", "pmids": [true]}',
        b'{"v": 1, "kind": "efetch", "pmids": [1], "url": "http://elsewhere"}',
        b'{"v": 1, "kind": "efetch", "pmids": [1], "not_before": "soon"}',
        b'{"v": 1, "kind": "esearch", "span": [5, 1]}',
        b" " * (2 << 20),
    ],
)
def test_anything_else_is_an_invalid_entry(raw):
    with pytest.raises(InvalidEntry):
        decode_entry(raw)
