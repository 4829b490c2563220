"""Query-time retrieval settings (the `rerank:` block of serve configs) and where the indexes live."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ConfigError


@dataclass(frozen=True)
class RerankConfig:
    """The cross-encoder stage over hybrid results (the `rerank:` block of serve/eval configs)."""

    model: str = ""
    """Cross-encoder directory from `medcite train-retriever reranker`. Empty: artifacts/retriever/reranker when
    `make retriever` built it and the tuned index is in use (see `resolve_reranker`), else off; `off`: never."""
    top_n: int = 10
    """Hybrid results (distinct records) the cross-encoder rescores per query; its latency grows linearly (fused,
    10 gained as much as 20 on dev and more on consumer questions, for +308 ms p50 instead of +509 here)."""
    fuse: bool = True
    """Fuse the cross-encoder's order with the hybrid order (reciprocal rank) instead of replacing it: replacing
    it lost 0.205 consumer-set R@1, fused gains on dev and consumer questions (benchmarks/results/retrieval.json)."""
    qtype_prior: bool = True
    """Fuse in the records whose MedQuAD title names the question type the question asks for ("Gout: treatment"
    for "how is gout treated") and the subject it asks about, before the cross-encoder. Base index, hybrid
    recall@5 without -> with: MedQuAD dev 0.89 -> 0.99, consumer dev 0.776 -> 0.918
    (`benchmarks/retrieval.py --parts qtype`). Without the subject condition it lifted other diseases' records
    of the asked type and cost consumer questions recall (0.776 -> 0.735). The subject is named when most of the
    title's name is in the question (one shared word lifted look-alikes: "Ectopic Kidney: symptoms" for ectopic
    pregnancy, rare subtypes for epilepsy): recall@1 / @5 dev 0.905 / 0.990 -> 0.920 / 0.995, consumer
    0.490 / 0.918 -> 0.571 / 0.898 (one question: "Overweight and Obesity" for obesity), patient-style
    0.665 / 0.945 -> 0.670 / 0.955; the consumer answers blind-reviewed in docs/trust.md."""

    def __post_init__(self) -> None:
        if not 1 <= self.top_n <= 100:
            raise ConfigError(f"rerank.top_n must be in [1, 100], got {self.top_n}")


DEFAULT_INDEX, TUNED_INDEX = "artifacts/index", "artifacts/index-tuned"


TUNED_RERANKER = "artifacts/retriever/reranker"
