"""A shorter way through the app for the four requests a child repeats for every allocation.

``claim-task``, ``task-status``, ``upload-articles`` and ``report-completion`` are most of a
busy parent's requests. Through FastAPI each one passes five middlewares, route matching over
every route of both prefixes, and dependency solving: about a third of the parent's CPU per
allocation on SQLite, more than the database work of those requests.

``NodeFastPath`` serves such a request itself when it is plainly well-formed: exact path,
JSON body of the right shape, only the expected query parameters with ordinary values. It
runs the *same* code FastAPI would: the same credential check (``require_node``), the same
endpoint functions of ``routes_node``, the same exception handlers of the app. Anything else
(a validation error, another content type, an unknown query parameter, a trailing slash)
goes through FastAPI unchanged, which then answers exactly as it always has. The routes stay
declared in FastAPI, so ``/openapi.json`` describes them as before.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cascade_cli.protocol import (
    CANONICAL_PREFIX,
    LEGACY_PREFIX,
    ReportCompletionIn,
    TaskStatusIn,
    UploadArticlesIn,
)
from cascade_cli.web import adapters, routes_node
from cascade_cli.web.http_auth import require_node

# ``claim-task``'s query parameters in their plain forms; anything else goes through FastAPI,
# which validates (and words its errors) as the route declares.
# ASCII digits only: float() and int() also read other scripts' digits, pydantic does not.
_WAIT = re.compile(r"[0-9]{1,2}(\.[0-9]{1,6})?")
_MAX = re.compile(r"[0-9]{1,3}")


@dataclass(frozen=True)
class _Route:
    api_route: APIRoute  # as declared in routes_node; its path labels the metrics
    body: type[BaseModel] | None
    call: Callable[..., Awaitable[Response]]
    reads_body: bool  # FastAPI would read a body for it (then claim-task is not served here)


def _claim_query(query: bytes) -> tuple[float, int] | None:
    """``wait`` and ``max`` of a plain query string, as the route's bounds allow; else None."""
    wait, max_count = 0.0, 1
    seen: set[str] = set()
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            return None
        seen.add(name)
        if name == "wait" and _WAIT.fullmatch(value) and float(value) <= 60:
            wait = float(value)
        elif name == "max" and _MAX.fullmatch(value) and 1 <= int(value) <= 256:
            max_count = int(value)
        else:
            return None
    return wait, max_count


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False  # FastAPI does not read a body without a content type as JSON


class NodeFastPath:
    """ASGI middleware: serves the hot node routes directly, passes everything else on."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        declared = {(method, r.path): r for r in routes_node.router.routes
                    if isinstance(r, APIRoute) for method in r.methods or ()}
        served = {("POST", "/claim-task"): (None, routes_node.claim_task),
                  ("PUT", "/task-status"): (TaskStatusIn, routes_node.task_status),
                  ("POST", "/upload-articles"): (UploadArticlesIn, routes_node.upload_articles),
                  ("POST", "/report-completion"): (ReportCompletionIn,
                                                   routes_node.report_completion)}
        self.routes: dict[tuple[str, str], _Route] = {}
        for (method, path), (body, call) in served.items():
            api_route = declared.get((method, path))
            if api_route is None or api_route.endpoint is not call:
                raise RuntimeError(f"NodeFastPath: {method} {path} is not routes_node's "
                                   f"{call.__name__} any more")
            reads_body = adapters.route_reads_body(api_route)
            for prefix in (CANONICAL_PREFIX, LEGACY_PREFIX):
                self.routes[(method, prefix + path)] = _Route(api_route, body, call, reads_body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http" and not scope.get("root_path") \
                and not self.fastapi_app.dependency_overrides and not self._traced():
            route = self.routes.get((scope["method"], scope["path"]))
        if route is None or not await self._serve(route, scope, receive, send):
            await self.app(scope, receive, send)

    def _traced(self) -> bool:
        """FastAPI's own OpenTelemetry instrumentation is on (someone configured a tracer or
        meter provider): it names spans and metrics while routing, so let FastAPI route."""
        telemetry_on = getattr(self.fastapi_app, "telemetry_on", None)  # CascadeApp's cache
        if callable(telemetry_on):
            return bool(telemetry_on())
        return adapters.native_telemetry_enabled(self.fastapi_app)

    async def _serve(self, route: _Route, scope: Scope, receive: Receive, send: Send) -> bool:
        """Serve the request; False (nothing sent, nothing consumed) when it is not plain."""
        args: tuple[Any, ...]
        if route.body is None:
            if route.reads_body:
                return False
            parsed = _claim_query(scope.get("query_string", b""))
            if parsed is None:
                return False
            args = parsed
        else:
            if scope.get("query_string") or not _is_json(scope):
                return False
            # The body was read whole by BodyLimitMiddleware and is replayed in one message.
            message = await receive()
            if message["type"] != "http.request" or message.get("more_body"):
                raise RuntimeError("NodeFastPath expects BodyLimitMiddleware's replayed body")
            body_bytes = message.get("body", b"")
            receive = _replay(body_bytes, receive)  # for FastAPI, or for Request.body()
            try:
                # FastAPI's own steps: json.loads, then the model in Python mode.
                body = route.body.model_validate(json.loads(body_bytes), from_attributes=True)
            except Exception:  # noqa: BLE001 - bad JSON, wrong shape, nesting too deep...
                await self.app(scope, receive, send)  # ... FastAPI answers it as it always has
                return True
            args = (body,)
        adapters.set_matched_route(scope, route.api_route)
        request = Request(scope, receive)
        try:
            node = await require_node(request)
            response = await route.call(request, node, *args)
        except Exception as exc:  # noqa: BLE001 - answered by the app's own handlers
            await self._answer_error(request, exc, scope, receive, send)
        else:
            await response(scope, receive, send)
        return True

    async def _answer_error(self, request: Request, exc: Exception, scope: Scope,
                            receive: Receive, send: Send) -> None:
        """What FastAPI does with an exception: the app's handler for its class answers it;
        a bug (only the catch-all ``Exception`` handler applies), or a handler that fails,
        gets the catch-all's 500 envelope and is raised on for the server to log, as
        Starlette's ServerErrorMiddleware does."""
        handlers = self.fastapi_app.exception_handlers
        handler = next((handlers[cls] for cls in type(exc).__mro__
                        if cls is not Exception and cls in handlers), None)
        if handler is not None:
            try:
                response = await _call(handler, request, exc)
            except Exception as failure:  # noqa: BLE001 - a bug in the handler itself
                exc = failure
            else:
                await response(scope, receive, send)
                return
        catch_all = handlers.get(Exception)
        if catch_all is not None:
            await (await _call(catch_all, request, exc))(scope, receive, send)
        raise exc


async def _call(handler: Callable[..., Any], request: Request, exc: Exception) -> Response:
    response = handler(request, exc)
    if inspect.isawaitable(response):
        response = await response
    return response  # type: ignore[no-any-return]


def _replay(body: bytes, receive: Receive) -> Receive:
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay
