"""The Litestar API: a thin HTTP edge over `service.pipeline` and the retriever.

    from service.app import create_app
    app = create_app(retriever, generator, ServeConfig())      # components are loaded once, by the caller
    uvicorn.run(app)                                           # or: medcite serve

Endpoints: POST /v1/answer (JSON or SSE), POST /v1/retrieve, POST /v1/verify (any text checked against given
sources), POST /v1/chat/completions (OpenAI-compatible, JSON or SSE), GET /healthz, GET /readyz, OpenAPI at /schema/openapi.json. Every error is JSON
{"error", "detail"}; domain errors map to status codes in STATUS below, the one place that does so.
Generation runs in a worker thread, never on the event loop. Question and answer text are not logged unless
`log_text` is set: medical questions are private.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.handlers import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from core.config import ServeConfig
from core.errors import (
    ConfigError,
    DataError,
    ForbiddenError,
    IndexCorruptError,
    IndexNotFoundError,
    InvalidRequestError,
    MedciteError,
    ModelLoadError,
    OverloadedError,
    UpstreamError,
)
from core.types import FINISH_REASONS, Answer, Generator, Retriever
from judge.models import Judges  # light (core only): Litestar resolves the Components annotations
from service import pipeline
from service.feedback import FeedbackStore  # light (sqlite3): Litestar resolves the Components annotations
from service.metrics import Metrics
from service.schemas import (
    AnswerRequest,
    AnswerResponse,
    ChatChoice,
    ChatChoiceMessage,
    ChatRequest,
    ChatResponse,
    CitationOut,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    ModelCard,
    ModelList,
    PassageOut,
    RetrieveRequest,
    RetrieveResponse,
    Usage,
    VerifiedSentence,
    VerifyRequest,
    VerifyResponse,
)
from service.triage import model_dir as triage_model_dir
from service.triage import triage
from service.verify import calibration_in_force, check, verify_passages

log = logging.getLogger("medcite.api")
MAX_BODY_BYTES = 64 * 1024
RETRY_AFTER_S = 2

# The one map from domain errors to HTTP.
STATUS: dict[type[MedciteError], int] = {
    InvalidRequestError: 400,
    ForbiddenError: 403,
    ConfigError: 400,
    DataError: 400,
    OverloadedError: 503,
    IndexNotFoundError: 503,
    IndexCorruptError: 503,
    ModelLoadError: 503,
    UpstreamError: 502,
}


def _errors(*codes: int) -> dict[int, ResponseSpec]:
    """The error responses a route documents, all in the one shape every error has: {"error", "detail"}."""
    words = {400: "invalid request (the detail names the field)", 401: "missing or wrong API key",
             403: "forbidden by the server's settings", 404: "not found", 413: "body larger than 64 KB",
             502: "the remote generator failed", 503: "not ready, or the generation queue is full (Retry-After)",
             504: "no answer within request_timeout_s"}
    return {c: ResponseSpec(ErrorResponse, description=words[c], generate_examples=False) for c in codes}


API_ERRORS = _errors(400, 401, 403, 413, 503)
GENERATION_ERRORS = _errors(400, 401, 403, 413, 502, 503, 504)


def _error(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response(ErrorResponse(error=error, detail=detail), status_code=status, headers=headers,
                    media_type=MediaType.JSON)


def _domain_error(_: Request, exc: MedciteError) -> Response:
    status = next((STATUS[c] for c in type(exc).__mro__ if c in STATUS), 500)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, OverloadedError) else None
    return _error(status, type(exc).__name__.removesuffix("Error").lower() or "error", str(exc), headers)


def _http_error(_: Request, exc: HTTPException) -> Response:
    detail = exc.detail
    if isinstance(exc, ValidationException) and exc.extra:
        extras = exc.extra if isinstance(exc.extra, list) else [exc.extra]
        detail = "; ".join(_problem(e) for e in extras)
    name = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
            413: "too_large", 415: "unsupported_media_type"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, name, detail, exc.headers)


def _problem(e: Any) -> str:
    """One validation problem in words, naming the field ("rating: Invalid enum value 'meh'")."""
    if not isinstance(e, dict):
        return str(e)
    key, message = e.get("key"), str(e.get("message", e))
    if key == "data" and message == "'data'":  # Litestar's words for a request without a body
        return "the request has no JSON body; send a JSON object (see /schema for the fields)"
    return f"{key}: {message}" if key and not message.startswith(f"{key}:") and key not in message else message


def _bad_encoding(_: Request, exc: UnicodeDecodeError) -> Response:
    return _error(400, "invalid_request", f"request body is not valid UTF-8 ({exc.reason} at byte {exc.start})")


def _too_deep(_: Request, exc: RecursionError) -> Response:
    return _error(400, "invalid_request", "request body is nested too deeply")


def _unexpected(request: Request, exc: Exception) -> Response:
    rid = request.scope.get("state", {}).get("request_id", "")
    # one JSON line with the id the response names, so an operator can find the traceback a user quotes
    log.error(json.dumps({"event": "error", "request_id": rid, "path": request.url.path, "error": type(exc).__name__,
                          "traceback": "".join(traceback.format_exception(exc))}))
    return _error(500, "internal", f"internal error; quote request id {rid} to the operator")


def _request_log(app: ASGIApp) -> ASGIApp:
    """Request id (from X-Request-ID or new) on the scope and the response, and one JSON log line per request."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid  # type: ignore[typeddict-item]
        start, status = time.perf_counter(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            path = scope.get("path", "")
            components = scope["app"].state.components
            if components.cfg.metrics != "off":
                components.metrics.request(path if path in ROUTES else "other", status, seconds)
            log.info(json.dumps({"event": "request", "request_id": rid, "method": scope.get("method"),
                                 "path": path, "status": status, "ms": round(seconds * 1000, 1)}))

    return middleware


@dataclass
class Components:
    """What the handlers work with, built once by the caller and injected into each handler."""

    retriever: Retriever | None
    generator: Generator | None
    cfg: ServeConfig
    judges: Judges | None = None
    """The trained faithfulness and answerhood judges (judge.models); None: the lexical judge."""
    feedback: FeedbackStore | None = None
    """Answer records and feedback (service/feedback.py); None: feedback is off."""
    metrics: Metrics = dataclasses.field(default_factory=Metrics)

    def answered(self, a: Answer) -> None:
        """What every answer leaves behind: its metrics, and its record for feedback (in the worker thread)."""
        if self.cfg.metrics != "off":
            self.metrics.answer(a)
        if self.feedback is not None:
            self.feedback.record(a)

    def judge_info(self) -> dict:
        return self.judges.describe() if self.judges is not None else {"faithfulness": "lexical",
                                                                       "answerhood": "embedder cosine"}

    def need_retriever(self) -> Retriever:
        if self.retriever is None:
            raise IndexNotFoundError("the server was started without an index")
        return self.retriever

    def need_generator(self) -> Generator:
        if self.generator is None:
            raise IndexNotFoundError("the server was started without a generator")
        return self.generator


def _components(state: State) -> Components:
    return state.components


def auth_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    key = connection.app.state.components.cfg.api_key
    if not key:
        return
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), key.encode()):
        raise NotAuthorizedException("missing or wrong API key (Authorization: Bearer <key>)",
                                     headers={"WWW-Authenticate": "Bearer"})


