"""A rebuild after `store compact` keeps every shard: shard digests hash live content, not part files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from indexer.build import RebuildSummary
from store.compact import compact
from store.reader import iter_parts, read_articles
from tests.indexer.conftest import delete_articles, write_articles


def _shards(root: Path) -> list[dict[str, Any]]:
    return json.loads((root / "index" / "manifest.json").read_text())["shards"]


def test_rebuild_after_compact_embeds_nothing(
    workspace: Path, abstracts: list[dict[str, Any]], run_rebuild: Callable[..., RebuildSummary]
) -> None:
    store = workspace / "store"
    write_articles(store, abstracts[40:44])
    write_articles(store, abstracts[:10], version=2)  # revisions in parts of their own
    delete_articles(store, [abstracts[20]["pmid"], abstracts[41]["pmid"]])
    first = run_rebuild(workspace)
    assert first.embedded > 0
    shards, files = _shards(workspace), sorted(p.name for p in (workspace / "index" / "shards").iterdir())
    live = read_articles(store)
    parts_before = iter_parts(store)
    summary = compact(store, range_width=100_000_000)  # one range across several shards
    assert summary.parts_after < summary.parts_before and summary.rows_after < summary.rows_before
    assert not set(parts_before) & set(iter_parts(store))
    assert read_articles(store).equals(live)
    again = run_rebuild(workspace)
    assert (again.embedded, again.shards_written, again.full) == (0, 0, False)
    assert again.shards_kept == len(shards) > 1
    assert _shards(workspace) == shards
    assert sorted(p.name for p in (workspace / "index" / "shards").iterdir()) == files
