"""The OpenAI-compatible routes: POST /v1/chat/completions (JSON or SSE, through the same pipeline, or to the bare
model where the operator allows raw chat), GET /v1/models and /v1/models/{id}."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import FromPath, JSONBody
from litestar.response import ServerSentEventMessage

from core.errors import ForbiddenError, InvalidRequestError, MedciteError
from core.types import FINISH_REASONS, Answer
from pipeline.triage import model_dir as triage_model_dir
from service.dependencies import Components
from service.errors import GENERATION_ERRORS, error_responses
from service.middleware import auth_guard
from service.routes.answer import log_answer, runner
from service.schemas import (
    ChatChoice,
    ChatChoiceMessage,
    ChatRequest,
    ChatResponse,
    CitationOut,
    ModelCard,
    ModelList,
    Usage,
)
from service.worker import EventStream, first_then_rest, in_thread

STARTED = int(time.time())


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
        run = runner(components, turns[last].text(), True, data.k, data.mode, cancel, history,
                     max_new_tokens=max_new, repetition_penalty=data.repetition_penalty)
    else:  # plain model server (medcite behind medcite): the conversation goes to the model as given
        if not cfg.allow_raw_chat:
            raise ForbiddenError("use_retrieval: false is off on this server (the operator's allow_raw_chat)")
        pipeline = components.need_pipeline(use_retrieval=False)
        msgs = [{"role": m.role, "content": m.text()} for m in data.messages]
        decoding = {k: v for k, v in (("max_new_tokens", max_new or cfg.decoding.max_new_tokens),
                                      ("repetition_penalty", data.repetition_penalty)) if v is not None}
        decoding.update(deadline=time.monotonic() + cfg.request_timeout_s, cancel=cancel)

        def run(stream: bool = False) -> Any:
            if stream:
                return pipeline.stream_converse(msgs, **decoding)
            a = pipeline.converse(msgs, **decoding)
            components.answered(a)
            return a

    if not data.stream:
        with components.admit() as slot:
            a = await in_thread(slot.around(run), cfg.request_timeout_s, request, cancel)
        log_answer(request, a, "chat", cfg.log_text)
        text, reason, usage, citations = _chat_finish(a)
        return ChatResponse(id=cid, object="chat.completion", created=created, model=g.name,
                            choices=[ChatChoice(0, ChatChoiceMessage("assistant", text), reason)],
                            usage=usage, citations=citations, answer_id=a.id,
                            retrieval_query=a.retrieval_query or None)
    with components.admit() as slot:
        _, items = await first_then_rest(slot.over(run(stream=True)), cfg.request_timeout_s)

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
                    log_answer(request, item, "chat-stream", cfg.log_text)
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


def model_card(c: Components) -> ModelCard:
    """The served model in the OpenAI shape plus what medcite adds: its index, judges, prompt and version."""
    from core.version import __version__
    from generator.prompt import PROMPT_VERSION

    g = c.need_generator()
    return ModelCard(id=g.name, object="model", created=STARTED, owned_by="medcite",
                     index=c.retriever.fingerprint if c.retriever is not None else None, judge=c.judge_info(),
                     triage=triage_model_dir() or "rules", prompt_version=PROMPT_VERSION, medcite_version=__version__)


@get("/v1/models", guards=[auth_guard], responses=error_responses(401))
async def models(components: NamedDependency[Components]) -> ModelList:
    """What `openai` clients list first (models.list()); one model, the one this server answers with."""
    return ModelList(object="list", data=[model_card(components)])


@get("/v1/models/{model_id:path}", guards=[auth_guard], responses=error_responses(401, 404))
async def model(model_id: FromPath[str], components: NamedDependency[Components]) -> ModelCard:
    card = model_card(components)
    if model_id.lstrip("/") != card.id.lstrip("/"):
        raise HTTPException(status_code=404, detail=f"this server serves {card.id!r}, not {model_id!r}")
    return card
