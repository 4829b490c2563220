"""Build the served `Pipeline` once from an `AnswerConfig`: the retriever (`retriever.loader`), the generator
(`generator.loader`) and the trained judges when `make demo` (or `make models`) made them. `medcite ask`, `medcite serve` and the
benchmarks that measure the served default load it the same way.

    p = load_pipeline(load_config(AnswerConfig, "configs/serve.yaml"))
    p.answer("How is gout treated?")
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from generator.loader import load_generator
from pipeline.answer import Pipeline
from pipeline.config import AnswerConfig
from pipeline.verify.judges import load_judges
from retriever.loader import load_retriever


def load_pipeline(cfg: AnswerConfig, retrieval: bool = True,
                  log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)) -> Pipeline:
    """The pipeline as served; `retrieval=False`: the no-retrieval baseline (no index, no judges loaded)."""
    retriever = load_retriever(cfg.index, cfg.rerank) if retrieval else None
    judges = load_judges(cfg.verify.judges, cfg.verify.judge_precision) if retrieval else None
    return Pipeline(retriever, load_generator(cfg.generator, cfg.decoding, log), judges, cfg.pipeline())
