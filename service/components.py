"""Build the long-lived components (retriever, generator) once, from a ServeConfig. Used by `medcite serve`,
`medcite ask` and the offline evaluation, so all three load models the same way (the judges too)."""

from __future__ import annotations

import sys

from core.config import ServeConfig, resolve_index, resolve_reranker
from core.types import Generator, Retriever


def load_retriever(cfg: ServeConfig) -> Retriever:
    from retriever.search import IndexRetriever

    reranker = None
    model = resolve_reranker(cfg.index, cfg.rerank.model)
    if model:
        from retriever.rerank import Reranker

        reranker = Reranker.load(model, cfg.rerank.top_n, fuse=cfg.rerank.fuse)
    return IndexRetriever.load(resolve_index(cfg.index), reranker=reranker, qtype_prior=cfg.rerank.qtype_prior)


def load_judges(cfg: ServeConfig):
    """The trained judges of verify.judges (judge.models), or None for the lexical judge."""
    from judge.models import load_judges as load

    return load(cfg.verify.judges, cfg.verify.judge_precision)


def load_generator(cfg: ServeConfig, log=lambda msg: print(msg, file=sys.stderr)) -> Generator:
    if cfg.generator.backend == "remote":
        from generator.remote import RemoteGenerator

        return RemoteGenerator.from_config(cfg.generator, cfg.decoding)
    if cfg.generator.backend == "llamacpp":
        from generator.llamacpp import LlamaCppGenerator

        return LlamaCppGenerator.load(cfg.generator, cfg.decoding, log=log)
    from generator.hf import HFGenerator

    return HFGenerator.load(cfg.generator, cfg.decoding, log=log)
