"""The Litestar API: a thin HTTP edge over the answer pipeline and the retriever.

    from service.app import create_app
    app = create_app(retriever, generator, ServeConfig())      # components are loaded once, by the caller
    uvicorn.run(app)                                           # or: medcite serve

Endpoints: POST /v1/answer (JSON or SSE), POST /v1/retrieve, POST /v1/verify (any text checked against given
sources) in routes/answer.py; POST /v1/chat/completions (OpenAI-compatible, JSON or SSE) and GET /v1/models in
routes/openai.py; GET /healthz, GET /readyz, GET /metrics, POST /v1/feedback in routes/ops.py; OpenAPI at
/schema/openapi.json. Every error is JSON {"error", "detail"} (service/errors.py, the one place that maps errors to
status codes). Generation runs in a worker thread, never on the event loop (service/worker.py). Question and answer
text are not logged unless `log_text` is set: medical questions are private.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.static_files import create_static_files_router

from core.feedback import FeedbackStore
from core.types import Generator, Retriever
from pipeline.verify.judges import Judges
from service.config import ServeConfig
from service.dependencies import Components, provide_components
from service.errors import EXCEPTION_HANDLERS
from service.middleware import host_guard, json_only, request_log
from service.routes.answer import answer, retrieve, verify_text
from service.routes.openai import chat_completions, model, models
from service.routes.ops import give_feedback, healthz, readyz, scrape_metrics

MAX_BODY_BYTES = 64 * 1024
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
        dependencies={"components": Provide(provide_components, sync_to_thread=False)},
        state=State({"components": Components(retriever, generator, cfg or ServeConfig(), judges, feedback)}),
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[request_log, host_guard, json_only],  # outermost first: a refusal is logged too
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
