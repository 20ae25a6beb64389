"""Splits an article into chunks: title plus whole sentences, sized in model tokens, with overlap.

A chunk's text is the title, a newline, then consecutive sentences of the abstract;
``start``/``end`` are the character offsets of those sentences in the abstract. An
abstract that fits the token budget stays one chunk; an article without an abstract is
one title-only chunk. Bump `CHUNKER_VERSION` whenever the output for the same input
changes: chunk keys (and so cached embeddings) depend on it.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CHUNKER_VERSION = "1"
MAX_CHUNKS = 256
"""Chunk numbers fit in the low 8 bits of a FAISS id (``pmid << 8 | chunk``)."""

_SPECIAL_TOKENS = 2
_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+|\n+")
_ABBREVIATIONS = frozenset(
    [
        "e.g",
        "i.e",
        "et",
        "al",
        "vs",
        "fig",
        "figs",
        "approx",
        "ca",
        "cf",
        "dr",
        "mr",
        "mrs",
        "ms",
        "no",
        "nos",
        "vol",
        "resp",
        "ref",
        "refs",
        "sp",
        "spp",
        "st",
        "eq",
        "eqs",
        "var",
        "wt",
    ]
)

TokenCounter = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class Chunk:
    """One embeddable piece of an article."""

    pmid: int
    chunk: int
    start: int
    end: int
    text: str


def chunk_id(pmid: int, chunk: int) -> int:
    """The FAISS id of a chunk: deterministic, so rebuilds are idempotent."""
    return (pmid << 8) | chunk


def document_hash(title: str, abstract: str, chunker: str) -> str:
    """Fingerprint of an article's indexed text under one chunker configuration."""
    digest = hashlib.blake2b(digest_size=12)
    for part in (chunker, title, abstract):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def chunk_key(model_id: str, chunker: str, text: str) -> str:
    """Cache key of a chunk's embedding: model, chunker and text."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (model_id, chunker, text):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (labelled sections always break)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        end = match.end()
        if "\n" not in match.group() and not _is_sentence_end(text, match.start(), end):
            continue
        _append_span(text, start, end, spans)
        start = end
    _append_span(text, start, len(text), spans)
    return spans


def _is_sentence_end(text: str, dot: int, after: int) -> bool:
    if after < len(text) and not (text[after].isupper() or text[after].isdigit() or text[after] in "([\"'"):
        return False
    word = re.search(r"(\S+)$", text[:dot])
    if word is None:
        return True
    token = word.group(1).lower().lstrip("([")
    return token not in _ABBREVIATIONS and not (len(token) == 1 and token.isalpha())


def _append_span(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append((start, end))


class Chunker:
    """Packs sentences into chunks of at most ``max_tokens`` model tokens, title included."""

    def __init__(self, count_tokens: TokenCounter, max_tokens: int, overlap_tokens: int) -> None:
        if max_tokens <= 16:
            raise ValueError(f"chunk size of {max_tokens} tokens is too small")
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.overlap_tokens = min(overlap_tokens, max_tokens // 2)

    @property
    def fingerprint(self) -> str:
        """What, besides the text, decides the chunks: version, size and overlap."""
        return f"v{CHUNKER_VERSION}:t{self.max_tokens}:o{self.overlap_tokens}"

    def chunk(self, pmid: int, title: str | None, abstract: str | None) -> list[Chunk]:
        """The chunks of one article; empty when it has neither title nor abstract."""
        title = (title or "").strip()
        abstract = abstract or ""
        spans = split_sentences(abstract)
        if not spans:
            return [Chunk(pmid, 0, 0, 0, title)] if title else []
        counts = self.count_tokens([title, *(abstract[s:e] for s, e in spans)])
        budget = max(self.max_tokens - _SPECIAL_TOKENS - counts[0], self.max_tokens // 2)
        spans, sizes = self._split_long(abstract, spans, counts[1:], budget)
        chunks: list[Chunk] = []
        for first, last in self._pack(sizes, budget):
            start, end = spans[first][0], spans[last - 1][1]
            body = abstract[start:end]
            text = f"{title}\n{body}" if title else body
            chunks.append(Chunk(pmid, len(chunks), start, end, text))
            if len(chunks) == MAX_CHUNKS:
                break
        return chunks

    def _split_long(
        self, text: str, spans: list[tuple[int, int]], sizes: list[int], budget: int
    ) -> tuple[list[tuple[int, int]], list[int]]:
        """Cut sentences longer than the budget at whitespace into near-equal pieces."""
        out_spans: list[tuple[int, int]] = []
        out_sizes: list[int] = []
        for (start, end), size in zip(spans, sizes, strict=True):
            if size <= budget:
                out_spans.append((start, end))
                out_sizes.append(size)
                continue
            pieces = math.ceil(size / budget) + 1
            step = (end - start) / pieces
            cut = start
            for n in range(1, pieces + 1):
                target = end if n == pieces else int(start + n * step)
                space = text.rfind(" ", cut + 1, target + 1) if target < end else end
                stop = space if space > cut else target
                if stop > cut:
                    out_spans.append((cut, stop))
                    out_sizes.append(math.ceil(size * (stop - cut) / (end - start)))
                cut = stop + 1 if stop < end and text[stop] == " " else stop
        return out_spans, out_sizes

    def _pack(self, sizes: list[int], budget: int) -> list[tuple[int, int]]:
        """Greedy windows ``[first, last)`` over sentences, each at most ``budget`` tokens."""
        windows: list[tuple[int, int]] = []
        first = 0
        while first < len(sizes):
            last, total = first, 0
            while last < len(sizes) and (last == first or total + sizes[last] <= budget):
                total += sizes[last]
                last += 1
            windows.append((first, last))
            if last == len(sizes):
                break
            back, overlap = last, 0
            while back - 1 > first and overlap + sizes[back - 1] <= self.overlap_tokens:
                overlap += sizes[back - 1]
                back -= 1
            first = back
        return windows
