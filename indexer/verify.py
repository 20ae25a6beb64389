"""`verify_index`: checksums and sizes of every shard, counts against the store, and recall@10.

Recall@10 is measured against exact search over real vectors (`indexer.recall`); the
store comparison reads the whole store's live titles and abstracts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc

from indexer.chunking import document_hash
from indexer.errors import IndexerError, NotAnIndexError
from indexer.manifest import read_manifest
from indexer.recall import exact_codes, measure_recall
from indexer.shards import read_ids, read_index, sha256_file
from store.reader import read_articles


@dataclass
class VerifyReport:
    """What `indexer verify` found; ``ok`` when there are no problems."""

    shards: int = 0
    vectors: int = 0
    articles: int = 0
    store_articles: int | None = None
    missing: int = 0
    extra: int = 0
    stale: int = 0
    recall: float | None = None
    nprobe: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        recall = f", recall@10 {self.recall:.3f} at nprobe {self.nprobe}" if self.recall is not None else ""
        store = (
            f"; store {self.store_articles} articles ({self.missing} missing, {self.extra} extra, {self.stale} stale)"
            if self.store_articles is not None
            else ""
        )
        state = "ok" if self.ok else f"{len(self.problems)} problem(s): {self.problems[0]}"
        return f"verify {state}: {self.shards} shards, {self.vectors} vectors, {self.articles} articles{store}{recall}"


def verify_index(
    index_dir: Path, store: Path | None = None, queries: int = 200, sample: int = 10_000, device: str = "auto"
) -> VerifyReport:
    """Check the index at ``index_dir`` (and, with ``store``, that it covers the store's live articles)."""
    manifest = read_manifest(index_dir)
    if manifest is None:
        raise NotAnIndexError(f"{index_dir}: no index here (no manifest.json); run `indexer rebuild` first")
    report = VerifyReport(shards=len(manifest.shards), vectors=manifest.n_vectors, articles=manifest.n_articles)
    heads: dict[int, str] = {}
    for entry in manifest.shards:
        try:
            ids_path = index_dir / entry.ids_file
            if not ids_path.is_file() or sha256_file(ids_path) != entry.ids_sha256:
                raise IndexerError(f"{ids_path}: corrupt shard ids file (missing or checksum mismatch)")
            index = read_index(index_dir, entry, check=True)
            table = read_ids(index_dir, entry, ["id", "pmid", "chunk", "doc_hash"])
            if table.num_rows != index.ntotal:
                raise IndexerError(f"{ids_path}: {table.num_rows} ids for {index.ntotal} vectors")
        except IndexerError as exc:
            report.problems.append(str(exc))
            continue
        first = table.filter(pc.equal(table.column("chunk"), 0))
        heads.update(zip(first.column("pmid").to_pylist(), first.column("doc_hash").to_pylist(), strict=True))
    if store is not None:
        articles = read_articles(store, columns=["title", "abstract"])
        live = {}
        for pmid, title, abstract in zip(
            articles.column("pmid").to_pylist(),
            articles.column("title").to_pylist(),
            articles.column("abstract").to_pylist(),
            strict=True,
        ):
            if title or abstract:
                live[pmid] = document_hash(title or "", abstract or "", manifest.chunker)
        report.store_articles = len(live)
        report.missing = len(live.keys() - heads.keys())
        report.extra = len(heads.keys() - live.keys())
        report.stale = sum(1 for p, h in live.items() if p in heads and heads[p] != h)
        if report.missing or report.extra or report.stale:
            report.problems.append(
                f"{index_dir}: index is out of date with {store} ({report.missing} missing, {report.extra} extra, "
                f"{report.stale} changed articles); run `indexer rebuild`"
            )
    if not report.problems and manifest.n_vectors:
        encode = None
        if not exact_codes(manifest.factory):
            from indexer.embedding import Embedder

            embedder = Embedder(manifest.model, device, precision=manifest.precision or "auto")
            encode = embedder.encode
        report.nprobe, report.recall = measure_recall(index_dir, manifest, queries, None, sample, encode)
    return report
