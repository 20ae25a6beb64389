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

import numpy as np

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
Tokenize = Callable[[Sequence[str]], list[tuple[np.ndarray, np.ndarray]]]
"""Texts -> (token ids, character offsets of shape (n, 2)) each, without special tokens, untruncated."""


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
    # The word before the dot: the run of non-space characters ending there (one newline
    # just before the dot is skipped, as ``re.search(r"(\S+)$", text[:dot])`` would).
    end = dot - 1 if dot > 0 and text[dot - 1] == "\n" else dot
    begin = end
    while begin > 0 and not text[begin - 1].isspace():
        begin -= 1
    if begin == end:
        return True
    token = text[begin:end].lower().lstrip("([")
    return token not in _ABBREVIATIONS and not (len(token) == 1 and token.isalpha())


def _append_span(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append((start, end))


class Chunker:
    """Packs sentences into chunks of at most ``max_tokens`` model tokens, title included.

    `chunk` sizes one article by calling ``count_tokens``; `chunk_many` tokenises a whole
    batch of articles in one ``tokenize`` call, sizes sentences from the token offsets,
    and returns each chunk's model input (token ids with the special tokens) beside it,
    so the text is never tokenised a second time for embedding. Both give the same chunks.
    """

    def __init__(
        self,
        count_tokens: TokenCounter,
        max_tokens: int,
        overlap_tokens: int,
        tokenize: Tokenize | None = None,
        special: tuple[Sequence[int], Sequence[int]] = ((), ()),
        max_input: int | None = None,
    ) -> None:
        if max_tokens <= 16:
            raise ValueError(f"chunk size of {max_tokens} tokens is too small")
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.overlap_tokens = min(overlap_tokens, max_tokens // 2)
        self.tokenize = tokenize
        self.prefix = np.asarray(special[0], dtype=np.int32)
        self.suffix = np.asarray(special[1], dtype=np.int32)
        self.max_input = max_input or max_tokens

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
        return [c for c, _ in self._windows(pmid, title, abstract, spans, counts[0], counts[1:])]

    def chunk_many(
        self, pmids: Sequence[int], titles: Sequence[str | None], abstracts: Sequence[str | None]
    ) -> tuple[list[Chunk], list[np.ndarray]]:
        """The chunks of many articles, in order, and each chunk's model input token ids."""
        if self.tokenize is None:
            raise ValueError("chunk_many needs a Chunker built with a tokenize function")
        clean_titles = [(t or "").strip() for t in titles]
        clean_abstracts = [a or "" for a in abstracts]
        encoded = self.tokenize([*clean_titles, *clean_abstracts])
        n = len(clean_titles)
        chunks: list[Chunk] = []
        tokens: list[np.ndarray] = []
        for row, (pmid, title, abstract) in enumerate(zip(pmids, clean_titles, clean_abstracts, strict=True)):
            title_ids = encoded[row][0]
            spans = split_sentences(abstract)
            if not spans:
                if title:
                    chunks.append(Chunk(int(pmid), 0, 0, 0, title))
                    tokens.append(self._input(title_ids, title_ids[:0]))
                continue
            ids, offsets = encoded[n + row]
            starts, ends = offsets[:, 0], offsets[:, 1]
            lo = np.searchsorted(starts, [s for s, _ in spans], side="left")
            hi = np.searchsorted(ends, [e for _, e in spans], side="right")
            counts = np.maximum(hi - lo, 0).tolist()
            for chunk, (start, end) in self._windows(int(pmid), title, abstract, spans, len(title_ids), counts):
                first = int(np.searchsorted(starts, start, side="left"))
                last = int(np.searchsorted(starts, end, side="left"))
                chunks.append(chunk)
                tokens.append(self._input(title_ids, ids[first:last]))
        return chunks, tokens

    def _input(self, title_ids: np.ndarray, body_ids: np.ndarray) -> np.ndarray:
        """Special tokens around title and body, cut to the model's input length as ``encode`` would."""
        room = max(self.max_input - len(self.prefix) - len(self.suffix), 0)
        body = np.concatenate([title_ids, body_ids])[:room]
        return np.concatenate([self.prefix, body, self.suffix]).astype(np.int32)

    def _windows(
        self, pmid: int, title: str, abstract: str, spans: list[tuple[int, int]], title_count: int, counts: list[int]
    ) -> list[tuple[Chunk, tuple[int, int]]]:
        budget = max(self.max_tokens - _SPECIAL_TOKENS - title_count, self.max_tokens // 2)
        spans, sizes = self._split_long(abstract, spans, counts, budget)
        chunks: list[tuple[Chunk, tuple[int, int]]] = []
        for first, last in self._pack(sizes, budget):
            start, end = spans[first][0], spans[last - 1][1]
            body = abstract[start:end]
            text = f"{title}\n{body}" if title else body
            chunks.append((Chunk(pmid, len(chunks), start, end, text), (start, end)))
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
