"""Per-answer metrics of the offline evaluation: overlap with the gold answer, retrieval of the gold record,
whether citations are valid and supported, and degeneration (from core/quality.py, shared with the
fine-tuning job's checkpoint choice).

    from evaluation.metrics import open_metrics
    m = open_metrics(answer, gold_text, gold_record, resolve=retriever.resolve_record, knows=retriever.knows)

Every metric is computed for the final (verified) answer and, as `draft_*`, for what the model generated, so one
run measures what verification changes. `citation_support` uses the verification's own definition (pipeline.verify.support:
the same one training and serving use); `lexical_support` is the evaluation's earlier, independent check
(most content words of a cited sentence occur in the passages it cites). pipeline.verify.support.SupportJudge is the seam
for an NLI model or an LLM judge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

from core.markers import markers_in, strip_markers
from core.quality import answer_metrics, content_words, split_sentences, token_f1
from core.types import Answer
from pipeline.verify.terms import term_problems


def lexical_support(sentence: str, passages: Sequence[str]) -> float:
    """Share of the sentence's content words (markers removed) found in the cited passages: the evaluation's
    earlier, independent check, reported beside the shared support definition (pipeline.verify.support)."""
    words = content_words(strip_markers(sentence))
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


def citation_metrics(text: str, passages: Sequence[str], threshold: float = 0.5) -> dict[str, float]:
    """citation_validity: in-range markers / all markers (1.0 with none); cites: at least one valid citation;
    cited_sentences: share of sentences with a valid marker; lexical_support: share of cited sentences whose
    content words are mostly (>= threshold) in the passages they cite."""
    markers = markers_in(text)
    valid = [m for m in markers if 1 <= m <= len(passages)]
    sentences = split_sentences(text)
    cited = supported = 0
    for s in sentences:
        ms = [m for m in markers_in(s) if 1 <= m <= len(passages)]
        if ms:
            cited += 1
            supported += lexical_support(s, [passages[m - 1] for m in ms]) >= threshold
    return {"citation_validity": len(valid) / len(markers) if markers else 1.0, "cites": float(bool(valid)),
            "cited_sentences": cited / len(sentences) if sentences else 0.0,
            "lexical_support": supported / cited if cited else 0.0}


def verification_metrics(answer: Answer, knows: Callable[[str], bool] | None) -> dict[str, float]:
    """What verification did: the answer mode, support of the cited sentences under the shared definition,
    terms absent from the corpus and evidence in the draft and in the final answer, triage, time."""
    passages = [h.passage.text for h in answer.passages]
    evidence = " ".join([answer.question, *passages])
    m: dict[str, float] = {f"mode_{mode}": float(answer.answer_mode == mode)
                           for mode in ("generated", "extractive", "no_answer")}
    cited = [v for v in answer.sentences if v.citations]
    m["citation_support"] = sum(v.supported for v in cited) / len(cited) if cited else 0.0
    m["triage"] = float(answer.triage is not None)
    if passages:
        m["invented_terms"] = float(any(term_problems(s, evidence, knows) for s in split_sentences(
            answer.text if answer.answer_mode != "no_answer" else "")))
        m["draft_invented_terms"] = float(any(term_problems(s, evidence, knows) for s in split_sentences(answer.draft)))
    return m  # timings stay out: results.jsonl is byte-identical on a rerun


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
                 resolve: Callable[[str], str] = lambda r: r, knows: Callable[[str], bool] | None = None
                 ) -> dict[str, float]:
    """Every per-answer metric of an open-ended question, for the final answer and (draft_*) the model's draft."""
    m = answer_metrics(answer.text, gold_text, answer.stop_reason, answer.usage.get("completion_tokens"))
    passages = [h.passage.text for h in answer.passages]
    if gold_text is not None:
        m["rouge_l"] = rouge_l(answer.text, gold_text)
        m["draft_token_f1"] = token_f1(answer.draft or answer.text, gold_text)
        m["draft_rouge_l"] = rouge_l(answer.draft or answer.text, gold_text)
    m.update(retrieval_metrics(answer, gold_record, resolve))
    m.update(citation_metrics(answer.text, passages))
    m.update({f"draft_{k}": v for k, v in citation_metrics(answer.draft or answer.text, passages).items()})
    m.update(verification_metrics(answer, knows))
    return {k: round(float(v), 6) for k, v in m.items()}
