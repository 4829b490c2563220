"""The operators' routes: GET /healthz (alive), GET /readyz (every part loaded and the model answering), GET
/metrics (Prometheus, as `metrics` allows) and POST /v1/feedback (a person's rating of an answer)."""

from __future__ import annotations

import anyio
from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from core.errors import ForbiddenError, MedciteError
from pipeline.triage import describe as describe_triage
from pipeline.verify.stage import calibration_in_force
from service.dependencies import Components
from service.errors import API_ERRORS, error_response, error_responses
from service.middleware import auth_guard, metrics_guard
from service.schemas import FeedbackRequest, FeedbackResponse


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", responses=error_responses(503))
async def readyz(components: NamedDependency[Components]) -> Response:
    if components.retriever is None or components.generator is None:
        return error_response(503, "not_ready", "index or model not loaded")
    try:
        await anyio.to_thread.run_sync(components.generator.health)
    except MedciteError as e:
        return error_response(503, "not_ready", str(e))
    embedder = (getattr(components.retriever, "manifest", None) or {}).get("embedder", {})
    return Response({"status": "ready", "index": components.retriever.fingerprint,
                     # how queries are embedded: the index's own backend and precision (retriever/search.py)
                     "embedder": {"backend": embedder.get("backend", "torch"), "precision": embedder.get("precision")},
                     # hybrid search's optional stages: question-type prior, reranker, question entailment
                     "retrieval": stages() if callable(stages := getattr(components.retriever, "stages", None)) else {},
                     "model": components.generator.name, "judge": components.judge_info(),
                     "triage": await anyio.to_thread.run_sync(describe_triage),
                     "calibration": calibration_in_force(components.cfg.verify, components.retriever,
                                                         components.judges)})


@get("/metrics", guards=[metrics_guard], sync_to_thread=False, include_in_schema=False)
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
    return FeedbackResponse(id=row, answer_id=data.answer_id, stored=True,
                            comment_kept=bool(data.comment) and store.log_text)
