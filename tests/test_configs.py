"""Every YAML in configs/ loads into its dataclass, and the defaults in code agree with the shipped file."""

import dataclasses
from pathlib import Path

import pytest

from core.config import IndexConfig, field_docs, load_config
from core.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_index_yaml_matches_code_defaults(monkeypatch):
    monkeypatch.delenv("MEDCITE_DATA_DIR", raising=False)
    assert load_config(IndexConfig, CONFIGS / "index.yaml") == IndexConfig()


def test_every_field_is_documented():
    for cls in (IndexConfig,):
        docs = field_docs(cls)
        assert {f.name for f in dataclasses.fields(cls)} == set(docs), cls


def test_env_and_overrides(monkeypatch):
    monkeypatch.setenv("MEDCITE_DATA_DIR", "/data/here")
    assert IndexConfig().data_dir == "/data/here"
    cfg = load_config(IndexConfig, CONFIGS / "index.yaml", data_dir="/x", limit=5)
    assert (cfg.data_dir, cfg.limit) == ("/x", 5)


@pytest.mark.parametrize("bad", [dict(chunk_tokens=8), dict(chunk_overlap=150), dict(faiss_index="annoy"),
                                 dict(corpora=("pdf:x",)), dict(batch_size=0)])
def test_invalid_values_are_config_errors(bad):
    with pytest.raises(ConfigError):
        IndexConfig(**bad)