async def _watch_disconnect(request: Request, cancel: threading.Event) -> None:
    """Set `cancel` when the client goes away (the ASGI server sends http.disconnect once the body is read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancel.set()
            return


async def _in_thread(fn: Callable[[], Any], timeout_s: float, request: Request | None = None,
                     cancel: threading.Event | None = None) -> Any:
    """Run blocking work in a worker thread; past the deadline the request is a 504. With a request and a cancel
    event, a client that disconnects cancels the work (the generator stops at its next token)."""
    outcome: dict[str, Any] = {}

    async def work() -> None:
        try:
            with anyio.fail_after(timeout_s):
                outcome["result"] = await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
        except TimeoutError:
            outcome["result"] = None
        except Exception as e:  # re-raised below, outside the task group (which would wrap it in a group)
            outcome["error"] = e

    if request is not None and cancel is not None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_disconnect, request, cancel)
            await work()
            tg.cancel_scope.cancel()
    else:
        await work()
    if "error" in outcome:
        raise outcome["error"]
    result = outcome.get("result")
    if result is None or getattr(result, "stop_reason", None) == "timeout":  # either side of the deadline
        raise HTTPException(status_code=504, detail=f"no answer within {timeout_s:g}s")
    return result


def _log_answer(request: Request, a: Answer, route: str, log_text: bool) -> None:
    record = {"event": "answer", "route": route, "request_id": request.scope.get("state", {}).get("request_id"),
              **a.timings, **a.usage, "stop_reason": a.stop_reason, "citations": len(a.citations),
              "invalid_markers": len(a.invalid_markers), "mode": a.mode, "answer_mode": a.answer_mode,
              "warnings": len(a.warnings), "triage": a.triage["rule"] if a.triage else None}
    if log_text:
        record.update(question=a.question, answer=a.text)
    log.info(json.dumps(record))


def _answer_out(a: Answer) -> AnswerResponse:
    return msgspec.convert(a.to_dict(), AnswerResponse)


def _runner(c: Components, question: str, use_retrieval: bool, k: int | None, mode: str | None,
            cancel: threading.Event, history: list[dict[str, str]] | None = None,
            **decoding: Any) -> Callable[..., Any]:
    """The pipeline call for one request, to run in a worker thread (stream=True for the streaming variant).
    The non-streaming call leaves its answer's metrics and feedback record behind itself."""
    r = c.need_retriever() if use_retrieval else None
    g = c.need_generator()
    kwargs: dict[str, Any] = dict(k=k or c.cfg.k, mode=mode or c.cfg.mode, budget=c.cfg.prompt_tokens,
                                  **{k_: v for k_, v in decoding.items() if v is not None})
    kwargs.setdefault("max_new_tokens", c.cfg.decoding.max_new_tokens)
    kwargs["verify_cfg"] = c.cfg.verify
    kwargs["judges"] = c.judges
    # the generator stops itself at the request's deadline, so a 504 also frees the model for the next request
    kwargs["deadline"] = time.monotonic() + c.cfg.request_timeout_s
    kwargs["cancel"] = cancel
    kwargs["history"], kwargs["followup"] = history, c.cfg.followup

    def run(stream: bool = False) -> Any:
        if stream:
            return pipeline.stream_answer(question, r, g, **kwargs)
        a = pipeline.answer(question, r, g, **kwargs)
        c.answered(a)
        return a

    return run


