"""Chunking: sentence boundaries, budgets in model tokens, overlap, short abstracts stay whole."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from indexer.chunking import CHUNKER_VERSION, Chunker, chunk_id, split_sentences
from indexer.embedding import Embedder


def words(texts: Sequence[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def test_split_sentences_keeps_abbreviations_and_sections() -> None:
    text = "Cells were grown (e.g. HeLa) as in Smith et al. 2001. Results differ. BACKGROUND: x\nMETHODS: y."
    sentences = [text[s:e] for s, e in split_sentences(text)]
    assert sentences == [
        "Cells were grown (e.g. HeLa) as in Smith et al. 2001.",
        "Results differ.",
        "BACKGROUND: x",
        "METHODS: y.",
    ]


def test_short_abstract_is_one_chunk_with_title() -> None:
    chunks = Chunker(words, max_tokens=64, overlap_tokens=8).chunk(7, "A title", "One sentence. Two sentences.")
    assert len(chunks) == 1
    assert chunks[0].text == "A title\nOne sentence. Two sentences."
    assert (chunks[0].start, chunks[0].end) == (0, len("One sentence. Two sentences."))


def test_title_only_and_empty_articles() -> None:
    chunker = Chunker(words, max_tokens=64, overlap_tokens=8)
    assert [c.text for c in chunker.chunk(1, "Only a title", None)] == ["Only a title"]
    assert chunker.chunk(2, None, "  ") == []


def test_long_abstract_is_split_within_budget_with_overlap() -> None:
    sentences = [f"Sentence number {i} has exactly seven words." for i in range(30)]
    abstract = " ".join(sentences)
    chunker = Chunker(words, max_tokens=40, overlap_tokens=8)
    chunks = chunker.chunk(9, "Short title", abstract)
    assert len(chunks) > 3
    for chunk in chunks:
        assert len(chunk.text.split()) <= 40 - 2
        assert chunk.text.startswith("Short title\n")
        assert abstract[chunk.start : chunk.end] in chunk.text
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.start < before.end, "consecutive chunks overlap by whole sentences"
    assert chunks[-1].end == len(abstract)
    assert chunker.fingerprint.startswith(f"v{CHUNKER_VERSION}:")


def test_sentence_longer_than_budget_is_cut() -> None:
    abstract = " ".join(f"w{i}" for i in range(200)) + "."
    chunks = Chunker(words, max_tokens=40, overlap_tokens=0).chunk(3, "", abstract)
    assert len(chunks) >= 5
    assert all(len(c.text.split()) <= 40 for c in chunks)
    assert " ".join(c.text for c in chunks).split() == abstract.split()


def test_real_tokenizer_sizes_chunks(embedder: Embedder, abstracts: list[dict[str, Any]]) -> None:
    chunker = Chunker(embedder.count_tokens, max_tokens=128, overlap_tokens=16)
    longest = max(abstracts, key=lambda r: len(r["abstract"]))
    chunks = chunker.chunk(longest["pmid"], longest["title"], longest["abstract"])
    assert len(chunks) > 1
    for chunk in chunks:
        assert embedder.count_tokens([chunk.text])[0] <= 128
    assert chunk_id(longest["pmid"], chunks[-1].chunk) == (longest["pmid"] << 8) | (len(chunks) - 1)
