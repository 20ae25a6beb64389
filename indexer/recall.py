"""Honest recall@10: the index's codes and nprobe against exact search over real vectors.

A hash sample of the index's chunks (at most ``sample`` of them, a few per shard) gets
its real vectors: read back from the shards when their codes are exact (``...,Flat``),
else embedded again from the chunk texts in the ids files. The truth is an exact
``IndexFlatIP`` over those vectors; the measured index is the trained, empty index of
the manifest (same quantizer, same codes) filled with the same vectors. So SQ8 and PQ
losses count against recall, which the compressed index searched with nprobe = nlist
would hide. On a sample sparser than the full index, neighbours lie further apart and
need more lists probed, so the nprobe chosen here errs on the safe side. Memory: the
sample's vectors and texts (``sample`` x (dim floats + one chunk)), plus one shard's ids
(8 bytes a chunk) and one row group of its texts while its sample is picked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexer.errors import CorruptShardError
from indexer.factory import factory_nlist, hash_sample, new_index, noisy_queries, recall_at, set_nprobe, tune_nprobe
from indexer.idsfile import IdsFile
from indexer.manifest import Manifest
from indexer.shards import read_ids, read_index, reconstruct

log = logging.getLogger(__name__)

Encode = Callable[[Sequence[str]], np.ndarray]


def exact_codes(factory: str) -> bool:
    """Whether the factory stores vectors exactly (so stored vectors are the real ones)."""
    return factory.endswith("Flat")


def sample_vectors(
    index_dir: Path, manifest: Manifest, sample: int, encode: Encode | None
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, real vectors) of a hash sample of at most ``sample`` chunks of the index."""
    total = max(manifest.n_vectors, 1)
    exact = exact_codes(manifest.factory)
    if not exact and encode is None:
        raise ValueError("re-embedding the recall sample needs the model")
    all_ids, all_vectors = [], []
    for entry in sorted(manifest.shards, key=lambda e: e.number):
        want = min(entry.n_vectors, max(1, round(sample * entry.n_vectors / total)))
        every = read_ids(index_dir, entry, ["id"]).column("id").to_numpy()
        ids = every[hash_sample(every, want, salt=3)]  # in file (id) order
        if exact:
            vectors = reconstruct(read_index(index_dir, entry, check=False), ids)
        else:
            assert encode is not None
            vectors = encode(_texts(index_dir / entry.ids_file, ids))
        all_ids.append(ids)
        all_vectors.append(np.asarray(vectors, np.float32))
    if not all_ids:
        return np.zeros(0, np.int64), np.zeros((0, manifest.dim), np.float32)
    return np.concatenate(all_ids), np.concatenate(all_vectors)


def _texts(path: Path, ids: np.ndarray) -> list[str]:
    """Chunk texts of ``ids``: `IdsFile` reads a row group at a time, so a shard's texts are
    never all in memory for the few the sample needs."""
    table = IdsFile(path).read_ids(ids, ["text"])
    got = table.column("id").to_numpy()
    order = np.argsort(got, kind="stable")
    if not np.array_equal(got[order], np.unique(ids)):
        raise CorruptShardError(f"{path}: sampled ids missing from the file; run `indexer rebuild --full`")
    rows = order[np.searchsorted(got[order], ids)]
    return [str(t) for t in table.column("text").take(rows).to_pylist()]


def measure_recall(
    index_dir: Path,
    manifest: Manifest,
    n_queries: int,
    target: float | None,
    sample: int = 10_000,
    encode: Encode | None = None,
) -> tuple[int, float]:
    """Recall@10 against exact search on the sample; with ``target``, the smallest nprobe reaching it.

    Returns ``(nprobe, recall)``.
    """
    import faiss

    ids, vectors = sample_vectors(index_dir, manifest, sample, encode)
    nlist = factory_nlist(manifest.factory) or 1
    if not len(ids):
        return manifest.nprobe or 1, 1.0
    exact = faiss.IndexFlatIP(manifest.dim)
    exact.add(vectors)
    queries = noisy_queries(vectors[hash_sample(ids, min(n_queries, len(ids)), salt=4)])
    k = min(10, len(ids))
    truth_ids = ids[exact.search(queries, k)[1]]
    measured = _filled(index_dir, manifest, ids, vectors)

    def search(q: np.ndarray, kk: int, nprobe: int) -> np.ndarray:
        set_nprobe(measured, nprobe)
        return np.asarray(measured.search(q, kk)[1])

    if target is None:
        nprobe = manifest.nprobe or 1
        return nprobe, recall_at(search(queries, k, nprobe), truth_ids)
    tuning = tune_nprobe(search, queries, truth_ids, nlist, target, k)
    return tuning.nprobe, tuning.recall


def _filled(index_dir: Path, manifest: Manifest, ids: np.ndarray, vectors: np.ndarray) -> Any:
    """The manifest's index type, trained as published, holding the sample vectors."""
    import faiss

    if manifest.trained_file:
        index = faiss.read_index(str(index_dir / manifest.trained_file))
    else:
        index = new_index(manifest.factory, manifest.dim)
    index.add_with_ids(np.ascontiguousarray(vectors), np.ascontiguousarray(ids))
    return index
