"""The verification stage of the answer pipeline: what the model wrote becomes an answer only as far as the
passages it saw support it. Independent of the model (135M on a CPU, a tuned 3B, a remote vLLM).

    v = verify(question, draft_text, shown, retriever, VerifyConfig())
    v.mode        # generated | extractive | no_answer | unsourced
    v.text        # the verified answer, markers renumbered to the passages that support each sentence
    v.sentences   # [SentenceVerdict(text, citations, supported, score)]
    v.warnings    # ["removed a sentence with a term absent from the sources: allopurruvolizide", ...]

Steps: (1) abstain when no passage is relevant to the question (embedder cosine below `min_relevance`):
no_answer; (2) attribute every sentence to the shown passages (core.support: the definition training and
evaluation use too); copied passage headers, fragments and sentences that only restate the question go; (3) the
term guard (core.terms) removes sentences with invented words, drug names or doses the evidence does not hold;
(4) unsupported sentences are removed (or marked); (5) when less than `min_kept_share` of the sentences survive,
the answer becomes extractive: the passage sentences closest to the question, quoted, each with its marker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from core.config import VerifyConfig
from core.quality import split_sentences
from core.support import SentenceVerdict, SupportJudge, attribute, is_fragment, is_header, restates_question
from core.terms import evidence_words, term_problems
from core.types import Retriever
from generator.prompt import PromptPassage

NO_ANSWER_TEXT = ("The indexed sources do not answer this question. The closest passages are listed with this "
                  "answer; a clinician or pharmacist can help with what they do not cover.")
UNSOURCED_WARNING = "answered without retrieval: no sentence of this answer is checked against a source"


@dataclass
class Verified:
    text: str
    sentences: list[SentenceVerdict]
    mode: str
    warnings: list[str] = field(default_factory=list)
    relevance: float | None = None
    """Cosine of the question and its most relevant shown passage."""
    kept_share: float | None = None
    """Share of the generated sentences that survived (before any extractive fallback)."""
    verify_ms: float = 0.0


class _Embed:
    """The retriever's embedder with a per-answer cache: passages are embedded once for relevance, support and
    the extractive fallback."""

    def __init__(self, retriever: Retriever):
        self.retriever, self.cache = retriever, {}

    def __call__(self, texts: list[str]):
        import numpy as np

        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            for t, v in zip(todo, self.retriever.embed(todo), strict=True):
                self.cache[t] = v
        return np.stack([self.cache[t] for t in texts])


def _cut(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def extractive(question: str, shown: list[PromptPassage], embed: _Embed, n: int) -> list[SentenceVerdict]:
    """The passage sentences closest to the question (embedder cosine), quoted, each with its marker."""
    titles = [p.hit.passage.title for p in shown]
    cands, seen = [], set()
    for p in shown:
        for s in split_sentences(p.text):
            key = " ".join(s.lower().split())
            if (len(s.split()) >= 5 and not is_header(s, titles) and not is_fragment(s) and key not in seen
                    and not restates_question(s, question)  # "This summary is about adult leukemia."
                    and not s.rstrip().endswith(("...", ":", "?"))):  # cut ends, list lead-ins and the passage's
                # own question ("What are the treatments for gout?" opens MedQuAD answers) say nothing alone
                seen.add(key)  # a sentence a source repeats is quoted once
                cands.append((p.marker, s))
    if not cands:
        return []
    vecs = embed([question] + [s for _, s in cands])
    sims = (vecs[1:] @ vecs[0]).tolist()
    best = sorted(range(len(cands)), key=lambda i: (-sims[i], i))[:n]
    return [SentenceVerdict(f'"{cands[i][1]}" [{cands[i][0]}]', [cands[i][0]], True, round(sims[i], 4))
            for i in sorted(best)]


def verify(question: str, draft: str, shown: list[PromptPassage], retriever: Retriever | None,
           cfg: VerifyConfig) -> Verified:
    t = time.perf_counter()
    if retriever is None:  # the no-retrieval baseline: nothing to check against
        sentences = [SentenceVerdict(s, [], False, 0.0) for s in split_sentences(draft)]
        return Verified(draft, sentences, "unsourced", [UNSOURCED_WARNING],
                        verify_ms=round((time.perf_counter() - t) * 1000, 2))
    embed = _Embed(retriever)
    texts = [p.text for p in shown]
    relevance = None
    if texts:
        vecs = embed([question, *texts])
        relevance = round(float((vecs[1:] @ vecs[0]).max()), 4)
    if not texts or relevance < cfg.min_relevance:
        return Verified(NO_ANSWER_TEXT, [], "no_answer", [], relevance,
                        verify_ms=round((time.perf_counter() - t) * 1000, 2))

    judge = SupportJudge(embed=embed, lexical_weight=cfg.lexical_weight)
    verdicts = attribute(draft, texts, [p.hit.passage.title for p in shown], judge, cfg.support_threshold,
                         question)
    evidence = " ".join([question, *texts])
    vocab = evidence_words(evidence)
    warnings: list[str] = []
    kept: list[SentenceVerdict] = []
    body = [v for v in verdicts if not v.not_answer]
    for v in verdicts:
        if v.not_answer:
            warnings.append(f"removed a {v.not_answer}: {_cut(v.text)}")
            continue
        problems = term_problems(v.text, evidence, retriever.knows, vocab)
        if problems:
            warnings.append(f"removed a sentence with {problems[0]}")
            continue
        if not v.supported:
            if cfg.unsupported == "remove":
                warnings.append(f"removed a sentence no shown passage supports: {_cut(v.text)}")
                continue
            v.text = f"{v.text} [not in the sources]"
        kept.append(v)
    out_of_range = sorted({n for v in verdicts for n in v.cited_before if not 1 <= n <= len(shown)})
    if out_of_range:
        warnings.append(f"dropped citation marker(s) that point at no passage shown: {out_of_range}")
    supported = [v for v in kept if v.supported]
    kept_share = round(len(supported) / len(body), 4) if body else 0.0
    mode = "generated"
    if kept_share < cfg.min_kept_share or not supported:
        quoted = extractive(question, shown, embed, cfg.extractive_sentences)
        if quoted:
            warnings.append(f"too little of the generated answer was supported ({len(supported)} of {len(body)} "
                            "sentences): quoting the passages instead")
            kept, mode = quoted, "extractive"
    text = " ".join(v.text for v in kept) if kept else NO_ANSWER_TEXT
    if not kept:
        mode = "no_answer"
    return Verified(text, kept, mode, warnings, relevance, kept_share,
                    verify_ms=round((time.perf_counter() - t) * 1000, 2))
