"""The dashboard's HTTP routes: server-rendered pages, their live fragments, and the actions.

Every page is rendered whole on the first request; its ``#live`` part is fetched again every
few seconds as an HTML fragment (``?live=1``) by ``static/app.js``, so the page updates without
reloading and without a client-side framework. Actions are ``POST`` requests that answer with
the protocol's JSON envelope (the rotated secret is in it, shown once by the page).

No route here is in the OpenAPI schema: the dashboard is not part of the wire protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from cascade_cli.clock import ensure_utc
from cascade_cli.domain.dispatch import dispatch
from cascade_cli.domain.scheduler import next_runs, scheduler_timezone
from cascade_cli.errors import AuthError, InvalidInput, NotFound
from cascade_cli.store import dashboard, nodes
from cascade_cli.web.envelope import error_response, ok
from cascade_cli.web.ui import i18n, session

if TYPE_CHECKING:
    from cascade_cli.web.app import AppState

log = logging.getLogger("cascade.parent.ui")

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
# The files the dashboard serves, by name: nothing else under the package is reachable.
STATIC_FILES = {"app.js": "text/javascript", "app.css": "text/css"}
LIVE_INTERVAL_MS = 2000
NEXT_FIRES = 3
Ident = Annotated[str, PathParam(min_length=1, max_length=128)]
LiveFlag = Annotated[str | None, Query(max_length=8)]  # ?live=1: the fragment alone

_ENV = Environment(loader=FileSystemLoader(str(HERE / "templates")),
                   autoescape=select_autoescape(["html"]), trim_blocks=True,
                   lstrip_blocks=True)


def _state(request: Request) -> AppState:
    return request.app.state.cascade  # type: ignore[no-any-return]


def _no_node_credentials(request: Request) -> None:
    session.refuse_node_credentials(request)


@dataclass(frozen=True)
class Clocks:
    """Times as the page shows them: in the scheduler's time zone, and ages."""

    now: datetime
    tz: tzinfo
    t: Callable[..., str]

    def time(self, value: datetime | None) -> str:
        if value is None:
            return "-"
        return ensure_utc(value).astimezone(self.tz).strftime("%Y-%m-%d %H:%M:%S")

    def age(self, value: datetime | None) -> str:
        if value is None:
            return self.t("never")
        seconds = max(0, int((self.now - ensure_utc(value)).total_seconds()))
        if seconds < 120:
            amount, unit = seconds, "unit_s"
        elif seconds < 7200:
            amount, unit = seconds // 60, "unit_min"
        elif seconds < 172800:
            amount, unit = seconds // 3600, "unit_h"
        else:
            amount, unit = seconds // 86400, "unit_d"
        return self.t("ago", n=f"{amount} {self.t(unit)}")


def base_url(request: Request) -> str:
    """The dashboard's URL path as the browser sees it (behind the proxy's sub-path)."""
    return _state(request).settings.parent.base_path + "/ui"


def browser_path(request: Request) -> str:
    """This request's path as the browser sees it: the sub-path plus the path without it.

    A proxy may strip ``parent.base_path`` or pass it on; either way the browser only reaches
    the parent through the sub-path, so whatever it fetches again (the live fragment) must
    carry it exactly once."""
    base_path = _state(request).settings.parent.base_path
    path = request.url.path
    if base_path and (path == base_path or path.startswith(base_path + "/")):
        path = path[len(base_path):]
    return base_path + path


class Pages:
    """Renders one request's pages (language, session and clock fixed for the request)."""

    def __init__(self, request: Request, ui: session.UiSession | None) -> None:
        state = _state(request)
        self.request = request
        self.lang = i18n.pick(request)
        self.t = i18n.translator(self.lang)
        self.base = base_url(request)
        self.tz = scheduler_timezone(state.settings)
        self.clocks = Clocks(ensure_utc(state.clock.now()), self.tz, self.t)
        self.ui = ui

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        context = {"t": self.t, "lang": self.lang, "base": self.base, "c": self.clocks,
                   "tz_name": getattr(self.tz, "key", str(self.tz)),
                   "csrf": self.ui.csrf if self.ui else "", "interval": LIVE_INTERVAL_MS,
                   "path": browser_path(self.request), **values}
        html = _ENV.get_template(template).render(context)
        response = HTMLResponse(html, status_code=status)
        # Pages hold a CSRF token and live data: never cached, never framed.
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    def view(self, name: str, live: bool, **values: Any) -> HTMLResponse:
        """The whole page, or its live fragment alone."""
        return self.render(f"_{name}.html" if live else f"{name}.html", view=name, **values)


def _to_login(request: Request) -> Response:
    """A redirect to the login form that also drops the session cookie (if any)."""
    response = RedirectResponse(base_url(request) + "/login", status_code=303)
    session.clear_session_cookie(response, request, base_url(request))
    return response


