"""What wraps every request: the request id and one JSON log line (with its metrics), and the guards (API key,
metrics access)."""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid

from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("medcite.api")

ROUTES = frozenset({"/healthz", "/readyz", "/metrics", "/v1/models", "/v1/retrieve", "/v1/verify", "/v1/answer",
                    "/v1/chat/completions", "/v1/feedback"})
"""Route labels of the request metrics (any other path counts as `other`: no unbounded label values)."""


def request_log(app: ASGIApp) -> ASGIApp:
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


def auth_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    key = connection.app.state.components.cfg.api_key
    if not key:
        return
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), key.encode()):
        raise NotAuthorizedException("missing or wrong API key (Authorization: Bearer <key>)",
                                     headers={"WWW-Authenticate": "Bearer"})


def metrics_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    cfg = connection.app.state.components.cfg
    if cfg.metrics == "off":
        raise HTTPException(status_code=404, detail="metrics are off on this server (metrics: off)")
    if cfg.metrics == "key":
        auth_guard(connection, handler)
