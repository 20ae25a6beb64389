"""Indexer benchmark: embedding throughput, search recall/speed, and incremental rebuild cost.

Each part prints a ratio against a named peer measured in the same run:

1. embedding: `indexer.embedding.Embedder.encode` (in fp32 and in its default precision:
   bf16 on CPUs with native bf16, fp16 on CUDA) vs one plain fp32
   ``SentenceTransformer.encode`` call (same weights, same texts: real-length abstracts
   recombined from the fixture sentences), with the cosine to the plain vectors and the
   share of each chunk's 10 nearest neighbours kept; target >= 1.3x on CPU. On CUDA it
   also prints tokens/second against the model's FLOP bound.
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
    """Plain ``SentenceTransformer.encode`` and `Embedder.encode` (fp32 and the default precision)
    embed the chunks `indexer rebuild` would embed for ``n_texts`` abstracts.

    The texts are split into ``rounds`` random slices; each slice is embedded by every
    encoder, rotating which goes first, so a busy machine's load drifts hit all equally.
    Besides the cosine to the plain vectors, it prints how many of each chunk's 10
    nearest chunks (by the plain vectors) each encoder's vectors find.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    from indexer.chunking import Chunker
    from indexer.embedding import Embedder, resolve_model

    ours = Embedder("default", device=device)
    ours_fp32 = Embedder("default", device=device, precision="fp32")
    plain = SentenceTransformer(resolve_model("default")[1], device=ours.device, local_files_only=True)
    chunker = Chunker(ours.count_tokens, ours.max_seq_length, 48)
    texts = [c.text for i, (t, a) in enumerate(synthetic_abstracts(n_texts, seed=1)) for c in chunker.chunk(i, t, a)]
    encoders: dict[str, Any] = {
        "plain": lambda b: plain.encode(b, batch_size=32, normalize_embeddings=True),
        "fp32": ours_fp32.encode,
        ours.precision: ours.encode,
    }
    for encode in encoders.values():
        encode(texts[:32])

    def timed(encode: Any, batch: list[str]) -> tuple[float, np.ndarray]:
        if ours.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = np.asarray(encode(batch), dtype=np.float32)
        if ours.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, out

    order = np.random.default_rng(0).permutation(len(texts))
    seconds = dict.fromkeys(encoders, 0.0)
    vectors = {name: np.zeros((len(texts), ours.dim), dtype=np.float32) for name in encoders}
    names = list(encoders)
    ours.tokens_seen = 0
    for n, rows in enumerate(np.array_split(order, rounds)):
        batch = [texts[i] for i in rows]
        for name in names[n % len(names) :] + names[: n % len(names)]:
            took, out = timed(encoders[name], batch)
            seconds[name] += took
            vectors[name][rows] = out
    tokens = ours.tokens_seen
    print(
        f"embedding ({ours.device}, {len(texts)} chunks of {n_texts} abstracts, {tokens} tokens, "
        f"{torch.get_num_threads()} threads, {rounds} interleaved rounds)"
    )
    queries = order[: min(500, len(texts))]
    truth = _top10(vectors["plain"], queries)
    print(f"  {'encoder':52} {'chunks/s':>9} {'speedup':>8} {'min cos':>8} {'same top-10':>11}")
    for name in encoders:
        label = "plain SentenceTransformer.encode(batch_size=32)" if name == "plain" else f"Embedder.encode, {name}"
        if name == ours.precision:
            label += " (default)"
        cosine = float((vectors["plain"] * vectors[name]).sum(axis=1).min())
        found = _top10(vectors[name], queries)
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found, strict=True)])
        print(
            f"  {label:52} {len(texts) / seconds[name]:9.1f} {seconds['plain'] / seconds[name]:7.2f}x "
            f"{cosine:8.5f} {overlap:11.3f}"
        )
    speedup = seconds["plain"] / seconds[ours.precision]
    print(f"  target: default precision >= 1.3x plain on CPU; measured {speedup:.2f}x")
    if ours.device == "cuda":
        params = sum(p.numel() for name, p in ours.st.named_parameters() if "embeddings" not in name)
        achieved = tokens / seconds[ours.precision] * 2 * params
        peak = _gpu_peak_fp16()
        line = f"  tokens/s {tokens / seconds[ours.precision]:,.0f}; ~{achieved / 1e12:.1f} TFLOP/s of matmul work"
        if peak:
            line += f" = {achieved / peak:.1%} of the {peak / 1e12:.0f} TFLOP/s fp16 bound"
        print(line)


def _top10(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The 10 nearest other chunks of each query chunk, by inner product."""
    scores = vectors[queries] @ vectors.T
    scores[np.arange(len(queries)), queries] = -np.inf
    return np.argsort(-scores, axis=1)[:, :10]


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
