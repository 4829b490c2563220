"""The Litestar API: a thin HTTP edge over `service.pipeline` and the retriever.

    from service.app import create_app
    app = create_app(retriever, generator, ServeConfig())      # components are loaded once, by the caller
    uvicorn.run(app)                                           # or: medcite serve

Endpoints: POST /v1/answer (JSON or SSE), POST /v1/retrieve, POST /v1/chat/completions (OpenAI-compatible,
JSON or SSE), GET /healthz, GET /readyz, OpenAPI at /schema/openapi.json. Every error is JSON
{"error", "detail"}; domain errors map to status codes in STATUS below, the one place that does so.
Generation runs in a worker thread, never on the event loop. Question and answer text are not logged unless
`log_text` is set: medical questions are private.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import msgspec
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.handlers import BaseRouteHandler
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from core.config import ServeConfig
from core.errors import (
    ConfigError,
    DataError,
    IndexCorruptError,
    IndexNotFoundError,
    InvalidRequestError,
    MedciteError,
    ModelLoadError,
    OverloadedError,
    UpstreamError,
)
from core.types import Answer, Generation, Generator, Hit, Retriever
from service import pipeline
from service.schemas import (
    AnswerRequest,
    AnswerResponse,
    ChatChoice,
    ChatChoiceMessage,
    ChatRequest,
    ChatResponse,
    CitationOut,
    ErrorResponse,
    PassageOut,
    RetrieveRequest,
    RetrieveResponse,
    Timings,
    Usage,
)

log = logging.getLogger("medcite.api")
MAX_BODY_BYTES = 64 * 1024
RETRY_AFTER_S = 2

# The one map from domain errors to HTTP.
STATUS: dict[type[MedciteError], int] = {
    InvalidRequestError: 400,
    ConfigError: 400,
    DataError: 400,
    OverloadedError: 503,
    IndexNotFoundError: 503,
    IndexCorruptError: 503,
    ModelLoadError: 503,
    UpstreamError: 502,
}


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
        detail = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in extras)
    name = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
            413: "too_large", 415: "unsupported_media_type"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, name, detail, exc.headers)


def _bad_encoding(_: Request, exc: UnicodeDecodeError) -> Response:
    return _error(400, "invalid_request", f"request body is not valid UTF-8 ({exc.reason} at byte {exc.start})")


def _too_deep(_: Request, exc: RecursionError) -> Response:
    return _error(400, "invalid_request", "request body is nested too deeply")


def _unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return _error(500, "internal", "internal error; the request id in the logs has details")


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
            log.info(json.dumps({"event": "request", "request_id": rid, "method": scope.get("method"),
                                 "path": scope.get("path"), "status": status,
                                 "ms": round((time.perf_counter() - start) * 1000, 1)}))

    return middleware


def _passage_out(h: Hit) -> PassageOut:
    p = h.passage
    return PassageOut(passage_id=p.id, record_id=p.record_id, title=p.title, source=p.source, url=p.url,
                      score=round(float(h.score), 6), text=p.text)


def _answer_out(a: Answer) -> AnswerResponse:
    return AnswerResponse(
        answer=a.text, citations=[CitationOut(**c.to_dict()) for c in a.citations],
        passages=[_passage_out(h) for h in a.passages], invalid_markers=a.invalid_markers,
        usage=Usage(**a.usage), timings=Timings(**a.timings), stop_reason=a.stop_reason, model=a.model,
        index=a.index, prompt_version=a.prompt_version)


def create_app(retriever: Retriever | None, generator: Generator | None, cfg: ServeConfig | None = None) -> Litestar:
    """The app around already-loaded components (nothing is loaded per request)."""
    cfg = cfg or ServeConfig()
    decoding_defaults = cfg.decoding

    def auth_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if not cfg.api_key:
            return
        sent = connection.headers.get("authorization", "")
        scheme, _, token = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), cfg.api_key.encode()):
            raise NotAuthorizedException("missing or wrong API key (Authorization: Bearer <key>)",
                                         headers={"WWW-Authenticate": "Bearer"})

    def require(component: Any, what: str) -> Any:
        if component is None:
            raise IndexNotFoundError(f"the server was started without {what}")
        return component

    async def in_thread(fn: Callable[[], Any]) -> Any:
        try:
            with anyio.fail_after(cfg.request_timeout_s):
                result = await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
        except TimeoutError:
            result = None
        if result is None or getattr(result, "stop_reason", None) == "timeout":  # either side of the deadline
            raise HTTPException(status_code=504, detail=f"no answer within {cfg.request_timeout_s:g}s")
        return result

    def log_answer(request: Request, a: Answer, route: str) -> None:
        record = {"event": "answer", "route": route, "request_id": request.scope.get("state", {}).get("request_id"),
                  **a.timings, **a.usage, "stop_reason": a.stop_reason, "citations": len(a.citations),
                  "invalid_markers": len(a.invalid_markers), "mode": a.mode}
        if cfg.log_text:
            record.update(question=a.question, answer=a.text)
        log.info(json.dumps(record))

    def run_answer(question: str, use_retrieval: bool, k: int | None, mode: str | None, **decoding) -> Callable:
        r = require(retriever, "an index") if use_retrieval else None
        g = require(generator, "a generator")
        kwargs = dict(k=k or cfg.k, mode=mode or cfg.mode, budget=cfg.prompt_tokens,
                      **{k_: v for k_, v in decoding.items() if v is not None})
        kwargs.setdefault("max_new_tokens", decoding_defaults.max_new_tokens)
        # the generator stops itself at the request's deadline, so a 504 also frees the model for the next request
        kwargs["deadline"] = time.monotonic() + cfg.request_timeout_s
        return lambda stream=False: (pipeline.stream_answer if stream else pipeline.answer)(question, r, g, **kwargs)

    async def first_then_rest(it: Iterator) -> tuple[Any, Iterator]:
        """Pull the first item in a worker thread so queue-full and bad input become HTTP errors, not a
        broken stream."""
        return await in_thread(lambda: next(it)), it

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz")
    async def readyz() -> Response:
        if retriever is None or generator is None:
            return _error(503, "not_ready", "index or model not loaded")
        return Response({"status": "ready", "index": retriever.fingerprint, "model": generator.name})

    @post("/v1/retrieve", status_code=200, guards=[auth_guard])
    async def retrieve(data: RetrieveRequest) -> RetrieveResponse:
        r = require(retriever, "an index")
        t = time.perf_counter()
        hits = await in_thread(lambda: r.search(data.query, k=data.k or cfg.k, mode=data.mode or cfg.mode,
                                                source=data.source))
        return RetrieveResponse(hits=[_passage_out(h) for h in hits], index=r.fingerprint,
                                timings={"retrieve_ms": round((time.perf_counter() - t) * 1000, 2)})

    @post("/v1/answer", status_code=200, guards=[auth_guard])
    async def answer(data: AnswerRequest, request: Request) -> Any:
        run = run_answer(data.question, data.use_retrieval, data.k, data.mode, max_new_tokens=data.max_new_tokens,
                         repetition_penalty=data.repetition_penalty)
        if not data.stream:
            a = await in_thread(run)
            log_answer(request, a, "answer")
            return _answer_out(a)
        first, rest = await first_then_rest(run(stream=True))

        def events() -> Iterator[ServerSentEventMessage]:
            try:
                for item in _chain(first, rest):
                    if isinstance(item, str):
                        yield ServerSentEventMessage(event="token", data=json.dumps({"text": item}))
                    else:
                        log_answer(request, item, "answer-stream")
                        yield ServerSentEventMessage(event="answer", data=msgspec.json.encode(_answer_out(item)).decode())
            except MedciteError as e:
                yield ServerSentEventMessage(event="error", data=json.dumps({"error": type(e).__name__, "detail": str(e)}))

        return EventStream(events())

    @post("/v1/chat/completions", status_code=200, guards=[auth_guard])
    async def chat_completions(data: ChatRequest, request: Request) -> Any:
        g = require(generator, "a generator")
        max_new = data.max_completion_tokens or data.max_tokens
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if data.use_retrieval:
            users = [m for m in data.messages if m.role == "user" and m.text().strip()]
            if not users:
                raise InvalidRequestError("messages hold no user message with text")
            run = run_answer(users[-1].text(), True, data.k, data.mode, max_new_tokens=max_new,
                             repetition_penalty=data.repetition_penalty)
        else:  # plain model server: the conversation goes to the model as given
            msgs = [{"role": m.role, "content": m.text()} for m in data.messages]
            overrides = {k: v for k, v in (("max_new_tokens", max_new),
                                           ("repetition_penalty", data.repetition_penalty)) if v is not None}
            overrides["deadline"] = time.monotonic() + cfg.request_timeout_s
            run = lambda stream=False: (g.stream if stream else g.generate)(msgs, **overrides)  # noqa: E731

        def finish(item: Answer | Generation) -> tuple[str, str, Usage, list[CitationOut]]:
            if isinstance(item, Answer):
                log_answer(request, item, "chat")
                return (item.text, "stop" if item.stop_reason == "end_of_turn" else "length", Usage(**item.usage),
                        [CitationOut(**c.to_dict()) for c in item.citations])
            return (item.text, "stop" if item.stop_reason == "end_of_turn" else "length",
                    Usage(item.prompt_tokens, item.completion_tokens, item.prompt_tokens + item.completion_tokens), [])

        if not data.stream:
            text, reason, usage, citations = finish(await in_thread(run))
            return ChatResponse(id=cid, object="chat.completion", created=created, model=g.name,
                                choices=[ChatChoice(0, ChatChoiceMessage("assistant", text), reason)],
                                usage=usage, citations=citations)
        first, rest = await first_then_rest(run(stream=True))

        def chunk(delta: dict, reason: str | None = None, **extra) -> ServerSentEventMessage:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": g.name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason}], **extra}
            return ServerSentEventMessage(data=json.dumps(body))

        def events() -> Iterator[ServerSentEventMessage]:
            yield chunk({"role": "assistant", "content": ""})
            try:
                for item in _chain(first, rest):
                    if isinstance(item, str):
                        yield chunk({"content": item})
                    else:
                        _, reason, usage, citations = finish(item)
                        yield chunk({}, reason, usage=msgspec.to_builtins(usage),
                                    citations=msgspec.to_builtins(citations))
            except MedciteError as e:
                yield ServerSentEventMessage(data=json.dumps({"error": {"message": str(e), "type": type(e).__name__}}))
            yield ServerSentEventMessage(data="[DONE]")

        return EventStream(events())

    return Litestar(
        route_handlers=[healthz, readyz, retrieve, answer, chat_completions],
        exception_handlers={MedciteError: _domain_error, HTTPException: _http_error,
                            UnicodeDecodeError: _bad_encoding, RecursionError: _too_deep, Exception: _unexpected},
        middleware=[_request_log],
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # `medcite serve` sets up plain JSON-line logging itself
        debug=False,
    )


class EventStream(ServerSentEvent):
    """ServerSentEvent whose text/event-stream content type survives handlers that default to JSON (Litestar
    2.25 lets the handler's media type win over a streaming response's own)."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = None
        return super().to_asgi_response(*args, **kwargs)


def _chain(first: Any, rest: Iterator) -> Iterator:
    yield first
    yield from rest