def _login_required(request: Request, exc: session.LoginRequired) -> Response:
    """401 for a fragment or an action, dropping the ended session's cookie: otherwise the
    browser would send it again on every request."""
    response = error_response(401, exc.code, exc.message)
    session.clear_session_cookie(response, request, base_url(request))
    return response


class LeavePage(Exception):
    """Raised by the ``Page`` dependency when the request has no live session: its response
    (the login redirect, or 401 for a live fragment) is what the browser gets
    (``install`` registers the handler)."""

    def __init__(self, response: Response) -> None:
        super().__init__("login required")
        self.response = response


async def leave_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LeavePage)
    return exc.response


async def _pages(request: Request) -> Pages:
    """The request's ``Pages``; without a live session, off to the login form (401 for a live
    fragment)."""
    try:
        ui = await session.current(_state(request), request)
    except session.LoginRequired as exc:
        if request.query_params.get("live"):
            raise LeavePage(_login_required(request, exc)) from None
        raise LeavePage(_to_login(request)) from None
    return Pages(request, ui)


# Every view takes its ``Pages`` through this: the session check is in one place.
Page = Annotated[Pages, Depends(_pages)]


async def _action(request: Request) -> session.UiSession | Response:
    """The session of an action, CSRF checked; 401 (cookie dropped) or 403 otherwise."""
    try:
        ui = await session.current(_state(request), request)
    except session.LoginRequired as exc:
        return _login_required(request, exc)
    session.check_csrf(request, ui)
    return ui


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (the body is already bounded by the app's body limit)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, max_num_fields=20).items()}


def build_router() -> APIRouter:
    router = APIRouter(include_in_schema=False, dependencies=[Depends(_no_node_credentials)])

    # --- static files and language ------------------------------------------------------

    @router.get("/ui/static/{name}")
    async def static(name: str) -> Response:
        media = STATIC_FILES.get(name)
        if media is None:
            raise NotFound("file", name)
        return FileResponse(STATIC / name, media_type=media,
                            headers={"Cache-Control": "no-cache"})

    @router.get("/ui/lang/{code}")
    async def language(request: Request, code: str) -> Response:
        if code not in i18n.LANGUAGES:
            raise InvalidInput(f"unknown language {code!r} (one of: "
                               f"{', '.join(i18n.LANGUAGES)})", field="code")
        response = RedirectResponse(base_url(request) + "/", status_code=303)
        back = request.headers.get("referer", "")
        path = back.split("://", 1)[-1].partition("/")[2]
        if path and ("/" + path).startswith(base_url(request) + "/"):
            response.headers["Location"] = "/" + path  # same dashboard page again
        response.set_cookie(i18n.LANG_COOKIE, code, max_age=365 * 86400,
                            path=base_url(request), samesite="strict", httponly=True)
        return response

    # --- login / logout -----------------------------------------------------------------

    @router.get("/ui/login")
    async def login_form(request: Request) -> Response:
        return Pages(request, None).render("login.html", view="login", error=None)

    @router.post("/ui/login")
    async def login(request: Request) -> Response:
        session.refuse_cross_site(request)
        state = _state(request)
        pages = Pages(request, None)
        token = (await _form(request)).get("token", "").strip()
        if session.looks_like_node_credential(token):
            state.throttle.fail(session.client_addr(request))
            return pages.render("login.html", status=403, view="login",
                                error=pages.t("node_credential_refused"))
        try:
            ui = await session.verify_token(state, request, token)
        except AuthError as exc:
            return pages.render("login.html", status=401, view="login",
                                error=f"{pages.t('login_failed')}: {exc.message}")
        response = RedirectResponse(base_url(request) + "/", status_code=303)
        session.set_session_cookie(response, request, session.admin_secret(state), ui,
                                   state.clock.now(), base_url(request))
        log.info("dashboard login (admin token %s) from %s until %s", ui.jti[:8],
                 session.client_addr(request), ui.expires_at.isoformat())
        return response

    @router.post("/ui/logout")
    async def logout(request: Request) -> Response:
        # A live session needs the CSRF token (no other site may log the operator out); an
        # ended one (expired, revoked token) is simply dropped: logging out must never fail.
        try:
            ui = await session.current(_state(request), request)
        except AuthError:
            return _to_login(request)
        session.check_csrf(request, ui, (await _form(request)).get("csrf"))
        return _to_login(request)

    # --- views --------------------------------------------------------------------------

    @router.get("/ui")
    @router.get("/ui/")
    async def overview(request: Request, pages: Page, live: LiveFlag = None) -> Response:
        state = _state(request)
        off = state.settings.parent.offline_after
        data = await state.db.run(lambda s, now: dashboard.overview(s, now, off))
        return pages.view("overview", bool(live), o=data)

    @router.get("/ui/nodes")
    async def nodes_view(request: Request, pages: Page, live: LiveFlag = None) -> Response:
        state = _state(request)
        off = state.settings.parent.offline_after
        rows = await state.db.run(lambda s, now: dashboard.node_lines(s, now, off))
        return pages.view("nodes", bool(live), nodes=rows)

    @router.get("/ui/runs")
    async def runs_view(request: Request, pages: Page, live: LiveFlag = None) -> Response:
        rows = await _state(request).db.run(lambda s, now: dashboard.recent_runs(s, limit=50))
        return pages.view("runs", bool(live), runs=rows)

    @router.get("/ui/runs/{run_id}")
    async def run_view(request: Request, pages: Page, run_id: Ident,
                       live: LiveFlag = None) -> Response:
        detail = await _state(request).db.run(lambda s, now: dashboard.run_detail(s, run_id))
        if detail is None:
            raise NotFound("run", run_id)
        return pages.view("run", bool(live), d=detail)

    @router.get("/ui/feeds")
    async def feeds_view(request: Request, pages: Page, live: LiveFlag = None) -> Response:
        rows, total = await _state(request).db.run(
            lambda s, now: dashboard.feed_lines(s, limit=200))
        return pages.view("feeds", bool(live), feeds=rows, total=total)

    @router.get("/ui/tasks")
    async def tasks_view(request: Request, pages: Page, live: LiveFlag = None) -> Response:
        state = _state(request)

        def work(s: Session, now: datetime) -> list[tuple[dashboard.TaskLine, list[datetime],
                                                          str | None]]:
            out = []
            for line in dashboard.task_lines(s):
                fires: list[datetime] = []
                problem = None
                task = dashboard.task_by_id(s, line.id)
                if task is not None and line.cron_exp:
                    try:
                        fires = [datetime.fromisoformat(str(r["fires_at"]))
                                 for r in next_runs(task, now, NEXT_FIRES, state.settings)]
                    except InvalidInput as exc:
                        problem = exc.message
                out.append((line, fires, problem))
            return out

        rows = await state.db.run(work)
        return pages.view("tasks", bool(live), tasks=rows)

    # --- actions ------------------------------------------------------------------------

    @router.post("/ui/nodes/{node_id}/{action}")
    async def node_action(request: Request, node_id: Ident, action: str) -> Response:
        ui = await _action(request)
        if isinstance(ui, Response):
            return ui
        state = _state(request)
        overlap = state.settings.parent.auth.rotation_overlap

        def work(s: Session, now: datetime) -> dict[str, Any]:
            if action in ("enable", "disable"):
                node = nodes.set_enabled(s, now, node_id, action == "enable")
                return {"id": node.id, "name": node.name, "enabled": node.enabled}
            if action == "rotate":
                node, creds = nodes.rotate_credentials(s, now, node_id, overlap)
                return {"id": node.id, "name": node.name, "api_key": creds.api_key,
                        "api_secret": creds.api_secret}
            if action == "revoke":
                node = nodes.revoke_credentials(s, now, node_id)
                return {"id": node.id, "name": node.name, "revoked": True}
            raise NotFound("node action", action)

        data = await state.db.run(work)
        log.info("dashboard: node %s %s (admin token %s)", data["name"], action, ui.jti[:8])
        message = {"enable": "node enabled", "disable": "node disabled",
                   "rotate": "credentials rotated; the api_secret is shown only once",
                   "revoke": "credentials revoked"}[action]
        response = ok(data, f"{data['name']}: {message}")
        # A rotation carries the new secret; no action's answer is worth caching anyway.
        response.headers["Cache-Control"] = "no-store"
        return response

    @router.post("/ui/tasks/{task_id}/dispatch")
    async def dispatch_now(request: Request, task_id: Ident) -> Response:
        ui = await _action(request)
        if isinstance(ui, Response):
            return ui
        state = _state(request)
        result = await state.db.run(lambda s, now: dispatch(
            s, now, state.settings, task_id=task_id, trigger="manual"))
        if result.allocations_created:
            state.waiters.notify()  # wake long-polling children at once
        log.info("dashboard: dispatched task %s (admin token %s): %s", task_id, ui.jti[:8],
                 result.message)
        return ok(result.to_dict(), result.message)

    # --- everything else under /ui ------------------------------------------------------

    # Last, so it matches only what no route above does. Without it a made-up path never
    # reaches the router's dependency and a node credential would get 404 there instead of
    # the 403 it gets everywhere else under /ui (the dependency answers 403 before this runs).
    @router.api_route("/ui/{rest:path}",
                      methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    async def not_a_page(request: Request, rest: str) -> Response:
        return error_response(404, "not_found",
                              f"no such path: {request.method} {request.url.path}")

    return router