async def _first_then_rest(it: Iterator, timeout_s: float) -> Iterator:
    """Pull the first item in a worker thread so queue-full and bad input become HTTP errors, not a broken
    stream; returns an iterator over every item."""
    first = await _in_thread(lambda: next(it), timeout_s)
    return _chain(first, it)


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", responses=_errors(503))
async def readyz(components: NamedDependency[Components]) -> Response:
    if components.retriever is None or components.generator is None:
        return _error(503, "not_ready", "index or model not loaded")
    try:
        await anyio.to_thread.run_sync(components.generator.health)
    except MedciteError as e:
        return _error(503, "not_ready", str(e))
    return Response({"status": "ready", "index": components.retriever.fingerprint,
                     "model": components.generator.name, "judge": components.judge_info(),
                     "calibration": calibration_in_force(components.cfg.verify, components.retriever,
                                                         components.judges)})


@post("/v1/retrieve", status_code=200, guards=[auth_guard], responses=API_ERRORS)
async def retrieve(data: JSONBody[RetrieveRequest], components: NamedDependency[Components]) -> RetrieveResponse:
    r, cfg = components.need_retriever(), components.cfg
    t = time.perf_counter()
    hits = await _in_thread(lambda: r.search(data.query, k=data.k or cfg.k, mode=data.mode or cfg.mode,
                                             source=data.source, per_record=data.per_record), cfg.request_timeout_s)
    return RetrieveResponse(hits=[msgspec.convert(h.to_dict(with_text=True), PassageOut) for h in hits],
                            index=r.fingerprint, timings={"retrieve_ms": round((time.perf_counter() - t) * 1000, 2)})


