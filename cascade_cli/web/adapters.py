"""Every use of FastAPI's, Starlette's and uvicorn's undocumented internals, in one place.

The parent's web layer otherwise uses only their documented API. What is here, and why:

- FastAPI's ``_native_telemetry`` (its OpenTelemetry switch): FastAPI asks it on every request,
  3-4% of the parent's CPU per allocation; ``CascadeApp`` caches the answer, and the fast path
  stands aside while it is on (FastAPI names spans and metrics while routing).
- What ``FastAPI.__call__`` does for an HTTP request when telemetry is off: ``Starlette.__call__``.
- ``APIRoute.body_field`` (whether a route reads a body) and ``scope["route"]`` (the route
  Starlette's router matched; the request metrics are labelled by it): the fast path serves a
  route without FastAPI's routing, and must look as if it had routed.
- uvicorn's HTTP protocol classes (``uvicorn.protocols.http``) and their ``send_400_response``:
  the 400 uvicorn answers by itself to an unparseable request head gets the protocol's JSON
  envelope. ``Server.servers`` gives the port actually bound (``--port 0``).

Importing this module checks the installed versions (``cascade_cli.compat``): on an upgrade this
module and the range there are the places to update, and ``parent.http_fast_path: off`` is the
fallback that needs none of the fast path's internals.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import fastapi
import starlette
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from cascade_cli import compat

compat.require("fastapi", fastapi.__version__)
compat.require("starlette", starlette.__version__)
compat.require("uvicorn", uvicorn.__version__)


# --- FastAPI / Starlette ------------------------------------------------------------------------

def native_telemetry_enabled(app: FastAPI) -> bool:
    """FastAPI's own OpenTelemetry instrumentation is on (a tracer, meter or logger provider is
    configured). False for a FastAPI without it."""
    native = getattr(app, "_native_telemetry", None)
    enabled = getattr(native, "enabled", None)
    return bool(enabled()) if callable(enabled) else False


# What ``FastAPI.__call__`` does for an HTTP request when its telemetry is off and it has no
# ``root_path`` (without asking the telemetry providers again). The function itself, not a
# wrapper: it runs on every request.
call_without_telemetry: Callable[[Starlette, Scope, Receive, Send], Awaitable[None]] = \
    Starlette.__call__


def route_reads_body(route: APIRoute) -> bool:
    """The route declares a request body (FastAPI would read and validate one)."""
    return route.body_field is not None


def matched_route(scope: Scope) -> Any:
    """The route Starlette's router matched for this request, or None."""
    return scope.get("route")


def set_matched_route(scope: Scope, route: APIRoute) -> None:
    """Record ``route`` as matched, as Starlette's router does (for code that reads it)."""
    scope["route"] = route


# --- uvicorn ---------------------------------------------------------------------------------

RawResponse = Callable[[list[tuple[bytes, bytes]]], bytes]


def protocol_answering_400(raw_400: RawResponse) -> type[Any]:
    """uvicorn's HTTP protocol class (what its ``http="auto"`` picks: httptools when
    installed, else h11) whose answer to an unparseable request is ``raw_400(default
    headers)``, written as is before the connection is closed."""

    class EnvelopeH11Protocol(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            self.transport.write(raw_400(self.server_state.default_headers))
            self.transport.close()

    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is optional for uvicorn
        return EnvelopeH11Protocol

    class EnvelopeHttpToolsProtocol(HttpToolsProtocol):
        def send_400_response(self, msg: str) -> None:
            self.transport.write(raw_400(self.server_state.default_headers))
            self.transport.close()

    return EnvelopeHttpToolsProtocol


def bound_port(server: uvicorn.Server, default: int) -> int:
    """The TCP port the started server listens on (``default`` when it cannot be told)."""
    try:
        return int(server.servers[0].sockets[0].getsockname()[1])
    except Exception:  # noqa: BLE001 - only the announced port depends on it
        return default
