"""What wraps every request: the request id, the browser's defences and one JSON log line (with its metrics); JSON
bodies only on the API; and the guards (API key, metrics access)."""

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

from service.config import is_loopback

log = logging.getLogger("medcite.api")

ROUTES = frozenset({"/healthz", "/readyz", "/metrics", "/v1/models", "/v1/retrieve", "/v1/verify", "/v1/answer",
                    "/v1/chat/completions", "/v1/feedback"})
"""Route labels of the request metrics (any other path counts as `other`: no unbounded label values)."""


SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
                                 b"object-src 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
"""On every response: the page runs only its own files and cannot be framed; no response is content-sniffed; no
address (which can carry a question) leaves in a Referer."""


def request_log(app: ASGIApp) -> ASGIApp:
    """Request id (from X-Request-ID or new) on the scope and the response, the browser's defences on the response,
    and one JSON log line per request."""

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
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode()), *SECURITY_HEADERS]
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


async def refuse(send: Send, status: int, error: str, detail: str) -> None:
    """Answer before the app sees the request, in the one error shape ({"error", "detail"}; service/errors.py)."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(header: str) -> str:
    """The name in a Host header, without its port ("[::1]:8000" -> "::1", "localhost:8000" -> "localhost")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_guard(app: ASGIApp) -> ASGIApp:
    """Requests must name this server: on loopback, a loopback name or one of `allowed_hosts` (DNS rebinding: a page
    elsewhere whose name now resolves to 127.0.0.1 still sends its own name); elsewhere `allowed_hosts` if set."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            cfg = scope["app"].state.components.cfg
            allowed = {h.lower() for h in cfg.allowed_hosts} | (LOOPBACK_NAMES if is_loopback(cfg.host) else set())
            name = host_name(dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1"))
            if allowed and name not in allowed:
                await refuse(send, 400, "invalid_host", f"this server does not answer to {name[:60] or 'no Host'}; "
                                                        f"it answers to {', '.join(sorted(allowed))} (allowed_hosts "
                                                        "adds names)")
                return
        await app(scope, receive, send)

    return middleware


def json_only(app: ASGIApp) -> ASGIApp:
    """A POST to the API must say its body is JSON, else 415. A form or `text/plain` post is what any web site can
    make a visitor's browser send without asking (no CORS preflight), so accepting one would let a page elsewhere
    post questions to a server on the visitor's own machine."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path", "").startswith("/v1/"):
            raw = dict(scope.get("headers", [])).get(b"content-type", b"").decode("latin-1")
            if raw.split(";")[0].strip().lower() != "application/json":
                await refuse(send, 415, "unsupported_media_type", "the body must be JSON (Content-Type: "
                                                                   f"application/json), got {raw[:60] or 'no Content-Type'}")
                return
        await app(scope, receive, send)

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
