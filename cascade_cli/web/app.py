"""The parent's ASGI app: ``create_app(store, clock, settings)``.

The app only translates HTTP <-> store calls. Every route of PROTOCOL.md is served under both
prefixes (``/api/v1/cascade`` and ``/api/v1/wx/cascade``) by including one router twice; all
state lives on ``app.state.cascade`` (no module globals), so several apps can live in one process.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cascade_cli import PROTOCOL_VERSION, __version__
from cascade_cli.clock import Clock
from cascade_cli.config import Settings
from cascade_cli.domain import tokens
from cascade_cli.domain.metrics import Metrics
from cascade_cli.errors import StoreError
from cascade_cli.protocol import CANONICAL_PREFIX, LEGACY_PREFIX
from cascade_cli.store import migrate, nodes
from cascade_cli.store.engine import Store
from cascade_cli.web import adapters, ui
from cascade_cli.web.db import BatchingDb, ThreadedDb
from cascade_cli.web.envelope import error_response, install_handlers, ok
from cascade_cli.web.fastpath import NodeFastPath
from cascade_cli.web.http_auth import Throttle
from cascade_cli.web.input_guard import ControlCharGuard
from cascade_cli.web.longpoll import Waiters
from cascade_cli.web.routes_admin import router as admin_router
from cascade_cli.web.routes_doctor import doctor_router
from cascade_cli.web.routes_node import router as node_router

log = logging.getLogger("cascade.parent.http")
# One line per request when log.access_log is on (setup_logging sets the level).
access_log = logging.getLogger("cascade.access")


@dataclass
class AppState:
    store: Store
    clock: Clock
    settings: Settings
    db: ThreadedDb
    metrics: Metrics
    throttle: Throttle
    waiters: Waiters
    admin_secret: bytes | None
    extra: dict[str, Any] = field(default_factory=dict)


def _route_label(scope: Scope) -> str:
    route = adapters.matched_route(scope)
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return "unmatched"
    for prefix in (LEGACY_PREFIX, CANONICAL_PREFIX):
        if path.startswith(prefix + "/"):
            return path[len(prefix):]
    return path


class BodyLimitMiddleware:
    """Refuses bodies over ``max_bytes`` (declared or streamed) with 413, and times requests.

    The body is read completely before the app runs (it is small by construction), which also
    lets the signature check hash exactly the bytes the route will parse.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self._handle(scope, receive, send_wrapper)
        finally:
            took = time.perf_counter() - started
            self.metrics.observe_request(scope.get("method", "?"), _route_label(scope),
                                         status[0], took)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client") or ("-", 0)
                # The path only: a query string may carry a token some day.
                access_log.info("%s %s %s %d %.1fms", client[0], scope.get("method", "?"),
                                scope.get("path", "?"), status[0], took * 1000)

    async def _reject(self, scope: Scope, send: Send, status: int, error: str,
                      message: str) -> None:
        response = error_response(status, error, message, headers={"Connection": "close"})
        await response(scope, self._no_receive, send)

    @staticmethod
    async def _no_receive() -> Message:
        return {"type": "http.disconnect"}

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._reject(scope, send, 400, "bad_request",
                                       "invalid Content-Length header")
                    return
        if declared is not None and declared > self.max_bytes:
            await self._reject(scope, send, 413, "payload_too_large",
                               f"request body of {declared} bytes is over the limit of "
                               f"{self.max_bytes} bytes (parent.limits.max_body_bytes)")
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await self._reject(scope, send, 413, "payload_too_large",
                                   f"request body is over the limit of {self.max_bytes} bytes "
                                   "(parent.limits.max_body_bytes)")
                return
            if body:
                chunks.append(body)
            if not message.get("more_body", False):
                break
        buffered: list[Message] = [{"type": "http.request", "body": b"".join(chunks),
                                    "more_body": False}]

        async def replay() -> Message:
            if buffered:
                return buffered.pop()
            return await receive()

        await self.app(scope, replay, send)


def _unique_id(prefix_tag: str) -> Callable[[APIRoute], str]:
    def gen(route: APIRoute) -> str:
        methods = "_".join(sorted(route.methods or ()))
        name = route.path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
        return f"{prefix_tag}_{methods.lower()}_{name}".replace("-", "_")
    return gen


