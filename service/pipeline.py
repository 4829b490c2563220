"""The one answer function: triage -> retrieve -> build prompt -> generate -> verify -> cite.

    from service.pipeline import answer
    a = answer("How is gout treated?", retriever=r, generator=g, k=3)
    print(a.text, [c.hit.passage.id for c in a.citations])

The HTTP server, `medcite ask` and the offline evaluation all call this. `retriever=None` is the
no-retrieval baseline. `stream_answer` is the same steps with the generation streamed. Verification
(service/verify.py) turns the draft into what the passages support: every answer says how (`answer_mode`,
per-sentence support, warnings) and carries the disclaimer and, for an emergency, the triage notice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.config import VerifyConfig
from core.errors import InvalidRequestError
from core.types import MAX_QUESTION_CHARS, Answer, Citation, Generation, Generator, Hit, Retriever

if TYPE_CHECKING:
    from judge.models import Judges
from generator.prompt import (
    HISTORY_SHARE,
    PROMPT_VERSION,
    PromptPassage,
    build_choice_messages,
    build_messages,
    extract_citations,
    fit_history,
)
from service.followup import standalone
from service.parts import sub_questions
from service.triage import contradicts, triage
from service.verify import NO_ANSWER_TEXT, calibration_in_force, verify

DEFAULT_VERIFY = VerifyConfig()


@dataclass
class _Prepared:
    messages: list[dict[str, str]]
    shown: list[PromptPassage]
    retrieve_ms: float
    query: str
    """The standalone question: what was searched, put to the model and verified against."""
    warnings: list[str]


def retrieve(query: str, retriever: Retriever, k: int, mode: str) -> list[Hit]:
    """The passages to show: the search's top k, or for a question asking several things (service.parts) each
    part's hits in turn (part 1's best, part 2's best, part 1's second, ...), k or two a part, whichever is more."""
    parts = sub_questions(query)
    if len(parts) == 1:
        return retriever.search(query, k=k, mode=mode)
    per_part = [retriever.search(p, k=k, mode=mode) for p in parts]
    out: dict[str, Hit] = {}  # by record: a record one part found is not shown twice
    for rank in range(k):
        for hits in per_part:
            if rank < len(hits) and len(out) < max(k, 2 * len(parts)):
                out.setdefault(retriever.resolve_record(hits[rank].passage.record_id), hits[rank])
    return [Hit(h.passage, h.score, n) for n, h in enumerate(out.values(), start=1)]


def _prepare(question: str, retriever: Retriever | None, generator: Generator, k: int, mode: str,
             budget: int, max_new_tokens: int, history: Sequence[dict[str, str]] | None = None,
             followup: str = "focus") -> _Prepared:
    if not isinstance(question, str) or not question.strip():
        raise InvalidRequestError("question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidRequestError(f"question is longer than {MAX_QUESTION_CHARS} characters")
    t = time.perf_counter()
    query = standalone(question, history, followup, generator).query if retriever is not None else question
    hits = retrieve(query, retriever, k, mode) if retriever is not None else None
    retrieve_ms = (time.perf_counter() - t) * 1000
    if generator.context_window:  # the prompt and the longest allowed answer must both fit in the model's context
        budget = max(256, min(budget, generator.context_window - max_new_tokens))
    earlier, dropped = fit_history(history, budget // HISTORY_SHARE, generator.count_tokens)
    warnings = [f"the {dropped} oldest earlier turn{'s' * (dropped != 1)} did not fit in the prompt and "
                f"{'were' if dropped != 1 else 'was'} left out"] if dropped else []
    messages, shown = build_messages(query, hits, count_tokens=generator.count_tokens, budget=budget,
                                     history=earlier)
    return _Prepared(messages, shown, retrieve_ms, query, warnings)


def assemble(question: str, gen: Generation, shown: list[PromptPassage], retriever: Retriever | None,
             generator: Generator, mode: str, retrieve_ms: float, generate_ms: float,
             verify_cfg: VerifyConfig | None, judges: Judges | None = None, query: str = "",
             notes: Sequence[str] = ()) -> Answer:
    """Verify the draft against the passages shown, then cite what survived. Public for one more caller:
    benchmarks/verification.py re-verifies cached drafts under other settings without generating again.
    `query`: the standalone question of a follow-up (what was searched and is verified against); `notes`:
    warnings from building the prompt."""
    query = query or question
    if verify_cfg is not None and verify_cfg.enabled:
        v = verify(query, gen.text, shown, retriever, verify_cfg, judges)
        text, sentences, answer_mode, warnings, verify_ms = v.text, v.sentences, v.mode, v.warnings, v.verify_ms
        disclaimer, judge = verify_cfg.disclaimer, v.judge
        calibration = calibration_in_force(verify_cfg, retriever, judges) if retriever is not None else {}
    else:
        text, sentences, answer_mode, warnings, verify_ms, disclaimer = gen.text, [], "unverified", [], 0.0, ""
        judge, calibration = "none", {}
    alarm = triage(question) if verify_cfg is not None else None  # a bare-model chat is triaged by its front
    if alarm is not None and any(contradicts(v.text) for v in sentences):  # the answer never argues with it
        warnings = [*warnings, *(f"removed a sentence that contradicts the urgent-care notice: {v.text[:60]}"
                                 for v in sentences if contradicts(v.text))]
        sentences = [v for v in sentences if not contradicts(v.text)]
        text = " ".join(v.text for v in sentences) or NO_ANSWER_TEXT
    markers, invalid = extract_citations(text, len(shown))
    return Answer(
        question=question, text=text,
        citations=[Citation(m, shown[m - 1].hit) for m in markers],
        passages=[p.hit for p in shown], invalid_markers=invalid,
        usage={"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
               "total_tokens": gen.prompt_tokens + gen.completion_tokens},
        timings={"retrieve_ms": round(retrieve_ms, 2), "generate_ms": round(generate_ms, 2),
                 **({"prefill_ms": gen.prefill_ms} if gen.prefill_ms is not None else {}),
                 "verify_ms": verify_ms, "total_ms": round(retrieve_ms + generate_ms + verify_ms, 2)},
        stop_reason=gen.stop_reason, model=generator.name,
        index=retriever.fingerprint if retriever is not None else None,
        prompt_version=PROMPT_VERSION, mode=mode if retriever is not None else None,
        answer_mode=answer_mode, sentences=sentences, warnings=[*notes, *warnings], disclaimer=disclaimer,
        triage=alarm.to_dict() if alarm else None, draft=gen.text, judge=judge, retrieval_query=query,
        calibration=calibration)


def answer(question: str, retriever: Retriever | None, generator: Generator, k: int = 3, mode: str = "hybrid",
           budget: int = 1536, verify_cfg: VerifyConfig | None = DEFAULT_VERIFY, judges: Judges | None = None,
           history: Sequence[dict[str, str]] | None = None, followup: str = "focus", **decoding) -> Answer:
    """Answer one question; decoding overrides (max_new_tokens, repetition_penalty, ...) go to the generator.
    `verify_cfg=None` skips verification (the draft is the answer: for measuring what verification changes);
    `judges` (judge.models.Judges) are the trained faithfulness and answerhood judges, None for the lexical one;
    `history`: earlier turns, oldest first; `followup`: how a follow-up becomes standalone (service/followup.py)."""
    p = _prepare(question, retriever, generator, k, mode, budget, decoding.get("max_new_tokens") or 256, history,
                 followup)
    t = time.perf_counter()
    gen = generator.generate(p.messages, **decoding)
    return assemble(question, gen, p.shown, retriever, generator, mode, p.retrieve_ms,
                    (time.perf_counter() - t) * 1000, verify_cfg, judges, p.query, p.warnings)


def stream_answer(question: str, retriever: Retriever | None, generator: Generator, k: int = 3,
                  mode: str = "hybrid", budget: int = 1536, verify_cfg: VerifyConfig | None = DEFAULT_VERIFY,
                  judges: Judges | None = None, history: Sequence[dict[str, str]] | None = None,
                  followup: str = "focus", **decoding) -> Iterator[str | Answer]:
    """Draft text pieces as they are generated, then the verified Answer, which replaces the draft."""
    p = _prepare(question, retriever, generator, k, mode, budget, decoding.get("max_new_tokens") or 256, history,
                 followup)
    t = time.perf_counter()
    for piece in generator.stream(p.messages, **decoding):
        if isinstance(piece, Generation):
            yield assemble(question, piece, p.shown, retriever, generator, mode, p.retrieve_ms,
                           (time.perf_counter() - t) * 1000, verify_cfg, judges, p.query, p.warnings)
        else:
            yield piece


def _check_conversation(messages: list[dict[str, str]], generator: Generator, budget: int, max_new_tokens: int) -> str:
    """A conversation given as is must fit the same limits as a built prompt; returns its last user text."""
    users = [m["content"] for m in messages if m["role"] == "user" and m["content"].strip()]
    if not users:
        raise InvalidRequestError("messages hold no user message with text")
    if generator.context_window:
        budget = max(256, min(budget, generator.context_window - max_new_tokens))
    tokens = sum(generator.count_tokens(m["content"]) for m in messages)
    if tokens > budget:
        raise InvalidRequestError(f"the conversation is {tokens} tokens; at most {budget} fit with "
                                  f"{max_new_tokens} new tokens")
    return users[-1]


def converse(messages: list[dict[str, str]], generator: Generator, budget: int = 1536, **decoding) -> Answer:
    """A conversation sent to the model as given (no retrieval, no passages): how one medcite serves another as
    its remote generator. The same limits and the same Answer as `answer`."""
    question = _check_conversation(messages, generator, budget, decoding.get("max_new_tokens") or 256)
    t = time.perf_counter()
    gen = generator.generate(messages, **decoding)
    return assemble(question, gen, [], None, generator, "none", 0.0, (time.perf_counter() - t) * 1000, None)


def stream_converse(messages: list[dict[str, str]], generator: Generator, budget: int = 1536,
                    **decoding) -> Iterator[str | Answer]:
    question = _check_conversation(messages, generator, budget, decoding.get("max_new_tokens") or 256)
    t = time.perf_counter()
    for piece in generator.stream(messages, **decoding):
        if isinstance(piece, Generation):
            yield assemble(question, piece, [], None, generator, "none", 0.0, (time.perf_counter() - t) * 1000,
                            None)
        else:
            yield piece


@dataclass
class Choice:
    """A multiple-choice answer: the option letter with the highest log-likelihood, and every option's score."""

    letter: str
    scores: dict[str, float]
    passages: list[Hit]


def choose(question: str, options: dict[str, str], retriever: Retriever | None, generator: Generator, k: int = 3,
           mode: str = "hybrid", budget: int = 1536) -> Choice:
    """Answer a multiple-choice question by option log-likelihood (deterministic, nothing to parse).
    Retrieval uses the question only (MIRAGE's question-only setting); the generator must score options."""
    if not options:
        raise InvalidRequestError("a multiple-choice question needs options")
    hits = retriever.search(question, k=k, mode=mode) if retriever is not None else None
    messages, shown = build_choice_messages(question, options, hits, count_tokens=generator.count_tokens,
                                            budget=budget)
    scores = generator.option_logprobs(messages, list(options))
    by_letter = {letter: round(s, 6) for letter, s in zip(options, scores, strict=True)}
    best = max(by_letter, key=lambda letter: (by_letter[letter], -list(options).index(letter)))
    return Choice(best, by_letter, [p.hit for p in shown])
