"""Which files of an index folder a rebuild wrote, and removing those no manifest names.

Only names the indexer itself gives (`shard-NNNNN-<digest>.faiss|.ids.parquet`,
`trained-<digest>.faiss`, their ``.tmp-`` temp files) are ever deleted; anything else a
user puts under the index folder, ``shards/`` or ``cache/`` stays.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from indexer.manifest import TRAINED_PREFIX, Manifest
from indexer.shards import SHARDS_DIR

SHARD_FILE = re.compile(r"shard-\d{5}-[0-9a-f]{12}\.(faiss|ids\.parquet)")
TRAINED_FILE = re.compile(re.escape(TRAINED_PREFIX) + r"[0-9a-f]{12}\.faiss")
_TEMP = re.compile(
    r"\.tmp-(shard-\d{5}-[0-9a-f]{12}\.(faiss|ids\.parquet)|trained-[0-9a-f]{12}\.faiss|manifest\.json"
    r"|config\.resolved\.json)\..+"
)
STALE_TEMP_S = 3600.0


def _stale_temp(path: Path, now: float) -> bool:
    return bool(_TEMP.fullmatch(path.name)) and path.is_file() and now - path.stat().st_mtime >= STALE_TEMP_S


def remove_unreferenced(index_dir: Path, manifest: Manifest) -> int:
    """Delete our shard and trained files the published manifest no longer names; returns the count."""
    keep = {Path(e.index_file).name for e in manifest.shards} | {Path(e.ids_file).name for e in manifest.shards}
    now = time.time()
    removed = 0
    folder = index_dir / SHARDS_DIR
    candidates = list(folder.iterdir()) if folder.is_dir() else []
    for path in candidates:
        ours = bool(SHARD_FILE.fullmatch(path.name)) and path.name not in keep and path.is_file()
        if ours or _stale_temp(path, now):
            path.unlink(missing_ok=True)
            removed += 1
    for path in index_dir.iterdir():
        if (TRAINED_FILE.fullmatch(path.name) and path.name != manifest.trained_file) or _stale_temp(path, now):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
