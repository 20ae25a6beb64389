"""Factory choice, hash sampling, nprobe tuning and the shared-quantizer check (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.errors import CorruptShardError
from indexer.factory import (
    auto_factory,
    hash_sample,
    keep_auto_factory,
    new_index,
    nlist_for,
    quantizer_fingerprint,
    recall_at,
    set_nprobe,
    train,
    tune_nprobe,
)
from indexer.shards import check_same_quantizer, merge_ivf


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim)).astype(np.float32)
    x = centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_auto_factory_tiers() -> None:
    limits = {"flat_max": 50_000, "hnsw_min": 1_000_000, "pq_min": 20_000_000, "sq8_min": 5_000_000}
    assert auto_factory(10_000, 384, **limits) == "IDMap2,Flat"
    assert auto_factory(100_000, 384, **limits) == "IVF1024,Flat"
    assert auto_factory(1_000_000, 384, **limits) == "IVF4096_HNSW32,Flat"
    assert auto_factory(10_000_000, 384, **limits) == "IVF16384_HNSW32,SQ8"
    assert auto_factory(45_000_000, 384, **limits) == "IDMap2,IVF32768_HNSW32,PQ192x4fs,Refine(SQ8)"
    assert nlist_for(1_000_000) == 4096


def test_keep_auto_factory_has_hysteresis() -> None:
    assert keep_auto_factory("IVF1024,Flat", "IVF2048,Flat")
    assert not keep_auto_factory("IVF1024,Flat", "IVF4096,Flat")
    assert not keep_auto_factory("IDMap2,Flat", "IVF1024,Flat")
    assert not keep_auto_factory("IVF1024,Flat", "IVF1024_HNSW32,Flat")


def test_hash_sample_ignores_order_and_is_not_a_prefix() -> None:
    ids = np.arange(10_000, dtype=np.int64) << 8
    picked = set(ids[hash_sample(ids, 500)].tolist())
    shuffled = np.random.default_rng(0).permutation(ids)
    assert set(shuffled[hash_sample(shuffled, 500)].tolist()) == picked
    assert len(picked) == 500 and max(picked) > (5_000 << 8), "spread over the whole range"


def test_nprobe_tuning_reaches_target_recall() -> None:
    data = unit(4000, 32, 1)
    ids = np.arange(len(data), dtype=np.int64)
    queries = unit(100, 32, 2)
    exact = new_index("IDMap2,Flat", 32)
    exact.add_with_ids(data, ids)
    truth = exact.search(queries, 10)[1]
    index = train("IVF64,Flat", 32, data, use_gpu=False)
    index.add_with_ids(data, ids)

    def search(q: np.ndarray, k: int, nprobe: int) -> np.ndarray:
        set_nprobe(index, nprobe)
        return index.search(q, k)[1]

    tuning = tune_nprobe(search, queries, truth, 64, 0.95)
    assert tuning.recall >= 0.95 and 1 < tuning.nprobe <= 64
    assert recall_at(search(queries, 10, max(tuning.nprobe // 2, 1)), truth) < 0.95


def test_shards_with_different_quantizers_are_not_merged() -> None:
    data = unit(2000, 16, 3)
    a = train("IVF16,Flat", 16, data, use_gpu=False)
    b = train("IVF16,Flat", 16, data[::-1].copy() * 0.5 + unit(2000, 16, 4) * 0.5, use_gpu=False)
    a.add_with_ids(data[:1000], np.arange(1000, dtype=np.int64))
    check_same_quantizer([a, a], ["x", "y"], quantizer_fingerprint(a))
    assert merge_ivf([a, a]).ntotal == 2000
    with pytest.raises(CorruptShardError, match="shard-b.faiss: quantizer differs"):
        check_same_quantizer([a, b], ["shard-a.faiss", "shard-b.faiss"], quantizer_fingerprint(a))
