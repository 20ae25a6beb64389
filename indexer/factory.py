"""Chooses, builds and trains the FAISS index type, and tunes nprobe against exact search.

``auto`` picks by vector count: exact ``Flat`` when small, ``IVF<nlist>,Flat`` when
medium, an HNSW quantizer (fast assignment of millions of vectors) with Flat and then
SQ8 codes at large scale, and 4-bit fast-scan PQ with SQ8 re-ranking at PubMed scale;
nlist is about 4 sqrt(N), rounded to a power of two so it stays put while the
collection grows. Training uses a hash-based sample of chunk
ids, never the first N. Every index is searched by inner product on normalised vectors.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_IVF = re.compile(r"IVF(\d+)")
KMEANS_ITERATIONS = 10
HNSW_MIN_EF = 64


@dataclass(frozen=True)
class Tuning:
    """Outcome of nprobe tuning: the value chosen and the recall@10 it reached."""

    nprobe: int
    recall: float
    queries: int


def nlist_for(n_vectors: int) -> int:
    """About 4 sqrt(N) inverted lists, rounded to the nearest power of two."""
    ideal = 4 * math.sqrt(max(n_vectors, 1))
    return max(1, 2 ** round(math.log2(ideal)))


def auto_factory(n_vectors: int, dim: int, flat_max: int, hnsw_min: int, pq_min: int, sq8_min: int = 5_000_000) -> str:
    """The factory string ``auto`` means for ``n_vectors`` vectors of ``dim`` dimensions."""
    if n_vectors <= flat_max:
        return "IDMap2,Flat"
    nlist = nlist_for(n_vectors)
    if n_vectors < hnsw_min:
        return f"IVF{nlist},Flat"
    if n_vectors < sq8_min:
        return f"IVF{nlist}_HNSW32,Flat"
    if n_vectors < pq_min or dim % 2:
        return f"IVF{nlist}_HNSW32,SQ8"
    return f"IDMap2,IVF{nlist}_HNSW32,PQ{dim // 2}x4fs,Refine(SQ8)"


def keep_auto_factory(previous: str, proposed: str) -> bool:
    """True when an index built with ``previous`` may stay as is although ``proposed`` is now ideal.

    Same structure, nlist within a factor of two: retraining would buy little.
    """
    old, new = _IVF.search(previous), _IVF.search(proposed)
    if old is None or new is None:
        return previous == proposed
    if _IVF.sub("IVF", previous) != _IVF.sub("IVF", proposed):
        return False
    ratio = int(new.group(1)) / int(old.group(1))
    return 0.5 <= ratio <= 2


def factory_nlist(factory: str) -> int | None:
    match = _IVF.search(factory)
    return int(match.group(1)) if match else None


def new_index(factory: str, dim: int) -> Any:
    """An empty index for ``factory`` that accepts our own ids (wrapped in IDMap2 when needed)."""
    import faiss

    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise ValueError(f"factory {factory!r} is not a valid FAISS factory string: {reason}") from exc
    if not factory.startswith("IDMap") and not isinstance(faiss.downcast_index(index), faiss.IndexIVF):
        index = faiss.IndexIDMap2(index)
    return index


def ivf_of(index: Any) -> Any | None:
    """The IndexIVF inside ``index`` (through IDMap / Refine wrappers), or None."""
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def is_plain_ivf(index: Any) -> bool:
    """True for an IndexIVF not wrapped in IDMap / Refine (such shards can be merged)."""
    import faiss

    return isinstance(faiss.downcast_index(index), faiss.IndexIVF)


def needs_training(factory: str, dim: int) -> bool:
    return not new_index(factory, dim).is_trained


def hash_z(ids: np.ndarray, salt: int = 0) -> np.ndarray:
    """A 64-bit hash of each id (splitmix64): samples take the ids of smallest hash."""
    with np.errstate(over="ignore"):
        z = np.asarray(ids).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(salt + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hash_sample(ids: np.ndarray, size: int, salt: int = 0) -> np.ndarray:
    """Positions of ``size`` ids chosen by a hash of the id: order-independent and repeatable.

    The same ids as keeping the ``size`` smallest `hash_z` values while streaming.
    """
    if size >= len(ids):
        return np.arange(len(ids))
    z = hash_z(ids, salt)
    return np.sort(np.argpartition(z, size - 1)[:size])


def train_size(factory: str, n_vectors: int, per_list: int) -> int:
    nlist = factory_nlist(factory) or 256
    return min(n_vectors, max(per_list * nlist, 10_000))


def train(factory: str, dim: int, sample: np.ndarray, use_gpu: bool) -> Any:
    """A trained, empty index; k-means runs on the GPUs when ``use_gpu``."""
    import faiss

    index = new_index(factory, dim)
    ivf = ivf_of(index)
    if use_gpu and ivf is not None and faiss.get_num_gpus() > 0:
        try:
            ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(dim))
        except (AttributeError, RuntimeError) as exc:
            log.warning("GPU clustering unavailable (%s); training on CPU", exc)
    if ivf is not None:
        ivf.cp.niter = KMEANS_ITERATIONS
    if ivf is not None and len(sample) < ivf.nlist:
        raise ValueError(f"factory {factory!r} needs at least {ivf.nlist} training vectors, have {len(sample)}")
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    if ivf is not None:
        ivf.clustering_index = None
        _set_quantizer_ef(ivf, HNSW_MIN_EF)
    return index


def add_vectors(index: Any, vectors: np.ndarray, ids: np.ndarray, use_gpu: bool, progress: Callable[[int], Any]) -> Any:
    """Add in blocks (for progress); on GPU when the index type has a GPU twin. Returns the index."""
    import faiss

    block = 65_536
    target = index
    on_gpu = False
    if use_gpu and faiss.get_num_gpus() > 0 and len(vectors) > block:
        try:
            target = faiss.index_cpu_to_all_gpus(index)
            on_gpu = True
        except (AttributeError, RuntimeError):
            target = index
    for first in range(0, len(vectors), block):
        stop = min(first + block, len(vectors))
        target.add_with_ids(np.ascontiguousarray(vectors[first:stop]), np.ascontiguousarray(ids[first:stop]))
        progress(stop - first)
    return faiss.index_gpu_to_cpu(target) if on_gpu else target


def quantizer_fingerprint(index: Any) -> str | None:
    """SHA-256 of the coarse centroids; None for indexes without a quantizer."""
    ivf = ivf_of(index)
    if ivf is None:
        return None
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    digest = hashlib.sha256(np.ascontiguousarray(centroids, dtype=np.float32).tobytes())
    return digest.hexdigest()


def set_nprobe(index: Any, nprobe: int) -> None:
    """Set nprobe (and a re-ranking depth) through any wrapper; no-op for exact indexes."""
    import faiss

    ivf = ivf_of(index)
    if ivf is None:
        return
    params = faiss.ParameterSpace()
    params.set_index_parameter(index, "nprobe", min(nprobe, ivf.nlist))
    _set_quantizer_ef(ivf, max(HNSW_MIN_EF, 2 * nprobe))
    if "Refine" in type(faiss.downcast_index(getattr(index, "index", index))).__name__:
        params.set_index_parameter(index, "k_factor", 4)


def _set_quantizer_ef(ivf: Any, ef: int) -> None:
    """An HNSW coarse quantizer returns fewer lists than asked (-1s) unless efSearch is large enough."""
    import faiss

    quantizer = faiss.downcast_index(ivf.quantizer)
    if hasattr(quantizer, "hnsw"):
        quantizer.hnsw.efSearch = ef


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each true top-k present in the found top-k."""
    hits = sum(len(set(f[f >= 0]) & set(t[t >= 0])) for f, t in zip(found, truth, strict=True))
    total = sum(int((t >= 0).sum()) for t in truth)
    return hits / total if total else 1.0


def noisy_queries(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """Queries near stored vectors (cosine about 0.7), like questions near their abstracts."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(vectors.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    queries = unit + noise
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def tune_nprobe(
    search: Callable[[np.ndarray, int, int], np.ndarray],
    queries: np.ndarray,
    truth: np.ndarray,
    nlist: int,
    target: float,
    k: int = 10,
) -> Tuning:
    """Smallest power-of-two nprobe whose recall@k against ``truth`` reaches ``target``.

    The measured recall must clear the target by two standard errors of the estimate,
    so the chosen nprobe also holds on queries other than the tuning sample.
    ``search(queries, k, nprobe)`` returns the ids found.
    """
    margin = 2 * math.sqrt(target * (1 - target) / max(len(queries) * k, 1))
    nprobe = 1
    while True:
        recall = recall_at(search(queries, k, nprobe), truth)
        log.info("nprobe %d: recall@%d %.3f", nprobe, k, recall)
        if recall >= min(target + margin, 1.0) or nprobe >= nlist:
            return Tuning(nprobe=nprobe, recall=recall, queries=len(queries))
        nprobe = min(nprobe * 2, nlist)
