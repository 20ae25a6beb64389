"""Typed stage configuration loaded from ``pipeline.toml`` and overridden by CLI flags.

Each stage has one model (`StoreConfig` here, ``IndexerConfig`` in indexer, ``TrainerConfig``
in trainer), all subclasses of `StageConfig`: unknown keys and wrong types are errors
that name the key, and every run writes its resolved config beside its output.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from store.atomic import atomic_write_json

DEFAULT_CONFIG_FILE = Path("pipeline.toml")
RESOLVED_CONFIG_NAME = "config.resolved.json"
STAGE_TABLES = ("store", "indexer", "trainer")

ConfigPath = Annotated[Path, Field(strict=False)]
"""A path field: a TOML string or a CLI value, kept as `pathlib.Path`."""


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message names file and key."""


class StageConfig(BaseModel):
    """Base of every stage's configuration: strict types, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True, frozen=False)


class StoreConfig(StageConfig):
    """Where the article store lives and how its Parquet parts are cut."""

    path: ConfigPath = Field(default=Path("data/pubmed"), description="Folder of the article store.")
    part_rows: int = Field(default=10_000, gt=0, description="Articles per Parquet part before a new part starts.")


C = TypeVar("C", bound=StageConfig)


def read_config_file(path: str | os.PathLike[str] | None = None) -> tuple[Path | None, dict[str, Any]]:
    """Parse a pipeline TOML file; ``None`` means ``./pipeline.toml`` when it exists."""
    if path is None:
        if not DEFAULT_CONFIG_FILE.is_file():
            return None, {}
        path = DEFAULT_CONFIG_FILE
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: config file not found")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    unknown = [key for key in data if key not in STAGE_TABLES]
    if unknown:
        raise ConfigError(f"{file}: unknown table [{unknown[0]}]; known tables: {', '.join(STAGE_TABLES)}")
    return file, data


def _describe(error: dict[str, Any], where: str) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(table)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key {key!r}"
    return f"{where}: key {key!r}: {error['msg']} (got {error.get('input')!r})"


def load_config(
    cls: type[C],
    table: str,
    path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> C:
    """Build ``cls`` from table ``[table]`` of the config file, then CLI ``overrides``.

    Overrides whose value is ``None`` (a flag the user did not give) are ignored.
    """
    file, data = read_config_file(path)
    values = data.get(table, {})
    where = f"{file} [{table}]" if file else f"[{table}]"
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: must be a table")
    merged = dict(values)
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return cls.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        known = ", ".join(cls.model_fields)
        message = _describe(dict(first), where)
        if first["type"] == "extra_forbidden":
            message += f"; known keys: {known}"
        raise ConfigError(message) from None


def write_resolved_config(cfg: StageConfig, folder: str | os.PathLike[str]) -> Path:
    """Write the fully resolved config as JSON beside a run's output; returns the file."""
    target = Path(folder) / RESOLVED_CONFIG_NAME
    atomic_write_json(target, {"stage": type(cfg).__name__, "config": cfg.model_dump(mode="json")})
    return target
