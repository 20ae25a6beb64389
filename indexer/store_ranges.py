"""PMID-range reads of the store for the indexer: `store.reader`'s streaming reader when present.

Where the installed ``store.reader`` predates its streaming API (``live_ranges``,
``iter_live_batches``), a fallback reads the live articles with `read_articles` and cuts
them into ranges; that fallback's memory is the whole store's titles and abstracts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

try:
    from store.reader import iter_live_batches, live_ranges  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # pragma: no cover - only before the streaming reader exists

    def live_ranges(store_path: str | os.PathLike[str], width: int) -> list[tuple[int, int]]:
        from store.reader import read_articles

        pmids = read_articles(store_path, columns=["pmid"]).column("pmid").to_numpy()
        return [(int(n) * width, (int(n) + 1) * width) for n in np.unique(pmids // width)]

    def iter_live_batches(
        store_path: str | os.PathLike[str],
        lo: int,
        hi: int,
        columns: Sequence[str] | None = None,
        batch_pmids: int = 100_000,
    ) -> Iterator[pa.Table]:
        from store.reader import read_articles

        table = read_articles(store_path, columns=columns)
        pmid = table.column("pmid")
        yield table.filter(pc.and_(pc.greater_equal(pmid, lo), pc.less(pmid, hi)))


__all__ = ["iter_live_batches", "live_ranges"]