@post("/v1/verify", status_code=200, guards=[auth_guard], responses=API_ERRORS)
async def verify_text(data: JSONBody[VerifyRequest], components: NamedDependency[Components]) -> VerifyResponse:
    """The pipeline's verification stage (the judge in force + the term guard) over any text and sources."""
    r, cfg = components.need_retriever(), components.cfg
    shown = verify_passages(data.passages)
    checked, judge, threshold = await _in_thread(
        lambda: check(data.question or "", data.text, shown, r, cfg.verify, components.judges),
        cfg.request_timeout_s)
    return VerifyResponse(sentences=[VerifiedSentence(c.verdict.text, c.verdict.supported and not c.problem,
                                                      c.verdict.score, c.verdict.citations, c.problem)
                                     for c in checked], judge=judge, threshold=threshold)


@post("/v1/answer", status_code=200, guards=[auth_guard], responses=GENERATION_ERRORS)
async def answer(data: JSONBody[AnswerRequest], request: Request, components: NamedDependency[Components]) -> Any:
    cfg, cancel = components.cfg, threading.Event()
    history = [{"role": t.role, "content": t.content} for t in data.history or ()]
    run = _runner(components, data.question, data.use_retrieval, data.k, data.mode, cancel, history,
                  max_new_tokens=data.max_new_tokens, repetition_penalty=data.repetition_penalty)
    if not data.stream:
        with _queued(components):
            a = await _in_thread(run, cfg.request_timeout_s, request, cancel)
        _log_answer(request, a, "answer", cfg.log_text)
        return _answer_out(a)
    with _queued(components):
        items = await _first_then_rest(run(stream=True), cfg.request_timeout_s)
    # the urgent-care notice goes ahead of the draft, not only in the final answer (off the event loop: the
    # learned layer is a model)
    alarm = await anyio.to_thread.run_sync(triage, data.question)

    def events() -> Iterator[ServerSentEventMessage]:
        if alarm is not None:
            yield ServerSentEventMessage(event="triage", data=json.dumps(alarm.to_dict()))
        try:
            for item in items:
                if isinstance(item, str):
                    yield ServerSentEventMessage(event="token", data=json.dumps({"text": item}))
                else:
                    components.answered(item)
                    _log_answer(request, item, "answer-stream", cfg.log_text)
                    yield ServerSentEventMessage(event="answer", data=msgspec.json.encode(_answer_out(item)).decode())
        except MedciteError as e:
            yield ServerSentEventMessage(event="error", data=json.dumps({"error": type(e).__name__, "detail": str(e)}))
        finally:  # the client stopped reading (disconnected): stop the generation too
            cancel.set()

    return EventStream(events())


def chat_content(a: Answer) -> str:
    """The OpenAI message content: the verified text, the triage notice ahead of it, the disclaimer after it."""
    parts = [a.triage["notice"]] if a.triage else []
    parts.append(a.text)
    if a.disclaimer:
        parts.append(a.disclaimer)
    return "\n\n".join(parts)


def _chat_finish(item: Answer) -> tuple[str, str, Usage, list[CitationOut]]:
    return (chat_content(item), FINISH_REASONS[item.stop_reason], Usage(**item.usage),
            [msgspec.convert(c.to_dict(), CitationOut) for c in item.citations])


