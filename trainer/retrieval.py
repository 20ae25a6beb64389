"""Context retrieval: the top chunks of each question's own documents from the FAISS index.

The index is opened memory-mapped (`indexer.search.open_index`: texts are read only for
the hits, and which documents are indexed is looked up for the questions' PMIDs only),
or asked over HTTP when ``index_server`` names a running `indexer serve`. Memory: the
questions and their hits, whatever the size of the index.

Retrieval only reads: documents absent from the index are recorded as missing (the splits
write them to ``missing_pmids.json``) so the split report says how much context each
question really had. Fetching them is the crawler's job (`scrapy crawl pubmed`, then
`indexer rebuild`; `pipeline run` chains the stages).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.config import TrainerConfig
from trainer.errors import TrainerError
from trainer.questions import Question

log = logging.getLogger(__name__)


@dataclass
class Chunk:
    """A retrieved chunk of a question's document."""

    pmid: int
    chunk: int
    score: float
    text: str


@dataclass
class Retrieval:
    """Retrieved chunks and missing documents per question id, and which corpus answered."""

    chunks: dict[str, list[Chunk]] = field(default_factory=dict)
    missing: dict[str, list[int]] = field(default_factory=dict)
    corpus: str | None = None

    def summary(self) -> dict[str, Any]:
        with_ctx = sum(1 for c in self.chunks.values() if c)
        return {
            "corpus": self.corpus,
            "questions": len(self.chunks),
            "questions_with_retrieved_context": with_ctx,
            "missing_documents": len({p for m in self.missing.values() for p in m}),
        }


def _retrieve_from_server(questions: Sequence[Question], cfg: TrainerConfig, out: Retrieval) -> Retrieval:
    """Ask a running `indexer serve`; documents with no chunk in any hit list count as missing."""
    from indexer.client import health, indexed_on_server, read_token, search_server
    from indexer.errors import IndexerError

    assert cfg.index_server is not None
    asked = [q for q in questions if q.documents]
    try:
        token = read_token(Path(cfg.index_token_file) if cfg.index_token_file else None)
        info = health(cfg.index_server, token)
        found: set[int] = set()
        if asked:
            found = indexed_on_server(cfg.index_server, {p for q in asked for p in q.documents}, token)
            wanted = [q for q in asked if found.intersection(q.documents)]
            results = search_server(
                cfg.index_server, [q.body for q in wanted], cfg.retrieve_k, [list(q.documents) for q in wanted], token
            )
            for q, hits in zip(wanted, results, strict=True):
                out.chunks[q.id] = [Chunk(h["pmid"], h["chunk"], h["score"], h["text"]) for h in hits]
    except IndexerError as exc:
        raise TrainerError(f"retrieval from {cfg.index_server}: {exc}") from None
    out.corpus = f"{cfg.index_server} ({info.get('articles')} articles, model {info.get('model')})"
    out.missing = {q.id: [p for p in q.documents if p not in found] for q in questions}
    out.missing = {k: v for k, v in out.missing.items() if v}
    return out


def retrieve(questions: Sequence[Question], cfg: TrainerConfig) -> Retrieval:
    """Top ``cfg.retrieve_k`` chunks of each question's own documents (pmids filter)."""
    out = Retrieval(chunks={q.id: [] for q in questions})
    if cfg.retrieve_k and cfg.index_server is not None:
        return _retrieve_from_server(questions, cfg, out)
    if cfg.retrieve_k == 0 or cfg.index is None or not (Path(cfg.index) / "manifest.json").is_file():
        if cfg.retrieve_k and cfg.index is not None:
            log.warning("%s: no index there; questions get no retrieved context", cfg.index)
        out.missing = {q.id: list(q.documents) for q in questions if q.documents}
        return out
    from indexer.errors import IndexerError
    from indexer.search import open_index

    try:
        documents = {p for q in questions for p in q.documents}
        index = open_index(cfg.index)
        indexed = index.indexed(documents)
        out.corpus = f"{cfg.index} ({index.manifest.n_articles} articles, model {index.manifest.model})"
        asked = [q for q in questions if indexed.intersection(q.documents)]
        if asked:
            filters: list[Iterable[int]] = [q.documents for q in asked]
            hits = index.search([q.body for q in asked], k=cfg.retrieve_k, pmids=filters)
            for q, found in zip(asked, hits, strict=True):
                out.chunks[q.id] = [Chunk(h.pmid, h.chunk, h.score, h.text) for h in found]
    except IndexerError as exc:
        raise TrainerError(f"retrieval from {cfg.index}: {exc}") from None
    out.missing = {q.id: [p for p in q.documents if p not in indexed] for q in questions}
    out.missing = {k: v for k, v in out.missing.items() if v}
    return out
