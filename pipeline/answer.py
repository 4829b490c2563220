"""The answer pipeline: triage -> retrieve -> build prompt -> generate -> verify -> cite, in one object built once.

    from pipeline.answer import Pipeline
    from pipeline.config import PipelineConfig
    p = Pipeline(retriever, generator, judges, PipelineConfig(k=3))    # loaded once, by the caller
    a = p.answer("How is gout treated?")
    print(a.text, [c.hit.passage.id for c in a.citations])
    for event in p.stream("How is gout treated?"):                     # Triaged, then draft pieces, then the Answer
        ...

The HTTP server, `medcite ask`, the offline evaluation and the benchmarks all call it. `stream()` yields the
triage result first (`Triaged`: an emergency's notice goes ahead of everything), then the draft as it is generated,
then the verified `Answer`, which replaces the draft; `answer()` is that stream collected. Triage runs once per
question and the question is split into its parts (pipeline/parts.py) once. A pipeline without a retriever, or a
request with `use_retrieval=False`, is the no-retrieval baseline. Verification (pipeline/verify/) turns the draft into
what the passages support: every answer says how (`answer_mode`, per-sentence support, warnings) and carries the
disclaimer and, for an emergency, the triage notice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.errors import InvalidRequestError
from core.types import MAX_QUESTION_CHARS, Answer, Citation, Generation, Generator, Hit, Retriever
from generator.prompt import (
    HISTORY_SHARE,
    PROMPT_VERSION,
    PromptPassage,
    build_choice_messages,
    build_messages,
    extract_citations,
    fit_history,
)
from pipeline.config import PipelineConfig
from pipeline.followup import standalone
from pipeline.parts import sub_questions
from pipeline.reading import search_text
from pipeline.triage import Triage, contradicts, triage
from pipeline.verify.stage import calibration_in_force, no_answer_text, verify

if TYPE_CHECKING:
    from pipeline.verify.judges import Judges


@dataclass(frozen=True)
class Triaged:
    """The first event of every stream: the triage result (None: nothing urgent, or an untriaged pipeline)."""

    triage: Triage | None


@dataclass
class Prepared:
    """A question made ready to generate: the prompt, the passages it shows, and what was searched."""

    messages: list[dict[str, str]]
    shown: list[PromptPassage]
    retrieve_ms: float
    query: str
    """The standalone question: what was searched, put to the model and verified against."""
    warnings: list[str]
    parts: list[str] = field(default_factory=list)
    """The query's parts (pipeline.parts.sub_questions), split once: retrieval and verification both use them."""


def retrieve(query: str, retriever: Retriever, k: int, mode: str, parts: list[str] | None = None) -> list[Hit]:
    """The passages to show: the search's top k, or for a question asking several things (pipeline.parts) each
    part's hits in turn (part 1's best, part 2's best, part 1's second, ...), k or two a part, whichever is more.
    A consumer message is searched by its subject line and what it asks (pipeline.reading.search_text).
    `parts`: the query's parts when the caller has split it already."""
    parts = parts or sub_questions(query)
    if len(parts) == 1:
        return retriever.search(search_text(query), k=k, mode=mode)
    per_part = [retriever.search(search_text(p), k=k, mode=mode) for p in parts]
    out: dict[str, Hit] = {}  # by record: a record one part found is not shown twice
    for rank in range(k):
        for hits in per_part:
            if rank < len(hits) and len(out) < max(k, 2 * len(parts)):
                out.setdefault(retriever.resolve_record(hits[rank].passage.record_id), hits[rank])
    return [Hit(h.passage, h.score, n) for n, h in enumerate(out.values(), start=1)]


