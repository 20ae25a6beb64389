"""Stage configuration: TOML tables, CLI overrides, errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from store.config import ConfigError, StoreConfig, load_config, write_resolved_config


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return path


def test_table_then_overrides(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[store]\npath = "x/store"\npart_rows = 50\n')
    cfg = load_config(StoreConfig, "store", path, {"part_rows": 7, "path": None})
    assert cfg.path == Path("x/store") and cfg.part_rows == 7


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(StoreConfig, "store") == StoreConfig()


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[store]\npart_rowz = 5\n")
    with pytest.raises(ConfigError, match=r"\[store\]: unknown key 'part_rowz'; known keys: path, part_rows"):
        load_config(StoreConfig, "store", path)


def test_unknown_table_is_named(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[stor]\npath = 'a'\n")
    with pytest.raises(ConfigError, match=r"unknown table \[stor\]"):
        load_config(StoreConfig, "store", path)


def test_wrong_type_is_named(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[store]\npart_rows = "many"\n')
    with pytest.raises(ConfigError, match="key 'part_rows'"):
        load_config(StoreConfig, "store", path)
    with pytest.raises(ConfigError, match="key 'part_rows'"):
        load_config(StoreConfig, "store", None, {"part_rows": 0})


def test_broken_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(StoreConfig, "store", _toml(tmp_path, "[store\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(StoreConfig, "store", tmp_path / "nope.toml")


def test_resolved_config_written_beside_output(tmp_path: Path) -> None:
    written = write_resolved_config(StoreConfig(part_rows=3), tmp_path / "run")
    assert json.loads(written.read_text()) == {
        "stage": "StoreConfig",
        "config": {"path": "data/pubmed", "part_rows": 3},
    }
