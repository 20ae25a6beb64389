"""Errors of the indexer: each message says what went wrong and where, in one line."""

from __future__ import annotations


class IndexerError(RuntimeError):
    """A pipeline error of the indexer; the CLI prints its message and exits 1."""


class EmptyStoreError(IndexerError):
    """The store holds no article with a title or an abstract."""


class DimensionMismatchError(IndexerError):
    """The embedding model's dimension differs from the one recorded in the manifest."""


class CorruptShardError(IndexerError):
    """A shard file is missing, fails its checksum, or cannot be read."""


class NotAnIndexError(IndexerError):
    """The index folder holds files that the indexer did not write."""


class ModelError(IndexerError):
    """The embedding model cannot be found or loaded."""