@post("/v1/chat/completions", status_code=200, guards=[auth_guard], responses=GENERATION_ERRORS)
async def chat_completions(data: JSONBody[ChatRequest], request: Request,
                           components: NamedDependency[Components]) -> Any:
    cfg, g, cancel = components.cfg, components.need_generator(), threading.Event()
    max_new = data.max_completion_tokens or data.max_tokens
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if data.use_retrieval:
        turns = [m for m in data.messages if m.role in ("user", "assistant") and m.text().strip()]
        last = max((i for i, m in enumerate(turns) if m.role == "user"), default=None)
        if last is None:
            raise InvalidRequestError("messages hold no user message with text")
        history = [{"role": m.role, "content": m.text()} for m in turns[:last]]  # the earlier turns
        run = _runner(components, turns[last].text(), True, data.k, data.mode, cancel, history,
                      max_new_tokens=max_new, repetition_penalty=data.repetition_penalty)
    else:  # plain model server (medcite behind medcite): the conversation goes through the pipeline as given
        if not cfg.allow_raw_chat:
            raise ForbiddenError("use_retrieval: false is off on this server (the operator's allow_raw_chat)")
        msgs = [{"role": m.role, "content": m.text()} for m in data.messages]
        decoding = {k: v for k, v in (("max_new_tokens", max_new or cfg.decoding.max_new_tokens),
                                      ("repetition_penalty", data.repetition_penalty)) if v is not None}
        deadline = time.monotonic() + cfg.request_timeout_s

        def run(stream: bool = False) -> Any:
            if stream:
                return pipeline.stream_converse(msgs, g, budget=cfg.prompt_tokens, deadline=deadline, cancel=cancel,
                                                **decoding)
            a = pipeline.converse(msgs, g, budget=cfg.prompt_tokens, deadline=deadline, cancel=cancel, **decoding)
            components.answered(a)
            return a

    if not data.stream:
        with _queued(components):
            a = await _in_thread(run, cfg.request_timeout_s, request, cancel)
        _log_answer(request, a, "chat", cfg.log_text)
        text, reason, usage, citations = _chat_finish(a)
        return ChatResponse(id=cid, object="chat.completion", created=created, model=g.name,
                            choices=[ChatChoice(0, ChatChoiceMessage("assistant", text), reason)],
                            usage=usage, citations=citations, answer_id=a.id,
                            retrieval_query=a.retrieval_query or None)
    with _queued(components):
        items = await _first_then_rest(run(stream=True), cfg.request_timeout_s)

    def chunk(delta: dict, reason: str | None = None, **extra) -> ServerSentEventMessage:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": g.name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": reason}], **extra}
        return ServerSentEventMessage(data=json.dumps(body))

    def events() -> Iterator[ServerSentEventMessage]:
        yield chunk({"role": "assistant", "content": ""})
        try:
            for item in items:
                # An OpenAI client concatenates content deltas and cannot take one back, so the draft is not
                # streamed: the verified content goes out as one delta once verification is done.
                if isinstance(item, Answer):
                    components.answered(item)
                    _log_answer(request, item, "chat-stream", cfg.log_text)
                    text, reason, usage, citations = _chat_finish(item)
                    yield chunk({"content": text})
                    yield chunk({}, reason, usage=msgspec.to_builtins(usage),
                                citations=msgspec.to_builtins(citations), answer_id=item.id,
                                retrieval_query=item.retrieval_query or None)
        except MedciteError as e:
            yield ServerSentEventMessage(data=json.dumps({"error": {"message": str(e), "type": type(e).__name__}}))
        finally:
            cancel.set()
        yield ServerSentEventMessage(data="[DONE]")

    return EventStream(events())


class _queued:
    """Counts a generation request in the queue-depth gauge while it waits for or holds the model."""

    def __init__(self, c: Components):
        self.gauge = c.metrics.in_flight

    def __enter__(self) -> None:
        self.gauge.inc()

    def __exit__(self, *_: object) -> None:
        self.gauge.dec()


def model_card(c: Components) -> ModelCard:
    """The served model in the OpenAI shape plus what medcite adds: its index, judges, prompt and version."""
    from core.version import __version__
    from generator.prompt import PROMPT_VERSION

    g = c.need_generator()
    return ModelCard(id=g.name, object="model", created=STARTED, owned_by="medcite",
                     index=c.retriever.fingerprint if c.retriever is not None else None, judge=c.judge_info(),
                     triage=triage_model_dir() or "rules", prompt_version=PROMPT_VERSION, medcite_version=__version__)


STARTED = int(time.time())


