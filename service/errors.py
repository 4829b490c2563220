"""The one map from errors to HTTP: domain errors (core.errors) to status codes, Litestar's own errors, bad bodies and
anything unexpected, all answered in one shape, `{"error", "detail"}`, with the responses each route documents."""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

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
from service.schemas import ErrorResponse

log = logging.getLogger("medcite.api")
RETRY_AFTER_S = 2

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


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """The error responses a route documents, all in the one shape every error has: {"error", "detail"}."""
    words = {400: "invalid request (the detail names the field)", 401: "missing or wrong API key",
             403: "forbidden by the server's settings", 404: "not found", 413: "body larger than 64 KB",
             415: "the body is not declared JSON (Content-Type: application/json)",
             502: "the remote generator failed",
             503: "not ready, or max_in_flight requests are already doing model work (Retry-After)",
             504: "no answer within request_timeout_s"}
    return {c: ResponseSpec(ErrorResponse, description=words[c], generate_examples=False) for c in codes}


API_ERRORS = error_responses(400, 401, 403, 413, 415, 503)
GENERATION_ERRORS = error_responses(400, 401, 403, 413, 415, 502, 503, 504)


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response(ErrorResponse(error=error, detail=detail), status_code=status, headers=headers,
                    media_type=MediaType.JSON)


def _domain_error(_: Request, exc: MedciteError) -> Response:
    status = next((STATUS[c] for c in type(exc).__mro__ if c in STATUS), 500)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, OverloadedError) else None
    return error_response(status, type(exc).__name__.removesuffix("Error").lower() or "error", str(exc), headers)


def _http_error(_: Request, exc: HTTPException) -> Response:
    detail = exc.detail
    if isinstance(exc, ValidationException) and exc.extra:
        extras = exc.extra if isinstance(exc.extra, list) else [exc.extra]
        detail = "; ".join(_problem(e) for e in extras)
    name = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
            413: "too_large", 415: "unsupported_media_type"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, name, detail, exc.headers)


def _problem(e: Any) -> str:
    """One validation problem in words, naming the field ("rating: Invalid enum value 'meh'")."""
    if not isinstance(e, dict):
        return str(e)
    key, message = e.get("key"), str(e.get("message", e))
    if key == "data" and message == "'data'":  # Litestar's words for a request without a body
        return "the request has no JSON body; send a JSON object (see /schema for the fields)"
    return f"{key}: {message}" if key and not message.startswith(f"{key}:") and key not in message else message


def _bad_encoding(_: Request, exc: UnicodeDecodeError) -> Response:
    return error_response(400, "invalid_request", f"request body is not valid UTF-8 ({exc.reason} at byte {exc.start})")


def _too_deep(_: Request, exc: RecursionError) -> Response:
    return error_response(400, "invalid_request", "request body is nested too deeply")


def _unexpected(request: Request, exc: Exception) -> Response:
    rid = request.scope.get("state", {}).get("request_id", "")
    # one JSON line with the id the response names, so an operator can find the traceback a user quotes
    log.error(json.dumps({"event": "error", "request_id": rid, "path": request.url.path, "error": type(exc).__name__,
                          "traceback": "".join(traceback.format_exception(exc))}))
    return error_response(500, "internal", f"internal error; quote request id {rid} to the operator")


EXCEPTION_HANDLERS = {MedciteError: _domain_error, HTTPException: _http_error, UnicodeDecodeError: _bad_encoding,
                      RecursionError: _too_deep, Exception: _unexpected}
"""What `create_app` hands Litestar: every exception becomes the one error shape."""
