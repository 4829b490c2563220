"""The answer routes: POST /v1/answer (JSON or server-sent events), POST /v1/retrieve, POST /v1/verify. Each handler
converts the request and calls the pipeline (or the retriever, or the verification stage) in a worker thread."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import ServerSentEventMessage

from core.errors import ForbiddenError, MedciteError
from core.types import Answer
from pipeline.verify.stage import check, verify_passages
from service.dependencies import Components
from service.errors import API_ERRORS, GENERATION_ERRORS
from service.middleware import auth_guard
from service.schemas import (
    AnswerRequest,
    AnswerResponse,
    PassageOut,
    RetrieveRequest,
    RetrieveResponse,
    VerifiedSentence,
    VerifyRequest,
    VerifyResponse,
)
from service.worker import EventStream, first_then_rest, in_thread

log = logging.getLogger("medcite.api")


def log_answer(request: Request, a: Answer, route: str, log_text: bool) -> None:
    """One JSON log line per answer: timings, usage, modes and counts; the text only with `log_text`."""
    record = {"event": "answer", "route": route, "request_id": request.scope.get("state", {}).get("request_id"),
              **a.timings, **a.usage, "stop_reason": a.stop_reason, "citations": len(a.citations),
              "invalid_markers": len(a.invalid_markers), "mode": a.mode, "answer_mode": a.answer_mode,
              "warnings": len(a.warnings), "urgent": a.triage is not None}  # never which rule: it says why
    if log_text:
        record.update(question=a.question, answer=a.text)
    log.info(json.dumps(record))


def _answer_out(a: Answer) -> AnswerResponse:
    return msgspec.convert(a.to_dict(), AnswerResponse)


def runner(c: Components, question: str, use_retrieval: bool, k: int | None, mode: str | None,
           cancel: threading.Event, history: list[dict[str, str]] | None = None,
           **decoding: Any) -> Callable[..., Any]:
    """The pipeline call for one request, to run in a worker thread (stream=True for the stream of events).
    The non-streaming call leaves its answer's metrics and feedback record behind itself."""
    pipeline = c.need_pipeline(use_retrieval)
    decoding = {k_: v for k_, v in decoding.items() if v is not None}
    decoding.setdefault("max_new_tokens", c.cfg.decoding.max_new_tokens)
    # the generator stops itself at the request's deadline, so a 504 also frees the model for the next request
    decoding.update(deadline=time.monotonic() + c.cfg.request_timeout_s, cancel=cancel)

    def run(stream: bool = False) -> Any:
        if stream:
            return pipeline.stream(question, history, use_retrieval=use_retrieval, k=k, mode=mode, **decoding)
        a = pipeline.answer(question, history, use_retrieval=use_retrieval, k=k, mode=mode, **decoding)
        c.answered(a)
        return a

    return run


@post("/v1/retrieve", status_code=200, guards=[auth_guard], responses=API_ERRORS)
async def retrieve(data: JSONBody[RetrieveRequest], components: NamedDependency[Components]) -> RetrieveResponse:
    r, cfg = components.need_retriever(), components.cfg
    t = time.perf_counter()
    with components.admit() as slot:
        hits = await in_thread(slot.around(lambda: r.search(data.query, k=data.k or cfg.k, mode=data.mode or cfg.mode,
                                                            source=data.source, per_record=data.per_record)),
                               cfg.request_timeout_s)
    return RetrieveResponse(hits=[msgspec.convert(h.to_dict(with_text=True), PassageOut) for h in hits],
                            index=r.fingerprint, timings={"retrieve_ms": round((time.perf_counter() - t) * 1000, 2)})


@post("/v1/verify", status_code=200, guards=[auth_guard], responses=API_ERRORS)
async def verify_text(data: JSONBody[VerifyRequest], components: NamedDependency[Components]) -> VerifyResponse:
    """The pipeline's verification stage (the judge in force + the term guard) over any text and sources."""
    r, cfg = components.need_retriever(), components.cfg
    shown = verify_passages(data.passages)
    with components.admit() as slot:  # a verification past its deadline keeps its place until it really ends
        checked, judge, threshold = await in_thread(
            slot.around(lambda: check(data.question or "", data.text, shown, r, cfg.verify, components.judges)),
            cfg.request_timeout_s)
    return VerifyResponse(sentences=[VerifiedSentence(c.verdict.text, c.verdict.supported and not c.problem,
                                                      c.verdict.score, c.verdict.citations, c.problem)
                                     for c in checked], judge=judge, threshold=threshold)


@post("/v1/answer", status_code=200, guards=[auth_guard], responses=GENERATION_ERRORS)
async def answer(data: JSONBody[AnswerRequest], request: Request, components: NamedDependency[Components]) -> Any:
    cfg, cancel = components.cfg, threading.Event()
    if not data.use_retrieval and not cfg.allow_unsourced:
        raise ForbiddenError("use_retrieval: false is off on this server: such an answer is the model's own text, "
                             "checked against no source (the operator's allow_unsourced)")
    history = [{"role": t.role, "content": t.content} for t in data.history or ()]
    with components.admit() as slot:  # before triage, retrieval and tokenisation: a refusal costs nothing
        run = runner(components, data.question, data.use_retrieval, data.k, data.mode, cancel, history,
                     max_new_tokens=data.max_new_tokens, repetition_penalty=data.repetition_penalty)
        if not data.stream:
            a = await in_thread(slot.around(run), cfg.request_timeout_s, request, cancel)
            log_answer(request, a, "answer", cfg.log_text)
            return _answer_out(a)
        # triage's result comes first: the urgent-care notice goes ahead of the draft, not only in the final answer
        triaged, items = await first_then_rest(slot.over(run(stream=True)), cfg.request_timeout_s)

    def events() -> Iterator[ServerSentEventMessage]:
        if triaged is not None and triaged.triage is not None:
            yield ServerSentEventMessage(event="triage", data=json.dumps(triaged.triage.to_dict()))
        try:
            for item in items:
                if isinstance(item, str):
                    yield ServerSentEventMessage(event="token", data=json.dumps({"text": item}))
                elif isinstance(item, Answer):
                    components.answered(item)
                    log_answer(request, item, "answer-stream", cfg.log_text)
                    yield ServerSentEventMessage(event="answer", data=msgspec.json.encode(_answer_out(item)).decode())
        except MedciteError as e:
            yield ServerSentEventMessage(event="error", data=json.dumps({"error": type(e).__name__, "detail": str(e)}))
        finally:  # the client stopped reading (disconnected): stop the generation too
            cancel.set()

    return EventStream(events())
