"""Stage configuration: TOML tables, CLI overrides, errors that name the key or flag, provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from store.config import (
    ConfigError,
    FlagError,
    FlagValue,
    StoreConfig,
    configured_store_path,
    load_config,
    resolve_config,
    write_resolved_config,
)


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
    expected = f"{path} [store]: unknown key 'part_rowz' (did you mean 'part_rows'?); known keys: path, part_rows"
    with pytest.raises(ConfigError) as caught:
        load_config(StoreConfig, "store", path)
    assert str(caught.value) == expected
    far = _toml(tmp_path, "[store]\nzzz = 5\n")
    with pytest.raises(ConfigError, match="unknown key 'zzz'; known keys") as caught:
        load_config(StoreConfig, "store", far)
    assert "did you mean" not in str(caught.value)


def test_unknown_table_is_named(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[stor]\npath = 'a'\n")
    with pytest.raises(ConfigError, match=r"unknown table \[stor\] \(did you mean \[store\]\?\); known tables: store"):
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
    data = json.loads(written.read_text())
    assert data["stage"] == "StoreConfig" and data["config"] == {"path": "data/pubmed", "part_rows": 3}
    assert set(data["ran"]["versions"]) >= {"python", "pubmed-pipeline"}
    ran = write_resolved_config(StoreConfig(), tmp_path / "run2", {"device": "cpu", "versions": {"torch": "9"}})
    assert json.loads(ran.read_text())["ran"]["device"] == "cpu"
    assert json.loads(ran.read_text())["ran"]["versions"]["torch"] == "9"


def test_provenance_of_every_value(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[store]\npath = "from/file"\n')
    resolved = resolve_config(StoreConfig, "store", path, {"part_rows": FlagValue(7, "--part-rows")})
    assert resolved.config == StoreConfig(path=Path("from/file"), part_rows=7)
    assert resolved.sources == {"path": f"{path} [store] path", "part_rows": "--part-rows"}
    shown = resolved.show().splitlines()
    assert shown == ["[store]", f'path = "from/file"    # {path} [store] path', "part_rows = 7    # --part-rows"]
    assert resolve_config(StoreConfig, "store", _toml(tmp_path, "")).source("path") == "default"


def test_bad_flag_value_names_the_flag_not_the_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[store]\npart_rows = 5\n")
    with pytest.raises(FlagError) as caught:
        resolve_config(StoreConfig, "store", path, {"part_rows": FlagValue(0, "--part-rows")})
    assert caught.value.flag == "--part-rows"
    assert str(caught.value).startswith("--part-rows: Input should be greater than 0")
    assert "pipeline.toml" not in str(caught.value)


def test_shared_key_is_refused_in_a_stage_table(tmp_path: Path) -> None:
    from indexer.config import IndexerConfig

    path = _toml(tmp_path, '[store]\npath = "one/store"\n[indexer]\nindex = "ix"\n')
    resolved = resolve_config(IndexerConfig, "indexer", path)
    assert resolved.config.store == Path("one/store") and resolved.source("store") == f"{path} [store] path"
    assert configured_store_path(path) == Path("one/store")
    twice = _toml(tmp_path, '[indexer]\nstore = "other"\n')
    with pytest.raises(ConfigError, match=r"\[indexer\]: key 'store' is not set here: set it once .* \[store\] path"):
        resolve_config(IndexerConfig, "indexer", twice)
