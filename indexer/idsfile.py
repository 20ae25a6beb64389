"""`IdsFile`: a shard's ids Parquet opened for lookups by id or PMID, without reading it whole.

The file is memory-mapped and only its footer is parsed on open: the id range of each
row group (from the statistics `indexer.shards.write_shard` writes) becomes two small
arrays. A lookup reads only the row groups whose range can hold the ids asked for, and
only the columns asked for; files are sorted by id, so one id costs one row group
(`IDS_ROW_GROUP` rows). Row groups are read one at a time, so a lookup that touches
every group (a hash sample) holds one group plus the rows it keeps. Older files
without statistics or order still answer, by reading more row groups.

Memory: the footer and two int64 arrays per row group; a lookup holds one row group
and the rows it returns. The mapping outlives the file's removal, so an old generation
of the index keeps answering after a rebuild replaced it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from indexer.errors import CorruptShardError


class IdsFile:
    """Row-group-pruned reads of one ids Parquet."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._source = pa.memory_map(str(path), "r")
            self._file = pq.ParquetFile(self._source)
        except (OSError, pa.ArrowException) as exc:
            raise CorruptShardError(f"{path}: corrupt shard ids file ({exc}); run `indexer rebuild --full`") from exc
        meta = self._file.metadata
        self.num_rows = meta.num_rows
        self.columns = set(self._file.schema_arrow.names)
        column = self._file.schema_arrow.get_field_index("id")
        if column < 0:
            raise CorruptShardError(f"{path}: shard ids file has no id column; run `indexer rebuild --full`")
        n = meta.num_row_groups
        self.lo = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
        self.hi = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        for group in range(n):
            stats = meta.row_group(group).column(column).statistics
            if stats is not None and stats.has_min_max:
                self.lo[group], self.hi[group] = int(stats.min), int(stats.max)

    @property
    def has_slots(self) -> bool:
        return "slot" in self.columns

    def groups_for_ranges(self, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        """Row groups whose id range meets any of the disjoint ``[start, stop)`` (sorted by start)."""
        if not len(starts) or not len(self.lo):
            return np.zeros(0, dtype=np.int64)
        # the first range ending after each group's low end must start at or before its high end
        first = np.searchsorted(stops, self.lo, side="right")
        first = np.minimum(first, len(starts) - 1)
        meets = (stops[first] > self.lo) & (starts[first] <= self.hi)
        return np.flatnonzero(meets)

    def read_ranges(self, starts: np.ndarray, stops: np.ndarray, columns: Sequence[str]) -> pa.Table:
        """Rows whose id lies in any of the disjoint ``[start, stop)``, with ``columns`` (id always included)."""
        order = np.argsort(starts, kind="stable")
        starts, stops = starts[order], stops[order]
        groups = self.groups_for_ranges(starts, stops)
        names = ["id", *[c for c in columns if c != "id"]]
        if not len(groups):
            return pa.table({n: pa.array([], type=self._file.schema_arrow.field(n).type) for n in names})
        parts = []
        for group in groups.tolist():  # one row group at a time: memory is one group plus the rows kept
            try:
                table = self._file.read_row_group(group, columns=names)
            except (OSError, pa.ArrowException) as exc:
                message = f"{self.path}: corrupt shard ids file ({exc}); run `indexer rebuild --full`"
                raise CorruptShardError(message) from exc
            ids = table.column("id").to_numpy()
            where = np.searchsorted(starts, ids, side="right") - 1
            keep = (where >= 0) & (ids < stops[np.maximum(where, 0)])
            parts.append(table.filter(pa.array(keep)))
        return pa.concat_tables(parts)

    def read_ids(self, ids: np.ndarray, columns: Sequence[str]) -> pa.Table:
        """Rows of exactly these ids (any order, no duplicates needed)."""
        wanted = np.unique(np.asarray(ids, dtype=np.int64))
        table = self.read_ranges(wanted, wanted + 1, columns)
        return table.filter(pc.is_in(table.column("id"), pa.array(wanted)))

    def read_pmids(self, pmids: np.ndarray, columns: Sequence[str]) -> pa.Table:
        """Rows of every chunk of these articles (ids are ``pmid << 8 | chunk``)."""
        wanted = np.unique(np.asarray(pmids, dtype=np.int64))
        return self.read_ranges(wanted << 8, (wanted + 1) << 8, columns)

    def read_all(self, columns: Sequence[str]) -> pa.Table:
        """Every row, ``columns`` only (build and verify use this; search does not)."""
        return self._file.read(columns=list(columns))
