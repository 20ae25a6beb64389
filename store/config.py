"""Typed stage configuration loaded from ``pipeline.toml`` and overridden by CLI flags.

Each stage has one model (`StoreConfig` here, ``IndexerConfig`` in indexer, ``TrainerConfig``
in trainer), all subclasses of `StageConfig`: unknown keys and wrong types are errors
that name the key (with a "did you mean" for near misses), and every run writes its
resolved config beside its output, with what actually ran (device, precision, versions).
`resolve_config` also says where each value came from (default, file table and key, a
flag); values set once for all stages (the store path: ``[store] path``) are declared by
a model's ``shared_keys`` and refused in its own table.
"""

from __future__ import annotations

import difflib
import json
import os
import platform
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from store.atomic import atomic_write_json

DEFAULT_CONFIG_FILE = Path("pipeline.toml")
RESOLVED_CONFIG_NAME = "config.resolved.json"
STAGE_TABLES = ("store", "indexer", "trainer")

ConfigPath = Annotated[Path, Field(strict=False)]
"""A path field: a TOML string or a CLI value, kept as `pathlib.Path`."""


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message names file and key."""


class FlagError(ConfigError):
    """A command-line value the config model rejects; the message names the flag."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


class StageConfig(BaseModel):
    """Base of every stage's configuration: strict types, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True, frozen=False)

    shared_keys: ClassVar[dict[str, tuple[str, str]]] = {}
    """Fields set once for every stage in another table: field -> (table, key); refused in the stage's own table."""


class StoreConfig(StageConfig):
    """Where the article store lives and how its Parquet parts are cut."""

    path: ConfigPath = Field(default=Path("data/pubmed"), description="Folder of the article store.")
    part_rows: int = Field(default=10_000, gt=0, description="Articles per Parquet part before a new part starts.")


C = TypeVar("C", bound=StageConfig)


def _did_you_mean(name: str, known: list[str] | tuple[str, ...], wrap: str = "{!r}") -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {wrap.format(close[0])}?)" if close else ""


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
    for name, value in data.items():
        if name not in STAGE_TABLES:
            hint = _did_you_mean(name, STAGE_TABLES, "[{}]")
            raise ConfigError(f"{file}: unknown table [{name}]{hint}; known tables: {', '.join(STAGE_TABLES)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: [{name}] must be a table")
    return file, data


class FlagValue(NamedTuple):
    """A value given on the command line (or by an environment variable) and where: ``--shard-size``, ``env X``."""

    value: Any
    source: str


@dataclass
class Resolved(Generic[C]):
    """A loaded stage config and, per field, where its value came from."""

    config: C
    table: str
    sources: dict[str, str] = field(default_factory=dict)

    def source(self, key: str) -> str:
        return self.sources.get(key, "default")

    def show(self) -> str:
        """The merged config as TOML-like lines, each with its origin."""
        lines = [f"[{self.table}]"]
        for key, value in self.config.model_dump(mode="json").items():
            lines.append(f"{key} = {json.dumps(value)}    # {self.source(key)}")
        return "\n".join(lines)


def _describe(error: dict[str, Any], where: str) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(table)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key {key!r}"
    return f"{where}: key {key!r}: {error['msg']} (got {error.get('input')!r})"


def resolve_config(
    cls: type[C],
    table: str,
    path: str | os.PathLike[str] | None = None,
    flags: dict[str, FlagValue] | None = None,
) -> Resolved[C]:
    """Build ``cls`` from ``[table]`` of the config file, then ``flags``; record each value's origin.

    A value a flag gave that the model rejects raises `FlagError` naming the flag; one from
    the file raises `ConfigError` naming file, table and key.
    """
    file, data = read_config_file(path)
    label = str(file) if file else ""
    where = f"{label} [{table}]".strip()
    values: dict[str, Any] = data.get(table, {})
    known = [key for key in cls.model_fields if key not in cls.shared_keys]
    for key in values:
        if key in cls.shared_keys:
            other, other_key = cls.shared_keys[key]
            raise ConfigError(
                f"{where}: key {key!r} is not set here: set it once for every stage as [{other}] {other_key}"
            )
        if key not in cls.model_fields:
            hint = _did_you_mean(key, known)
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; known keys: {', '.join(known)}")
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, (other, other_key) in cls.shared_keys.items():
        if other_key in data.get(other, {}):
            merged[key] = data[other][other_key]
            sources[key] = f"{label} [{other}] {other_key}".strip()
    for key, value in values.items():
        merged[key] = value
        sources[key] = f"{where} {key}"
    for key, given in (flags or {}).items():
        merged[key] = given.value
        sources[key] = given.source
    try:
        return Resolved(cls.model_validate(merged), table, sources)
    except ValidationError as exc:
        first: dict[str, Any] = dict(exc.errors()[0])
    key = str(first["loc"][0]) if first["loc"] else ""
    msg = str(first["msg"])
    if key in (flags or {}):
        raise FlagError(sources[key], f"{msg} (got {first.get('input')!r})") from None
    if key in cls.shared_keys and key in sources:
        raise ConfigError(f"{sources[key]}: {msg} (got {first.get('input')!r})") from None
    if not key:  # a rule across fields: name every flag that took part
        named = sorted({s for s in sources.values() if s.startswith("-")})
        origin = ", ".join(named) if named else where
        raise ConfigError(f"{origin}: {msg.removeprefix('Value error, ')}") from None
    raise ConfigError(_describe(first, where)) from None


def load_config(
    cls: type[C],
    table: str,
    path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> C:
    """Build ``cls`` from table ``[table]`` of the config file, then ``overrides`` (by key).

    Overrides whose value is ``None`` (a flag the user did not give) are ignored.
    """
    flags = {k: FlagValue(v, f"key {k!r}") for k, v in (overrides or {}).items() if v is not None}
    try:
        return resolve_config(cls, table, path, flags).config
    except FlagError as exc:
        raise ConfigError(f"[{table}] {exc}") from None


def configured_store_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The store folder every stage uses: ``[store] path`` of pipeline.toml, else the default."""
    return Path(load_config(StoreConfig, "store", path).path)


def installed_versions(*names: str) -> dict[str, str]:
    """Versions of the named distributions that are installed, with Python's and this project's."""
    found = {"python": platform.python_version()}
    for name in ("pubmed-pipeline", *names):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def write_resolved_config(cfg: StageConfig, folder: str | os.PathLike[str], ran: dict[str, Any] | None = None) -> Path:
    """Write the resolved config as JSON beside a run's output; returns the file.

    ``ran`` records what actually ran where the config says ``auto`` (device, precision) and
    library versions; Python's and this project's versions are always recorded.
    """
    target = Path(folder) / RESOLVED_CONFIG_NAME
    ran = {**(ran or {})}
    ran["versions"] = {**installed_versions(), **ran.get("versions", {})}
    atomic_write_json(target, {"stage": type(cfg).__name__, "config": cfg.model_dump(mode="json"), "ran": ran})
    return target
