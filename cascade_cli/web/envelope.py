"""The protocol envelope ``{"code","message","data"}`` and the mapping of errors onto it.

Every response the parent app sends, success or failure, goes through here, so a client can
always read ``code`` (0 or the HTTP status) and, on errors, the stable ``error`` string.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cascade_cli.errors import HttpError
from cascade_cli.protocol import NO_TASK_MESSAGE

log = logging.getLogger("cascade.parent.http")

# Stable machine codes for the HTTP statuses the framework itself produces.
_STATUS_CODES = {
    400: "bad_request",
    401: "invalid_credentials",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


# One encoder for every response: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


class EnvelopeResponse(JSONResponse):
    """UTF-8 JSON without ASCII escaping (the no-work message is Chinese)."""

    def render(self, content: Any) -> bytes:
        return _ENCODER.encode(content).encode("utf-8")


def ok(data: Any = None, message: str = "ok", status: int = 200) -> EnvelopeResponse:
    return EnvelopeResponse({"code": 0, "message": message, "data": data}, status_code=status)


def no_work() -> EnvelopeResponse:
    return ok(None, NO_TASK_MESSAGE)


def error_response(status: int, error: str, message: str, *,
                   headers: dict[str, str] | None = None,
                   detail: Any = None) -> EnvelopeResponse:
    body: dict[str, Any] = {"code": status, "message": message, "data": None, "error": error}
    if detail is not None:
        body["detail"] = detail
    return EnvelopeResponse(body, status_code=status, headers=headers)


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        where, rest = parts[0], parts[1:]
        return ".".join(rest) if rest else where
    return ".".join(parts)


def validation_error_response(exc: RequestValidationError) -> EnvelopeResponse:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        first = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (first.get("ctx") or {}).get("error", "invalid JSON")
        return error_response(400, "malformed_json", f"request body is not valid JSON: {reason}")
    details = []
    for e in errors[:20]:
        details.append({"field": _field_name(e.get("loc", ())), "type": e.get("type"),
                        "message": str(e.get("msg", ""))[:300]})
    if details:
        first = details[0]
        message = f"invalid value for '{first['field']}': {first['message']}"
    else:
        message = "invalid request"
    return error_response(422, "validation_error", message, detail=details)


def install_handlers(app: FastAPI) -> None:
    """Exception handlers that turn every failure into the envelope."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code
        if status == 404:
            message = f"no such path: {request.method} {request.url.path}"
        elif status == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        else:
            message = str(exc.detail) if exc.detail else "request refused"
        return error_response(status, _STATUS_CODES.get(status, f"http_{status}"), message,
                              headers=dict(exc.headers) if exc.headers else None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return validation_error_response(exc)

    @app.exception_handler(HttpError)
    async def _answered(request: Request, exc: HttpError) -> Response:
        # Every error that may reach a client carries its answer (errors.HttpError): status,
        # code, public message, headers and detail. The store's errors are translated from
        # the driver's exceptions once, in store.faults; the log names their cause in full
        # (host, file, permissions), the client gets a message without them.
        if exc.log_level is not None:
            log.log(exc.log_level, "%s on %s %s: %s", exc.log_what, request.method,
                    request.url.path, exc.log_text())
        return error_response(exc.status, exc.code, exc.public_message(),
                              headers=exc.headers(), detail=exc.detail())

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        # Only real bugs reach here: client input is validated before any work is done.
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")
