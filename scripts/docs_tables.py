"""The docs' configuration tables, rendered from every config dataclass (scripts/docs.py puts them into
docs/configuration.md; a test keeps the two equal)."""

from __future__ import annotations

import dataclasses

from core.config import DATA_DIR_ENV, DEFAULT_DATA_DIR, field_docs
from evaluation.config import EvalConfig
from finetune.config import FinetuneConfig, FinetuneDataConfig
from generator.config import DecodingConfig, GeneratorConfig
from index_build.config import IndexConfig
from pipeline.verify.config import VerifyConfig
from retriever.config import RerankConfig
from service.config import ServeConfig
from train.config import JudgeTrainConfig, RetrieverTrainConfig

CONFIG_TABLES: tuple[tuple[type, str, str], ...] = (
    (IndexConfig, "", ""),
    (ServeConfig, "", ""),
    (GeneratorConfig, "generator.", " (`generator:` block)"),
    (DecodingConfig, "decoding.", " (`decoding:` block)"),
    (VerifyConfig, "verify.", " (`verify:` block of serve and eval configs; `data.verify` of the finetune configs)"),
    (RerankConfig, "rerank.", " (`rerank:` block of serve configs)"),
    (FinetuneConfig, "", " (configs/finetune-smollm2.yaml, configs/finetune-llama3.2-3b.yaml)"),
    (FinetuneDataConfig, "data.", " (`data:` block of the finetune configs)"),
    (EvalConfig, "", " (configs/eval.yaml)"),
    (RetrieverTrainConfig, "", " (configs/retriever.yaml)"),
    (JudgeTrainConfig, "", " (configs/judges.yaml)"),
)


def _shown_default(f: dataclasses.Field) -> str:
    if f.name == "data_dir":
        return f"${DATA_DIR_ENV} or {DEFAULT_DATA_DIR}"
    if f.default is not dataclasses.MISSING:
        value = f.default
    else:
        value = f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(value):
            return "see below" if type(value) not in (VerifyConfig, RerankConfig) else f"see {type(value).__name__}"
    if f.name == "api_key":
        return ""
    if isinstance(value, tuple):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) if value else "{}"
    return str(value)


def markdown_tables() -> str:
    """Every config class as a `| key | default | meaning |` table, as docs/configuration.md shows them."""
    out = []
    for cls, prefix, note in CONFIG_TABLES:
        out += [f"**{cls.__name__}**{note}", "", "| key | default | meaning |", "|---|---|---|"]
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            doc = docs[f.name].replace("|", "\\|")
            out.append(f"| `{prefix}{f.name}` | `{_shown_default(f)}` | {doc} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
