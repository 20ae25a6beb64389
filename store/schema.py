"""The versioned Arrow schema of an article and of a deletion, and row validation.

A row is a plain ``dict`` keyed by field name. `validate_article` checks one row against
`ARTICLE_SCHEMA` and raises `SchemaError` naming the offending field, so a bad record
never reaches a Parquet part. `check_pmid` and `parse_pmid` are the one PMID check of the
project (store rows, crawl inputs and responses, the trainer's question files): a PMID is
an integer from 1 to `PMID_MAX`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 1
SCHEMA_VERSION_KEY = b"pubmed_store.schema_version"

SOURCES = ("efetch", "baseline", "html")

SECTION_TYPE = pa.struct(
    [
        pa.field("label", pa.string()),
        pa.field("category", pa.string()),
        pa.field("text", pa.string()),
    ]
)

ARTICLE_SCHEMA = pa.schema(
    [
        pa.field("pmid", pa.int64(), nullable=False),
        pa.field("version", pa.int32(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("vernacular_title", pa.string()),
        pa.field("abstract", pa.string()),
        pa.field("abstract_sections", pa.list_(SECTION_TYPE)),
        pa.field("journal", pa.string()),
        pa.field("pub_year", pa.int32()),
        pa.field("pub_date", pa.string()),
        pa.field("authors", pa.list_(pa.string())),
        pa.field("mesh_terms", pa.list_(pa.string())),
        pa.field("publication_types", pa.list_(pa.string())),
        pa.field("language", pa.list_(pa.string())),
        pa.field("doi", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("fetched_at", pa.timestamp("ms", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()},
)

DELETION_SCHEMA = pa.schema(
    [
        pa.field("pmid", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("deleted_at", pa.timestamp("ms", tz="UTC"), nullable=False),
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()},
)


class SchemaError(ValueError):
    """A row does not match the article schema; the message names the field."""


# PMIDs are 8 digits today; 10 digits leave room and keep ``pmid << 8 | chunk`` ids inside int64.
PMID_MAX = 9_999_999_999
_PMID_TEXT = re.compile(r"[0-9]{1,10}")


def check_pmid(value: object) -> int:
    """``value`` if it is a PMID (an int, not a bool, from 1 to `PMID_MAX`); else ValueError naming it."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= PMID_MAX:
        return value
    raise ValueError(f"not a PMID (an integer from 1 to {PMID_MAX}): {value!r}")


def parse_pmid(text: str) -> int:
    """The PMID written in ``text`` (ASCII digits, surrounding whitespace allowed); else ValueError."""
    stripped = text.strip()
    if not _PMID_TEXT.fullmatch(stripped):
        raise ValueError(f"not a PMID (an integer from 1 to {PMID_MAX}): {text!r}")
    return check_pmid(int(stripped))


_STRING_FIELDS = ("title", "vernacular_title", "abstract", "journal", "pub_date", "doi")
_LIST_FIELDS = ("authors", "mesh_terms", "publication_types", "language")
_INT32_MAX = 2**31 - 1


def _where(row: Mapping[str, Any]) -> str:
    pmid = row.get("pmid")
    return f" (pmid {pmid})" if isinstance(pmid, int) else ""


def validate_article(row: Mapping[str, Any]) -> dict[str, Any]:
    """Return a complete, checked copy of ``row``; raise `SchemaError` naming the field.

    Missing optional fields become null / empty lists; unknown fields are errors.
    """
    unknown = sorted(set(row) - set(ARTICLE_SCHEMA.names))
    if unknown:
        raise SchemaError(f"unknown field {unknown[0]!r}{_where(row)}; known: {', '.join(ARTICLE_SCHEMA.names)}")
    out: dict[str, Any] = {}
    pmid = row.get("pmid")
    try:
        out["pmid"] = check_pmid(pmid)
    except ValueError:
        raise SchemaError(f"field 'pmid' must be an integer from 1 to {PMID_MAX}, got {pmid!r}") from None
    version = row.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= _INT32_MAX:
        raise SchemaError(f"field 'version' must be an integer >= 1, got {version!r}{_where(row)}")
    out["version"] = version
    for name in _STRING_FIELDS:
        value = row.get(name)
        if value is not None and not isinstance(value, str):
            raise SchemaError(f"field {name!r} must be a string or null, got {type(value).__name__}{_where(row)}")
        out[name] = value
    sections = row.get("abstract_sections") or []
    if not isinstance(sections, list):
        raise SchemaError(f"field 'abstract_sections' must be a list, got {type(sections).__name__}{_where(row)}")
    checked_sections = []
    for i, section in enumerate(sections):
        if not isinstance(section, Mapping) or not isinstance(section.get("text"), str):
            raise SchemaError(f"field 'abstract_sections[{i}]' must have a string 'text'{_where(row)}")
        extra = set(section) - {"label", "category", "text"}
        if extra:
            raise SchemaError(f"field 'abstract_sections[{i}]' has unknown key {sorted(extra)[0]!r}{_where(row)}")
        for key in ("label", "category"):
            if section.get(key) is not None and not isinstance(section.get(key), str):
                raise SchemaError(f"field 'abstract_sections[{i}].{key}' must be a string or null{_where(row)}")
        checked_sections.append(
            {"label": section.get("label"), "category": section.get("category"), "text": section["text"]}
        )
    out["abstract_sections"] = checked_sections
    year = row.get("pub_year")
    if year is not None and (not isinstance(year, int) or isinstance(year, bool) or not 0 < year < 10000):
        raise SchemaError(f"field 'pub_year' must be a year (1-9999) or null, got {year!r}{_where(row)}")
    out["pub_year"] = year
    for name in _LIST_FIELDS:
        value = row.get(name) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SchemaError(f"field {name!r} must be a list of strings{_where(row)}")
        out[name] = list(value)
    source = row.get("source")
    if source not in SOURCES:
        raise SchemaError(f"field 'source' must be one of {', '.join(SOURCES)}, got {source!r}{_where(row)}")
    out["source"] = source
    fetched_at = row.get("fetched_at")
    if fetched_at is None:
        fetched_at = dt.datetime.now(dt.UTC)
    if not isinstance(fetched_at, dt.datetime):
        raise SchemaError(f"field 'fetched_at' must be a datetime, got {type(fetched_at).__name__}{_where(row)}")
    if fetched_at.tzinfo is None:
        fetched_at = fetched_at.replace(tzinfo=dt.UTC)
    out["fetched_at"] = fetched_at
    return out


def schema_version_of(schema: pa.Schema) -> int | None:
    """The schema version recorded in a Parquet file's Arrow metadata, or None."""
    raw = (schema.metadata or {}).get(SCHEMA_VERSION_KEY)
    return int(raw) if raw is not None else None
