"""The one answer function: retrieve -> build prompt -> generate -> extract citations.

    from service.pipeline import answer
    a = answer("How is gout treated?", retriever=r, generator=g, k=3)
    print(a.text, [c.hit.passage.id for c in a.citations])

The HTTP server, `medcite ask` and the offline evaluation all call this. `retriever=None` is the
no-retrieval baseline. `stream_answer` is the same steps with the generation streamed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from core.errors import InvalidRequestError
from core.types import Answer, Citation, Generation, Generator, Hit, Retriever
from generator.prompt import (
    PROMPT_VERSION,
    PromptPassage,
    build_choice_messages,
    build_messages,
    extract_citations,
)

MAX_QUESTION_CHARS = 2000


def _prepare(question: str, retriever: Retriever | None, generator: Generator, k: int, mode: str,
             budget: int, max_new_tokens: int) -> tuple[list[dict[str, str]], list[PromptPassage], float]:
    if not isinstance(question, str) or not question.strip():
        raise InvalidRequestError("question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidRequestError(f"question is longer than {MAX_QUESTION_CHARS} characters")
    t = time.perf_counter()
    hits: list[Hit] | None = retriever.search(question, k=k, mode=mode) if retriever is not None else None
    retrieve_ms = (time.perf_counter() - t) * 1000
    count = getattr(generator, "count_tokens", None)
    window = getattr(generator, "context_window", None)
    if window:  # the prompt and the longest allowed answer must both fit in the model's context
        budget = max(256, min(budget, window - max_new_tokens))
    messages, shown = build_messages(question, hits, **({"count_tokens": count} if count else {}), budget=budget)
    return messages, shown, retrieve_ms


def _assemble(question: str, gen: Generation, shown: list[PromptPassage], retriever: Retriever | None,
              generator: Generator, mode: str, retrieve_ms: float, generate_ms: float) -> Answer:
    markers, invalid = extract_citations(gen.text, len(shown))
    return Answer(
        question=question, text=gen.text,
        citations=[Citation(m, shown[m - 1].hit) for m in markers],
        passages=[p.hit for p in shown], invalid_markers=invalid,
        usage={"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
               "total_tokens": gen.prompt_tokens + gen.completion_tokens},
        timings={"retrieve_ms": round(retrieve_ms, 2), "generate_ms": round(generate_ms, 2),
                 "total_ms": round(retrieve_ms + generate_ms, 2)},
        stop_reason=gen.stop_reason, model=generator.name,
        index=retriever.fingerprint if retriever is not None else None,
        prompt_version=PROMPT_VERSION, mode=mode if retriever is not None else None)


def answer(question: str, retriever: Retriever | None, generator: Generator, k: int = 3, mode: str = "hybrid",
           budget: int = 1536, **decoding) -> Answer:
    """Answer one question; decoding overrides (max_new_tokens, repetition_penalty, ...) go to the generator."""
    messages, shown, retrieve_ms = _prepare(question, retriever, generator, k, mode, budget,
                                            decoding.get("max_new_tokens") or 256)
    t = time.perf_counter()
    gen = generator.generate(messages, **decoding)
    return _assemble(question, gen, shown, retriever, generator, mode, retrieve_ms, (time.perf_counter() - t) * 1000)


def stream_answer(question: str, retriever: Retriever | None, generator: Generator, k: int = 3,
                  mode: str = "hybrid", budget: int = 1536, **decoding) -> Iterator[str | Answer]:
    """Text pieces as they are generated, then the full Answer (citations are known only at the end)."""
    messages, shown, retrieve_ms = _prepare(question, retriever, generator, k, mode, budget,
                                            decoding.get("max_new_tokens") or 256)
    t = time.perf_counter()
    for piece in generator.stream(messages, **decoding):
        if isinstance(piece, Generation):
            yield _assemble(question, piece, shown, retriever, generator, mode, retrieve_ms,
                            (time.perf_counter() - t) * 1000)
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
    if not hasattr(generator, "option_logprobs"):
        raise InvalidRequestError(f"generator {generator.name} cannot score options (needs the hf backend)")
    hits = retriever.search(question, k=k, mode=mode) if retriever is not None else None
    count = getattr(generator, "count_tokens", None)
    messages, shown = build_choice_messages(question, options, hits, **({"count_tokens": count} if count else {}),
                                            budget=budget)
    scores = generator.option_logprobs(messages, list(options))
    by_letter = {letter: round(s, 6) for letter, s in zip(options, scores, strict=True)}
    best = max(by_letter, key=lambda letter: (by_letter[letter], -list(options).index(letter)))
    return Choice(best, by_letter, [p.hit for p in shown])