class Pipeline:
    """The answer pipeline over already-loaded components: nothing is loaded per question.

    `retriever=None` makes every answer the no-retrieval baseline; `judges=None` verifies with the lexical judge.
    """

    def __init__(self, retriever: Retriever | None, generator: Generator, judges: Judges | None = None,
                 config: PipelineConfig | None = None):
        self.retriever, self.generator, self.judges = retriever, generator, judges
        self.config = config or PipelineConfig()

    def prepare(self, question: str, history: Sequence[dict[str, str]] | None = None, *, use_retrieval: bool = True,
                k: int | None = None, mode: str | None = None, max_new_tokens: int = 256) -> Prepared:
        """Check the question, make a follow-up standalone, retrieve, and build the prompt within its budget."""
        check_question(question)
        retriever = self.retriever if use_retrieval else None
        cfg, generator = self.config, self.generator
        t = time.perf_counter()
        query = standalone(question, history, cfg.followup, generator).query if retriever is not None else question
        parts = sub_questions(query) if retriever is not None else []
        hits = retrieve(query, retriever, k or cfg.k, mode or cfg.mode, parts) if retriever is not None else None
        retrieve_ms = (time.perf_counter() - t) * 1000
        budget = cfg.prompt_tokens
        if generator.context_window:  # the prompt and the longest allowed answer must both fit in the model's context
            budget = max(256, min(budget, generator.context_window - max_new_tokens))
        earlier, dropped = fit_history(history, budget // HISTORY_SHARE, generator.count_tokens)
        warnings = [f"the {dropped} oldest earlier turn{'s' * (dropped != 1)} did not fit in the prompt and "
                    f"{'were' if dropped != 1 else 'was'} left out"] if dropped else []
        messages, shown = build_messages(query, hits, count_tokens=generator.count_tokens, budget=budget,
                                         history=earlier)
        return Prepared(messages, shown, retrieve_ms, query, warnings, parts)

    def triage(self, question: str) -> Triage | None:
        """The urgent-care check (pipeline/triage.py); an unverified pipeline is not triaged (a bare-model chat is
        triaged by its front)."""
        return triage(question) if self.config.verify is not None else None

    def stream(self, question: str, history: Sequence[dict[str, str]] | None = None, *, use_retrieval: bool = True,
               k: int | None = None, mode: str | None = None,
               **decoding) -> Iterator[Triaged | str | Answer]:
        """`Triaged` first, then the draft's text pieces as they are generated, then the verified Answer.
        Decoding overrides (max_new_tokens, repetition_penalty, deadline, cancel, ...) go to the generator."""
        return self._events(question, history, use_retrieval, k, mode, decoding, streaming=True)

    def answer(self, question: str, history: Sequence[dict[str, str]] | None = None, *, use_retrieval: bool = True,
               k: int | None = None, mode: str | None = None, **decoding) -> Answer:
        """The stream collected: the verified Answer (the draft is generated in one call, not piece by piece)."""
        events = self._events(question, history, use_retrieval, k, mode, decoding, streaming=False)
        return [e for e in events if isinstance(e, Answer)][-1]

    def _events(self, question: str, history: Sequence[dict[str, str]] | None, use_retrieval: bool, k: int | None,
                mode: str | None, decoding: dict, streaming: bool) -> Iterator[Triaged | str | Answer]:
        check_question(question)
        alarm = self.triage(question)
        yield Triaged(alarm)
        p = self.prepare(question, history, use_retrieval=use_retrieval, k=k, mode=mode,
                         max_new_tokens=decoding.get("max_new_tokens") or 256)
        retrieval = use_retrieval and self.retriever is not None
        t = time.perf_counter()
        pieces = self.generator.stream(p.messages, **decoding) if streaming else \
            iter([self.generator.generate(p.messages, **decoding)])
        for piece in pieces:
            if isinstance(piece, Generation):
                yield self.assemble(question, piece, p.shown, p.retrieve_ms, (time.perf_counter() - t) * 1000,
                                    use_retrieval=retrieval, mode=mode, query=p.query, notes=p.warnings,
                                    alarm=alarm, parts=p.parts)
            else:
                yield piece

    def assemble(self, question: str, gen: Generation, shown: list[PromptPassage], retrieve_ms: float,
                 generate_ms: float, *, use_retrieval: bool = True, mode: str | None = None, query: str = "",
                 notes: Sequence[str] = (), alarm: Triage | None | bool = False,
                 parts: list[str] | None = None) -> Answer:
        """Verify the draft against the passages shown, then cite what survived. Public for the benchmarks that
        re-verify cached drafts without generating again. `query`: the standalone question of a follow-up (what
        was searched and is verified against); `notes`: warnings from building the prompt; `alarm`: the triage
        result when the caller has it (False: triage here)."""
        retriever = self.retriever if use_retrieval else None
        mode = mode or self.config.mode
        verify_cfg, judges, generator = self.config.verify, self.judges, self.generator
        query = query or question
        if verify_cfg is not None and verify_cfg.enabled:
            v = verify(query, gen.text, shown, retriever, verify_cfg, judges, parts or None)
            text, sentences, answer_mode, warnings, verify_ms = v.text, v.sentences, v.mode, v.warnings, v.verify_ms
            disclaimer, judge = verify_cfg.disclaimer, v.judge
            calibration = calibration_in_force(verify_cfg, retriever, judges) if retriever is not None else {}
        else:
            text, sentences, answer_mode, warnings, verify_ms, disclaimer = gen.text, [], "unverified", [], 0.0, ""
            judge, calibration = "none", {}
        if alarm is False:
            alarm = self.triage(question)
        if alarm is not None and any(contradicts(v.text) for v in sentences):  # the answer never argues with it
            warnings = [*warnings, *(f"removed a sentence that contradicts the urgent-care notice: {v.text[:60]}"
                                     for v in sentences if contradicts(v.text))]
            sentences = [v for v in sentences if not contradicts(v.text)]
            text = " ".join(v.text for v in sentences) or no_answer_text(shown)
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

    def converse(self, messages: list[dict[str, str]], **decoding) -> Answer:
        """A conversation sent to the model as given (no retrieval, no passages, no verification): how one medcite
        serves another as its remote generator. The same limits and the same Answer as `answer`."""
        return [e for e in self._conversation(messages, decoding, streaming=False) if isinstance(e, Answer)][-1]

    def stream_converse(self, messages: list[dict[str, str]], **decoding) -> Iterator[str | Answer]:
        return self._conversation(messages, decoding, streaming=True)

    def _conversation(self, messages: list[dict[str, str]], decoding: dict,
                      streaming: bool) -> Iterator[str | Answer]:
        bare = Pipeline(None, self.generator, None, PipelineConfig(prompt_tokens=self.config.prompt_tokens, verify=None))
        question = _check_conversation(messages, self.generator, self.config.prompt_tokens,
                                       decoding.get("max_new_tokens") or 256)
        t = time.perf_counter()
        pieces = self.generator.stream(messages, **decoding) if streaming else \
            iter([self.generator.generate(messages, **decoding)])
        for piece in pieces:
            if isinstance(piece, Generation):
                yield bare.assemble(question, piece, [], 0.0, (time.perf_counter() - t) * 1000, use_retrieval=False,
                                    mode="none", alarm=None)
            else:
                yield piece

    def choose(self, question: str, options: dict[str, str], *, use_retrieval: bool = True,
               mode: str | None = None) -> Choice:
        """Answer a multiple-choice question by option log-likelihood (deterministic, nothing to parse).
        Retrieval uses the question only (MIRAGE's question-only setting); the generator must score options."""
        if not options:
            raise InvalidRequestError("a multiple-choice question needs options")
        retriever, cfg, generator = self.retriever if use_retrieval else None, self.config, self.generator
        hits = retriever.search(question, k=cfg.k, mode=mode or cfg.mode) if retriever is not None else None
        messages, shown = build_choice_messages(question, options, hits, count_tokens=generator.count_tokens,
                                                budget=cfg.prompt_tokens)
        scores = generator.option_logprobs(messages, list(options))
        by_letter = {letter: round(s, 6) for letter, s in zip(options, scores, strict=True)}
        best = max(by_letter, key=lambda letter: (by_letter[letter], -list(options).index(letter)))
        return Choice(best, by_letter, [p.hit for p in shown])


def check_question(question: str) -> None:
    """A question is a non-empty string of at most MAX_QUESTION_CHARS characters."""
    if not isinstance(question, str) or not question.strip():
        raise InvalidRequestError("question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidRequestError(f"question is longer than {MAX_QUESTION_CHARS} characters")


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


@dataclass
class Choice:
    """A multiple-choice answer: the option letter with the highest log-likelihood, and every option's score."""

    letter: str
    scores: dict[str, float]
    passages: list[Hit]
