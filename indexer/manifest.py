"""``manifest.json``: the commit point of an index, written last and atomically.

It records the model, its precision and device, library versions, dimension,
normalisation, chunker, FAISS version, factory,
nprobe (and the recall it reached), the trained quantizer and every shard with its
checksums and content digest. Readers trust only what the manifest names, so a
rebuild killed before its manifest swap leaves the previous index untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.errors import NotAnIndexError
from indexer.shards import SHARDS_DIR, ShardEntry
from store.atomic import atomic_write_json, is_temp_name
from store.config import RESOLVED_CONFIG_NAME

MANIFEST_NAME = "manifest.json"
FORMAT = "pubmed-pipeline/faiss-index"
FORMAT_VERSION = 1
CACHE_DIR = "cache"
TRAINED_PREFIX = "trained-"
LOCK_NAME = "rebuild.lock"
_OUR_NAMES = {MANIFEST_NAME, SHARDS_DIR, CACHE_DIR, RESOLVED_CONFIG_NAME, LOCK_NAME}


@dataclass
class Manifest:
    """Everything a reader needs to open and trust the index."""

    model: str
    dim: int
    chunker: str
    faiss_version: str
    factory: str
    factory_auto: bool
    shard_size: int
    shards: list[ShardEntry]
    nprobe: int | None = None
    recall_at_10: float | None = None
    trained_file: str | None = None
    trained_sha256: str | None = None
    quantizer_sha256: str | None = None
    normalized: bool = True
    metric: str = "inner_product"
    created_at: str = ""
    store: str = ""
    precision: str = ""
    """Arithmetic the model ran in (fp32, bf16, fp16); "" in manifests from before it was recorded."""
    device: str = ""
    """What embedded: cpu, or cuda:<GPU name>."""
    versions: dict[str, str] = field(default_factory=dict)
    """Library versions of the build (faiss, torch, transformers, tokenizers, sentence-transformers, ...)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_vectors(self) -> int:
        return sum(s.n_vectors for s in self.shards)

    @property
    def n_articles(self) -> int:
        return sum(s.n_articles for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "shards"}
        data.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            n_vectors=self.n_vectors,
            n_articles=self.n_articles,
            shards=[s.to_json() for s in self.shards],
        )
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        names = set(cls.__dataclass_fields__) - {"shards"}
        values = {k: data[k] for k in names if k in data}
        return cls(shards=[ShardEntry.from_json(s) for s in data["shards"]], **values)


def check_index_folder(index_dir: Path) -> None:
    """Refuse a folder that holds anything the indexer would not have written."""
    if not index_dir.exists():
        return
    if not index_dir.is_dir():
        raise NotAnIndexError(f"{index_dir}: not a folder; point --index at an empty or existing index folder")
    for entry in index_dir.iterdir():
        name = entry.name
        if name in _OUR_NAMES or is_temp_name(name) or (name.startswith(TRAINED_PREFIX) and name.endswith(".faiss")):
            continue
        raise NotAnIndexError(
            f"{index_dir}: not an index folder (found {name!r}); point --index at an empty or existing index folder"
        )


def read_manifest(index_dir: Path) -> Manifest | None:
    """The published manifest, or None where none was published yet."""
    check_index_folder(index_dir)
    path = index_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotAnIndexError(f"{path}: unreadable manifest ({exc}); run `indexer rebuild --full`") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise NotAnIndexError(f"{path}: not an indexer manifest (format is not {FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise NotAnIndexError(f"{path}: manifest format version {data.get('format_version')} is not {FORMAT_VERSION}")
    try:
        return Manifest.from_json(data)
    except (KeyError, TypeError) as exc:
        raise NotAnIndexError(f"{path}: incomplete manifest (missing {exc}); run `indexer rebuild --full`") from exc


def write_manifest(index_dir: Path, manifest: Manifest) -> Path:
    """Publish the manifest: this single atomic rename is what makes a rebuild visible."""
    path = index_dir / MANIFEST_NAME
    atomic_write_json(path, manifest.to_json())
    return path