@get("/v1/models", guards=[auth_guard], responses=_errors(401))
async def models(components: NamedDependency[Components]) -> ModelList:
    """What `openai` clients list first (models.list()); one model, the one this server answers with."""
    return ModelList(object="list", data=[model_card(components)])


@get("/v1/models/{model_id:path}", guards=[auth_guard], responses=_errors(401, 404))
async def model(model_id: FromPath[str], components: NamedDependency[Components]) -> ModelCard:
    card = model_card(components)
    if model_id.lstrip("/") != card.id.lstrip("/"):
        raise HTTPException(status_code=404, detail=f"this server serves {card.id!r}, not {model_id!r}")
    return card


def _metrics_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    cfg = connection.app.state.components.cfg
    if cfg.metrics == "off":
        raise HTTPException(status_code=404, detail="metrics are off on this server (metrics: off)")
    if cfg.metrics == "key":
        auth_guard(connection, handler)


@get("/metrics", guards=[_metrics_guard], sync_to_thread=False, include_in_schema=False)
def scrape_metrics(components: NamedDependency[Components]) -> Response:
    body, content_type = components.metrics.render()
    return Response(body, media_type=content_type)


@post("/v1/feedback", status_code=200, guards=[auth_guard], responses=API_ERRORS)
async def give_feedback(data: JSONBody[FeedbackRequest], components: NamedDependency[Components]) -> FeedbackResponse:
    """A person's rating of an answer (by the id the answer carried), stored before the reply says so."""
    store = components.feedback
    if store is None:
        raise ForbiddenError("feedback is off on this server (feedback_db is empty)")
    row = await anyio.to_thread.run_sync(lambda: store.add(data.answer_id, data.rating, data.comment, data.sentence))
    components.metrics.feedback.labels(data.rating).inc()
    return FeedbackResponse(id=row, answer_id=data.answer_id, stored=True)


ROUTES = frozenset({"/healthz", "/readyz", "/metrics", "/v1/models", "/v1/retrieve", "/v1/verify", "/v1/answer",
                    "/v1/chat/completions", "/v1/feedback"})
"""Route labels of the request metrics (any other path counts as `other`: no unbounded label values)."""


STATIC = Path(__file__).with_name("static")
"""The web page (index.html, app.js, style.css): plain files, served at / with no build step."""


def create_app(retriever: Retriever | None, generator: Generator | None, cfg: ServeConfig | None = None,
               judges: Judges | None = None, feedback: FeedbackStore | None = None) -> Litestar:
    """The app around already-loaded components (nothing is loaded per request): wiring only."""
    page = create_static_files_router(path="/", directories=[STATIC], html_mode=True, name="page",
                                      include_in_schema=False)
    return Litestar(
        route_handlers=[healthz, readyz, models, model, scrape_metrics, retrieve, verify_text, answer,
                        chat_completions, give_feedback, page],
        dependencies={"components": Provide(_components, sync_to_thread=False)},
        state=State({"components": Components(retriever, generator, cfg or ServeConfig(), judges, feedback)}),
        exception_handlers={MedciteError: _domain_error, HTTPException: _http_error,
                            UnicodeDecodeError: _bad_encoding, RecursionError: _too_deep, Exception: _unexpected},
        middleware=[_request_log],
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # `medcite serve` sets up plain JSON-line logging itself
        openapi_config=_openapi_config(),
        debug=False,
    )


def _openapi_config():
    """The schema names medcite and its version (Litestar's default says "Litestar API 1.0.0")."""
    from litestar.openapi import OpenAPIConfig

    from core.version import __version__

    return OpenAPIConfig(title="medcite", version=__version__,
                         description="Retrieval-augmented medical question answering with cited, verified answers.")


class EventStream(ServerSentEvent):
    """ServerSentEvent whose text/event-stream content type survives handlers that default to JSON (Litestar
    2.25 lets the handler's media type win over a streaming response's own)."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = None
        return super().to_asgi_response(*args, **kwargs)


def _chain(first: Any, rest: Iterator) -> Iterator:
    yield first
    yield from rest
