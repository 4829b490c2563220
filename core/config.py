"""Configuration: frozen dataclasses with a docstring under every field, loaded from YAML + flags + env.

One YAML per deployable lives in `configs/` (index.yaml, serve.yaml, ...); `load_config(IndexConfig, path,
data_dir=...)` reads one, rejects unknown keys, coerces types and applies non-None overrides (CLI flags).
`field_docs(cls)` reads the field docstrings so `--help` and the README say the same thing as the code.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from core.errors import ConfigError

T = TypeVar("T")


DATA_DIR_ENV = "MEDCITE_DATA_DIR"


DEFAULT_DATA_DIR = "../shared/data"


def default_data_dir() -> str:
    """`$MEDCITE_DATA_DIR` if set, else `../shared/data` (relative to the working directory)."""
    return os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field, read from the source (litgpt's convention); a subclass's fields
    and those it inherits (ServeConfig extends AnswerConfig)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _coerce(value: Any, tp: Any, name: str) -> Any:
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping of {tp.__name__} settings")
        return _build(tp, value, prefix=f"{name}.")
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
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
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
    for key, value in overrides.items():
        if value is None:
            continue
        if "." in key:  # "generator.model" sets a field of a nested config
            head, _, tail = key.partition(".")
            raw[head] = {**(raw.get(head) or {}), tail: value}
        else:
            raw[key] = value
    return _build(cls, raw)


def _build(cls: type[T], raw: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(prefix + u for u in unknown)} for {cls.__name__}; "
                          f"known: {', '.join(sorted(names))}")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in raw.items()})


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a config (tuples become lists, nested configs dicts)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))
