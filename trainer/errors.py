"""Errors of the trainer: each message says what went wrong and where, in one line."""

from __future__ import annotations


class TrainerError(RuntimeError):
    """A pipeline error of the trainer; the CLI prints its message and exits 1."""