class CascadeApp(FastAPI):
    """FastAPI, with three outer layers around its middleware stack: ``BodyLimitMiddleware``
    (every request), ``ControlCharGuard`` (no control character in path or query), then
    ``NodeFastPath`` (the hot node routes; see ``fastpath``).

    ``fast_path=False`` (``parent.http_fast_path: off``) leaves out ``NodeFastPath`` and the
    cached telemetry answer: plain FastAPI, relying on none of its internals (``adapters``).
    """

    # How long the answer to "is FastAPI's native OpenTelemetry on?" is reused. FastAPI asks
    # on every request: three provider look-ups, each an ``os.environ`` probe, 3-4% of the
    # parent's CPU per allocation. A provider configured while the server runs (OpenTelemetry
    # lets each be set once) is seen within this delay.
    TELEMETRY_RECHECK = 1.0

    def __init__(self, *, max_body_bytes: int, metrics: Metrics, fast_path: bool = True,
                 **kwargs: Any) -> None:
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.fast_path = fast_path
        self._telemetry_on = False
        self._telemetry_checked = -math.inf
        super().__init__(**kwargs)

    def telemetry_on(self) -> bool:
        """FastAPI's native OpenTelemetry instrumentation is enabled (a tracer, meter or
        logger provider is configured), as of at most ``TELEMETRY_RECHECK`` seconds ago."""
        now = time.monotonic()
        if now - self._telemetry_checked >= self.TELEMETRY_RECHECK:
            self._telemetry_on = adapters.native_telemetry_enabled(self)
            self._telemetry_checked = now
        return self._telemetry_on

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path and scope["type"] == "http" and not self.root_path \
                and not self.telemetry_on():
            # What FastAPI.__call__ does for a request when its telemetry is off, without
            # asking the providers again.
            await adapters.call_without_telemetry(self, scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        inner = super().build_middleware_stack()
        if self.fast_path:
            inner = NodeFastPath(inner, self)
        return BodyLimitMiddleware(ControlCharGuard(inner), max_bytes=self.max_body_bytes,
                                   metrics=self.metrics)


def create_app(store: Store, clock: Clock, settings: Settings, *,
               admin_secret: bytes | None = None) -> FastAPI:
    """Build the app. ``admin_secret`` defaults to the configured secret file (read once)."""
    a = settings.parent.auth
    metrics = Metrics()
    if admin_secret is None:
        admin_secret = tokens.load_for_app(settings.admin_token_secret_file)
    pool = settings.model.database.pool_size
    # SQLite has one writer and every transaction takes the write lock (BEGIN IMMEDIATE):
    # more threads would only queue in its sleeping busy handler, which wrecks tail latency.
    # A batch of node requests reads all of its callers' nodes in one query (prelude).
    # On PostgreSQL and MySQL/MariaDB two batching threads overlap one batch's round trips
    # with the next batch's work: +15-20% allocations per second on 2 cores (three threads
    # added little more, and more CPU per request).
    sqlite = store.dialect == "sqlite"
    db = BatchingDb(store, clock, workers=1 if sqlite else 2,
                    pool_threads=None if sqlite else pool, prelude=nodes.read_ahead)
    state = AppState(store=store, clock=clock, settings=settings, db=db, metrics=metrics,
                     throttle=Throttle(a.failed_attempts_limit, a.failed_attempts_window,
                                       a.failed_attempts_address_limit),
                     waiters=Waiters(), admin_secret=admin_secret)

    app = CascadeApp(max_body_bytes=settings.parent.limits.max_body_bytes, metrics=metrics,
                     fast_path=settings.parent.http_fast_path == "auto",
                     title="Cascade parent", version=__version__,
                     description=f"Cascade wire protocol version {PROTOCOL_VERSION}. Every "
                                 f"route is served under {CANONICAL_PREFIX} and {LEGACY_PREFIX}.",
                     docs_url=None, redoc_url=None)  # /docs: parent.ui (local assets)
    app.state.cascade = state
    install_handlers(app)

    for router in (node_router, admin_router, doctor_router()):
        app.include_router(router, prefix=CANONICAL_PREFIX,
                           generate_unique_id_function=_unique_id("v1"))
        app.include_router(router, prefix=LEGACY_PREFIX,
                           generate_unique_id_function=_unique_id("wx"))

    ui.install(app, settings.parent.base_path)  # the dashboard at /ui, / and /docs

    @app.get("/healthz", tags=["health"])
    async def healthz() -> Response:
        return ok({"status": "ok", "protocol": PROTOCOL_VERSION, "version": __version__})

    head = migrate.head_revision()

    def ready() -> None:
        # Reachable is not enough: an empty or old database answers every route 503.
        store.ping()
        migrate.require_current(store, head)

    @app.get("/readyz", tags=["health"])
    async def readyz() -> Response:
        try:
            await anyio.to_thread.run_sync(ready)
        except StoreError as exc:
            log.warning("not ready: %s", exc)
            return error_response(503, exc.code, exc.public,
                                  headers={"Retry-After": str(exc.retry_after)})
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            return error_response(503, "database_unavailable",
                                  f"database not reachable: {type(exc).__name__}")
        return ok({"status": "ready", "database": store.dialect, "schema": head})

    @app.get("/metrics", tags=["health"])
    async def metrics_route() -> Response:
        off = settings.parent.offline_after
        try:
            await state.db.run(lambda s, now: metrics.refresh_from_db(s, now, off))
        except Exception:  # noqa: BLE001 - serve the counters even if the database is away
            state.extra["metrics_refresh_failed"] = True
        return Response(metrics.render(), media_type=metrics.content_type)

    return app
