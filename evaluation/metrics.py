"""Per-answer metrics of the offline evaluation: overlap with the gold answer, retrieval of the gold record,
whether citations are valid and supported, and degeneration (from generator/quality.py, shared with the
fine-tuning job's checkpoint choice).

    from evaluation.metrics import open_metrics
    m = open_metrics(answer, gold_text, gold_record, resolve=retriever.resolve_record)

Citation support is lexical by default: a cited sentence is supported when most of its content words occur in
the passages it cites. `SupportJudge` is the seam for an NLI model or an LLM judge where one is available.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import cache
from typing import Protocol

from core.types import Answer
from generator.quality import answer_metrics, content_words, split_sentences

_MARKERS = re.compile(r"\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]")


class SupportJudge(Protocol):
    """Scores how well passages support a sentence, in [0, 1]."""

    def __call__(self, sentence: str, passages: Sequence[str]) -> float: ...


def lexical_support(sentence: str, passages: Sequence[str]) -> float:
    """Share of the sentence's content words (markers removed) found in the cited passages."""
    words = content_words(_MARKERS.sub(" ", sentence))
    if not words:
        return 1.0
    found: set[str] = set()
    for p in passages:
        found |= content_words(p)
    return len(words & found) / len(words)


@cache
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(pred: str, gold: str) -> float:
    """ROUGE-L F-measure (Google's rouge-score, Porter stemming)."""
    if not pred.strip() or not gold.strip():
        return 0.0
    return float(_rouge().score(gold, pred)["rougeL"].fmeasure)


def citation_metrics(answer: Answer, judge: SupportJudge = lexical_support, threshold: float = 0.5) -> dict[str, float]:
    """citation_validity: valid markers / all markers (1.0 with no markers); cited_sentences: share of
    sentences carrying a valid marker; citation_support: share of cited sentences the judge finds supported
    (>= threshold) by the passages they cite. Without passages (baseline) only validity is meaningful."""
    valid = {c.marker for c in answer.citations}
    total = len(valid) + len(answer.invalid_markers)
    texts = {i + 1: h.passage.text for i, h in enumerate(answer.passages)}
    sentences = split_sentences(answer.text)
    cited = supported = 0
    for s in sentences:
        markers = [int(n) for g in _MARKERS.findall(s) for n in re.split(r"\s*[,;]\s*", g) if int(n) in texts]
        if not markers:
            continue
        cited += 1
        supported += judge(s, [texts[m] for m in markers]) >= threshold
    return {"citation_validity": len(valid) / total if total else 1.0,
            "cited_sentences": cited / len(sentences) if sentences else 0.0,
            "citation_support": supported / cited if cited else 0.0,
            "cites": float(bool(valid))}


def retrieval_metrics(answer: Answer, gold_record: str | None, resolve: Callable[[str], str] = lambda r: r
                      ) -> dict[str, float]:
    """recall@k (gold record among the passages shown) and reciprocal rank of its first passage."""
    if gold_record is None or not answer.passages:
        return {}
    gold = resolve(gold_record)
    for rank, hit in enumerate(answer.passages, start=1):
        if resolve(hit.passage.record_id) == gold:
            return {"recall_at_k": 1.0, "reciprocal_rank": 1.0 / rank}
    return {"recall_at_k": 0.0, "reciprocal_rank": 0.0}


def open_metrics(answer: Answer, gold_text: str | None, gold_record: str | None,
                 resolve: Callable[[str], str] = lambda r: r, judge: SupportJudge = lexical_support) -> dict[str, float]:
    """Every per-answer metric of an open-ended question."""
    m = answer_metrics(answer.text, gold_text, answer.stop_reason, answer.usage.get("completion_tokens"))
    if gold_text is not None:
        m["rouge_l"] = rouge_l(answer.text, gold_text)
    m.update(retrieval_metrics(answer, gold_record, resolve))
    m.update(citation_metrics(answer, judge))
    return {k: round(float(v), 6) for k, v in m.items()}
