"""Indexer benchmark: embedding throughput, search recall/speed, and incremental rebuild cost.

Each part prints a ratio against a named peer measured in the same run:

1. embedding: `indexer.embedding.Embedder.encode` vs one plain ``SentenceTransformer.encode``
   call (same model object, same texts: real-length abstracts recombined from the
   fixture sentences); target >= 1.3x on CPU. On CUDA it also prints tokens/second
   against the model's FLOP bound.
2. search: the default ``auto`` factory (trained, nprobe tuned as `indexer rebuild`
   does) vs exact ``IndexFlatIP`` on clustered synthetic vectors at 100k and 1M:
   recall@10 (target >= 0.95) and queries/second.
3. incremental rebuild: `indexer.build.rebuild` after adding 1% new articles, as a
   fraction of the full rebuild of the same store (target <= 5%).

Usage: python benchmarks/index.py [--texts 2000] [--sizes 100000,1000000] [--articles 1000] [--skip PART]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIXTURE = REPO / "tests" / "data" / "indexer" / "abstracts.jsonl"


def fixture_sentences() -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]
    sentences = [s for r in rows for s in re.split(r"(?<=[.!?])\s+", r["abstract"].replace("\n", " ")) if len(s) > 20]
    return [r["title"] for r in rows], sentences


def synthetic_abstracts(n: int, seed: int, sentences_range: tuple[int, int] = (4, 14)) -> list[tuple[str, str]]:
    """(title, abstract) pairs of real length made by recombining real fixture sentences."""
    titles, sentences = fixture_sentences()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        count = rng.randint(*sentences_range)
        out.append((rng.choice(titles), " ".join(rng.choice(sentences) for _ in range(count))))
    return out


# -- 1. embedding -------------------------------------------------------------------------------


def bench_embedding(n_texts: int, device: str, rounds: int = 4) -> None:
    """Both encoders embed the chunks `indexer rebuild` would embed for ``n_texts`` abstracts.

    The texts are split into ``rounds`` random slices; each slice is embedded by both,
    alternating which goes first, so a busy machine's load drifts hit both equally.
    """
    import torch

    from indexer.chunking import Chunker
    from indexer.embedding import Embedder

    embedder = Embedder("default", device=device)
    chunker = Chunker(embedder.count_tokens, embedder.max_seq_length, 48)
    texts = [c.text for i, (t, a) in enumerate(synthetic_abstracts(n_texts, seed=1)) for c in chunker.chunk(i, t, a)]
    embedder.encode(texts[:32])
    embedder.st.encode(texts[:32])

    def timed(fn: Any) -> tuple[float, np.ndarray]:
        if embedder.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = np.asarray(fn(), dtype=np.float32)
        if embedder.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, out

    slices = np.array_split(np.random.default_rng(0).permutation(len(texts)), rounds)
    plain_s = ours_s = 0.0
    cosines = []
    embedder.tokens_seen = 0
    for n, rows in enumerate(slices):
        batch = [texts[i] for i in rows]
        runs = [
            ("plain", lambda b=batch: embedder.st.encode(b, batch_size=32, normalize_embeddings=True)),
            ("ours", lambda b=batch: embedder.encode(b)),
        ]
        results = {}
        for name, fn in runs if n % 2 == 0 else runs[::-1]:
            results[name] = timed(fn)
        plain_s += results["plain"][0]
        ours_s += results["ours"][0]
        cosines.append((results["plain"][1] * results["ours"][1]).sum(axis=1).min())
    tokens = embedder.tokens_seen
    print(
        f"embedding ({embedder.device}, {len(texts)} chunks of {n_texts} abstracts, {tokens} tokens, "
        f"{torch.get_num_threads()} threads, {rounds} interleaved rounds)"
    )
    print(f"  plain SentenceTransformer.encode(batch_size=32): {len(texts) / plain_s:8.1f} chunks/s")
    print(f"  indexer Embedder.encode:                         {len(texts) / ours_s:8.1f} chunks/s")
    print(f"  speedup: {plain_s / ours_s:.2f}x (target >= 1.3x); min cosine to plain vectors {min(cosines):.5f}")
    if embedder.device == "cuda":
        params = sum(p.numel() for name, p in embedder.st.named_parameters() if "embeddings" not in name)
        achieved = tokens / ours_s * 2 * params
        peak = _gpu_peak_fp16()
        line = f"  tokens/s {tokens / ours_s:,.0f}; ~{achieved / 1e12:.1f} TFLOP/s of matmul work"
        if peak:
            line += f" = {achieved / peak:.1%} of the {peak / 1e12:.0f} TFLOP/s fp16 bound"
        print(line)


def _gpu_peak_fp16() -> float | None:
    import torch

    name = torch.cuda.get_device_name(0)
    for key, peak in (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L4", 121e12)):
        if key in name:
            return peak
    return None


# -- 2. search ------------------------------------------------------------------------------------


def clustered_vectors(n: int, dim: int, seed: int, n_clusters: int) -> np.ndarray:
    """Unit vectors around random centres in a low-rank subspace, like sentence embeddings.

    With many more small clusters than IVF lists, a list holds a mixture of topics and
    true neighbours straddle lists (as with real abstracts).
    """
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).standard_normal((64, dim)).astype(np.float32)
    centres = np.random.default_rng(1).standard_normal((n_clusters, 64)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for first in range(0, n, 100_000):
        m = min(100_000, n - first)
        labels = rng.integers(0, n_clusters, m)
        latent = centres[labels] + 0.6 * rng.standard_normal((m, 64)).astype(np.float32)
        x = latent @ basis + 0.5 * rng.standard_normal((m, dim)).astype(np.float32)
        out[first : first + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def bench_search(sizes: list[int], dim: int = 384, n_queries: int = 1000) -> None:
    import faiss

    from indexer.config import IndexerConfig
    from indexer.factory import (
        add_vectors,
        auto_factory,
        factory_nlist,
        hash_sample,
        recall_at,
        set_nprobe,
        train,
        train_size,
        tune_nprobe,
    )

    cfg = IndexerConfig()
    for n in sizes:
        clusters = max(n // 25, 100)
        data = clustered_vectors(n, dim, seed=n, n_clusters=clusters)
        ids = (np.arange(n, dtype=np.int64) + 1) << 8
        tune_q = clustered_vectors(200, dim, seed=n + 1, n_clusters=clusters)
        test_q = clustered_vectors(n_queries, dim, seed=n + 2, n_clusters=clusters)
        exact = faiss.IndexFlatIP(dim)
        exact.add(data)
        start = time.perf_counter()
        _, truth_rows = exact.search(test_q, 10)
        exact_qps = n_queries / (time.perf_counter() - start)
        truth = np.where(truth_rows >= 0, ids[truth_rows], -1)
        _, tune_rows = exact.search(tune_q, 10)
        tune_truth = ids[tune_rows]

        factory = auto_factory(n, dim, cfg.flat_max, cfg.hnsw_min, cfg.pq_min, cfg.sq8_min)
        start = time.perf_counter()
        sample = data[hash_sample(ids, train_size(factory, n, cfg.train_per_list), salt=1)]
        index = train(factory, dim, sample, use_gpu=False)
        index = add_vectors(index, data, ids, use_gpu=False, progress=lambda _: None)
        build_s = time.perf_counter() - start
        nlist = factory_nlist(factory) or 1

        def search(q: np.ndarray, k: int, nprobe: int, index: Any = index) -> np.ndarray:
            set_nprobe(index, nprobe)
            return index.search(q, k)[1]

        tuning = tune_nprobe(search, tune_q, tune_truth, nlist, cfg.target_recall)
        set_nprobe(index, tuning.nprobe)
        start = time.perf_counter()
        found = index.search(test_q, 10)[1]
        qps = n_queries / (time.perf_counter() - start)
        recall = recall_at(found, truth)
        print(
            f"search at {n:,} vectors ({dim}-d, {clusters:,} synthetic clusters, {faiss.omp_get_max_threads()} threads)"
        )
        print(f"  auto factory {factory}: built in {build_s:.1f}s, nprobe {tuning.nprobe} (tuned on 200 queries)")
        print(f"  recall@10 vs exact IndexFlatIP on {n_queries} held-out queries: {recall:.3f} (target >= 0.95)")
        print(f"  queries/s: auto {qps:,.0f} vs exact {exact_qps:,.0f} = {qps / exact_qps:.1f}x")
        del data, exact, index


# -- 3. incremental rebuild -----------------------------------------------------------------------


def bench_incremental(n_articles: int, device: str) -> None:
    from indexer.build import rebuild
    from indexer.config import IndexerConfig
    from indexer.embedding import Embedder
    from store.writer import ArticleWriter

    embedder = Embedder("default", device=device)
    texts = synthetic_abstracts(n_articles + n_articles // 100, seed=7, sentences_range=(3, 8))
    root = Path(tempfile.mkdtemp(prefix="indexer-bench-"))
    try:

        def write(rows: list[tuple[int, tuple[str, str]]]) -> None:
            with ArticleWriter(root / "store") as writer:
                for pmid, (title, abstract) in rows:
                    writer.write({"pmid": pmid, "version": 1, "title": title, "abstract": abstract, "source": "efetch"})

        base = [(30_000_000 + i, texts[i]) for i in range(n_articles)]
        write(base)
        shard_size = max(n_articles // 10, 1)
        values = {"store": root / "store", "index": root / "index", "shard_size": shard_size, "progress": False}
        cfg = IndexerConfig.model_validate(values)
        full = rebuild(cfg, embedder)
        added = [(30_000_000 + i, texts[i]) for i in range(n_articles, len(texts))]
        write(added)
        incremental = rebuild(cfg, embedder)
        print(f"incremental rebuild ({n_articles} articles, +{len(added)} new = 1%)")
        print(f"  full:        {full.line()}")
        print(f"  incremental: {incremental.line()}")
        print(f"  incremental / full time: {incremental.seconds / full.seconds:.1%} (target <= 5%)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=2000, help="abstracts for the embedding comparison")
    parser.add_argument("--sizes", default="100000,1000000", help="vector counts for the search comparison")
    parser.add_argument("--articles", type=int, default=1000, help="store size for the incremental rebuild")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--skip", action="append", default=[], choices=["embedding", "search", "incremental"])
    args = parser.parse_args()
    if "embedding" not in args.skip:
        bench_embedding(args.texts, args.device)
    if "search" not in args.skip:
        bench_search([int(s) for s in args.sizes.split(",") if s])
    if "incremental" not in args.skip:
        bench_incremental(args.articles, args.device)


if __name__ == "__main__":
    main()
