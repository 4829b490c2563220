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

    entailment: str = ""
    """Question entailment (retriever/entailment.py): the directory of an entailment cross-encoder (`medcite
    train-retriever entailment`) to fuse in the records of the MedQuAD questions a query entails; `cosine`: the
    nearest questions without a model; empty or `off`: off (measured in benchmarks/results/entailment.json)."""
    entailment_candidates: int = 10
    """Nearest distinct answered questions the entailment model reads per query."""
    entailment_threshold: float = 0.9
    """P(entailed) at or above which a question's records are fused in. Of 0.5 / 0.7 / 0.9, 0.9 is the one that
    lowers no consumer dev figure (chosen on that ruler, so its consumer figure is optimistic)."""

    def __post_init__(self) -> None:
        if not 1 <= self.top_n <= 100:
            raise ConfigError(f"rerank.top_n must be in [1, 100], got {self.top_n}")
        if not 1 <= self.entailment_candidates <= 100 or not 0 <= self.entailment_threshold <= 1:
            raise ConfigError("rerank.entailment_candidates must be in [1, 100] and rerank.entailment_threshold in "
                              f"[0, 1], got {self.entailment_candidates} and {self.entailment_threshold}")


DEFAULT_INDEX, TUNED_INDEX = "artifacts/index", "artifacts/index-tuned"


TUNED_RERANKER = "artifacts/retriever/reranker"
