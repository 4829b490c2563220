"""Load the served retriever: the index asked for, its reranker, its question-type prior and, when configured,
question entailment. `medcite serve`, `ask`, `search`, the evaluation and the benchmarks load it the same way."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retriever.search import IndexRetriever

from retriever.config import DEFAULT_INDEX, TUNED_INDEX, TUNED_RERANKER, RerankConfig


def resolve_reranker(index: str, model: str) -> str:
    """The cross-encoder to load ("" = none): `model` as configured, `off` for none; unset, the tuned reranker
    goes with the tuned index when that index is the one asked for (both come from `make retriever`)."""
    if model == "off":
        return ""
    if model:
        return model
    tuned = Path(index).resolve() == Path(TUNED_INDEX).resolve()
    return TUNED_RERANKER if tuned and (Path(TUNED_RERANKER) / "config.json").is_file() else ""


def load_retriever(index: str = DEFAULT_INDEX, rerank: RerankConfig | None = None, threads: int = 0) -> IndexRetriever:
    """The retriever as served: the index asked for (the tuned one of `make retriever` is not picked up by itself:
    as served it lost consumer dev recall, docs/retrieval.md), with the reranker `resolve_reranker` picks (a
    cross-encoder over the top `rerank.top_n`), the question-type prior of `rerank.qtype_prior` and question
    entailment when `rerank.entailment` names it."""
    from retriever.search import IndexRetriever  # noqa: F811 (faiss and torch load only here)

    rerank = rerank or RerankConfig()
    reranker = None
    model = resolve_reranker(index, rerank.model)
    if model:
        from retriever.rerank import Reranker

        reranker = Reranker.load(model, rerank.top_n, threads=threads, fuse=rerank.fuse)
    entailment = None
    if rerank.entailment not in ("", "off"):
        from retriever.entailment import Entailment

        entailment = Entailment.load(index, "" if rerank.entailment == "cosine" else rerank.entailment,
                                     rerank.entailment_candidates, rerank.entailment_threshold, threads)
    return IndexRetriever.load(index, threads=threads, reranker=reranker,
                               qtype_prior=rerank.qtype_prior, entailment=entailment)
