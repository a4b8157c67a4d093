"""Admin routes of PROTOCOL.md (plus the two listings nodes may read: feeds, message-tasks)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from cascade_cli.domain import templates
from cascade_cli.domain.dispatch import dispatch
from cascade_cli.errors import ProtocolError
from cascade_cli.protocol import (
    FeedIn,
    FeedUpdate,
    MessageTaskIn,
    MessageTaskUpdate,
    NodeIn,
    NodeUpdate,
)
from cascade_cli.store import allocations, feeds, tasks
from cascade_cli.store import nodes as nodes_repo
from cascade_cli.store.events import named_events
from cascade_cli.store.models import MessageTask, Node
from cascade_cli.web.envelope import ok
from cascade_cli.web.http_auth import Principal, require_admin, require_any

router = APIRouter()
AdminP = Annotated[Principal, Depends(require_admin)]
AnyP = Annotated[Principal, Depends(require_any)]
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Ident = Annotated[str, Path(min_length=1, max_length=128)]
OptStr = Annotated[str | None, Query(max_length=128)]


def _state(request: Request) -> Any:
    return request.app.state.cascade


# --- dispatch and allocations ---------------------------------------------------------------


@router.post("/dispatch-task", tags=["admin"], summary="Create a run per task and its allocations")
async def dispatch_task(request: Request, p: AdminP,
                        task_id: Annotated[str | None, Query(max_length=255)] = None,
                        force: bool = False) -> Response:
    state = _state(request)
    result = await state.db.run(lambda s, now: dispatch(
        s, now, state.settings, task_id=task_id or None, force=force, trigger="api"))
    if result.allocations_created:
        state.waiters.notify()  # wake long-polling children at once
    return ok(result.to_dict(), result.message)


@router.get("/allocations", tags=["admin"], summary="List allocations")
async def list_allocations(request: Request, p: AdminP, task_id: OptStr = None,
                           node_id: OptStr = None, status: OptStr = None,
                           schedule_run_id: OptStr = None, limit: Limit = 50,
                           offset: Offset = 0) -> Response:
    state = _state(request)

    def work(s: Session, now: datetime) -> dict[str, Any]:
        # a node name as well as an id
        node = (nodes_repo.find_node_id(s, node_id) or node_id) if node_id else node_id
        items, total = allocations.list_allocations(
            s, task_id=task_id, node_id=node, status=status, schedule_run_id=schedule_run_id,
            limit=limit, offset=offset)
        return {"list": items, "total": total, "page": {"limit": limit, "offset": offset}}

    return ok(await state.db.run(work))


@router.get("/pending-allocations", tags=["admin"], summary="Allocation counts")
async def pending_allocations(request: Request, p: AdminP) -> Response:
    state = _state(request)
    return ok(await state.db.run(lambda s, now: allocations.pending_counts(s, now,
                                                                            state.settings)))


# --- nodes ------------------------------------------------------------------------------------


def _node_view(s: Session, now: datetime, state: Any, node: Node) -> dict[str, Any]:
    return nodes_repo.node_view(s, node, now, state.settings.parent.offline_after)


@router.get("/nodes", tags=["admin"], summary="List nodes (never a secret)")
async def list_nodes(request: Request, p: AdminP) -> Response:
    state = _state(request)

    return ok(await state.db.run(lambda s, now: nodes_repo.node_views(
        s, now, state.settings.parent.offline_after)))


@router.post("/nodes", tags=["admin"], summary="Create a node; its credentials are shown once")
async def create_node(request: Request, p: AdminP, body: NodeIn) -> Response:
    state = _state(request)

    def work(s: Session, now: datetime) -> dict[str, Any]:
        node, creds = nodes_repo.create_node(s, now, body.name, description=body.description,
                                             max_capacity=body.max_capacity)
        data = _node_view(s, now, state, node)
        data.update({"api_key": creds.api_key, "api_secret": creds.api_secret,
                     "parent_url": state.settings.parent_url_for_children(),
                     # the names we-mp-rss's admin page reads
                     "node_id": node.id, "node_type": 1, "is_active": node.enabled})
        return data

    response = ok(await state.db.run(work), "node created; the api_secret is shown only once")
    response.headers["Cache-Control"] = "no-store"  # a secret: no cache may keep it
    return response


@router.post("/nodes/{node_id}/test-connection", tags=["admin"],
             summary="we-mp-rss's connection test: not served (see the message)")
async def test_connection(request: Request, p: AdminP, node_id: Ident) -> Response:
    # The original posted to a URL of the caller's choice with credentials (an SSRF
    # primitive) and always answered success. Cascade answers plainly where to look instead.
    raise ProtocolError(
        "test-connection is not served by Cascade: a parent never calls its children. See "
        f"the node's last heartbeat with GET /nodes/{node_id} or 'cascade nodes show "
        f"{node_id}'; on the child host, 'cascade doctor' checks its connection to the parent",
        code="not_supported", status=404)


@router.get("/nodes/{node_id}", tags=["admin"])
async def get_node(request: Request, p: AdminP, node_id: Ident) -> Response:
    state = _state(request)
    return ok(await state.db.run(lambda s, now: _node_view(
        s, now, state, nodes_repo.get_node(s, node_id))))


@router.put("/nodes/{node_id}", tags=["admin"])
async def update_node(request: Request, p: AdminP, node_id: Ident, body: NodeUpdate) -> Response:
    state = _state(request)

    def work(s: Session, now: datetime) -> dict[str, Any]:
        node = nodes_repo.update_node(s, now, node_id, body)
        return _node_view(s, now, state, node)

    return ok(await state.db.run(work))


@router.delete("/nodes/{node_id}", tags=["admin"])
async def delete_node(request: Request, p: AdminP, node_id: Ident) -> Response:
    state = _state(request)

    def work(s: Session, now: datetime) -> dict[str, Any]:
        node = nodes_repo.delete_node(s, node_id)
        return {"id": node.id, "name": node.name, "deleted": True}

    return ok(await state.db.run(work))


@router.post("/nodes/{node_id}/credentials", tags=["admin"],
             summary="Rotate credentials (old secret valid for `overlap` seconds)")
async def rotate_credentials(request: Request, p: AdminP, node_id: Ident,
                             overlap: Annotated[float | None, Query(ge=0, le=30 * 86400)] = None
                             ) -> Response:
    state = _state(request)
    window = state.settings.parent.auth.rotation_overlap if overlap is None else overlap

    def work(s: Session, now: datetime) -> dict[str, Any]:
        node, creds = nodes_repo.rotate_credentials(s, now, node_id, window)
        data = _node_view(s, now, state, node)
        data.update({"api_key": creds.api_key, "api_secret": creds.api_secret})
        return data

    response = ok(await state.db.run(work),
                  "credentials rotated; the api_secret is shown only once")
    response.headers["Cache-Control"] = "no-store"  # a secret: no cache may keep it
    return response


@router.delete("/nodes/{node_id}/credentials", tags=["admin"],
               summary="Revoke credentials at once")
async def revoke_credentials(request: Request, p: AdminP, node_id: Ident) -> Response:
    state = _state(request)
    return ok(await state.db.run(lambda s, now: _node_view(
        s, now, state, nodes_repo.revoke_credentials(s, now, node_id))))


# --- feeds ------------------------------------------------------------------------------------


@router.get("/feeds", tags=["node", "admin"], summary="List feeds (nodes and admins)")
async def list_feeds(request: Request, p: AnyP,
                     limit: Annotated[int, Query(ge=1, le=5000)] = 1000, offset: Offset = 0,
                     status: Annotated[int | None, Query(ge=0, le=1)] = None) -> Response:
    state = _state(request)

    def work(s: Session, now: datetime) -> list[dict[str, Any]]:
        items, _total = feeds.list_feeds(s, limit=limit, offset=offset, status=status)
        return [feeds.feed_dict(f) for f in items]

    return ok(await state.db.run(work))


@router.post("/feeds", tags=["admin"])
async def create_feed(request: Request, p: AdminP, body: FeedIn) -> Response:
    state = _state(request)
    return ok(await state.db.run(lambda s, now: feeds.feed_dict(
        feeds.create_feed(s, now, body))))


@router.put("/feeds/{feed_id}", tags=["admin"])
async def update_feed(request: Request, p: AdminP, feed_id: Ident, body: FeedUpdate) -> Response:
    state = _state(request)

    def work(s: Session, now: datetime) -> dict[str, Any]:
        result = feeds.update_feed(s, now, feed_id, body)
        return feeds.feed_dict(result if result is not None else feeds.get_feed(s, feed_id))

    return ok(await state.db.run(work))


@router.delete("/feeds/{feed_id}", tags=["admin"])
async def delete_feed(request: Request, p: AdminP, feed_id: Ident) -> Response:
    state = _state(request)

    def work(s: Session, now: datetime) -> dict[str, Any]:
        feeds.delete_feed(s, feed_id)
        return {"id": feed_id, "deleted": True}

    return ok(await state.db.run(work))


@router.get("/feed-status", tags=["admin"], summary="Per-feed freshness")
async def feed_status(request: Request, p: AdminP, limit: Limit = 50,
                      offset: Offset = 0) -> Response:
    state = _state(request)
    return ok(await state.db.run(lambda s, now: feeds.feed_status(
        s, now, state.settings, limit=limit, offset=offset)))


# --- message tasks ----------------------------------------------------------------------------


async def _check_template(template: str | None, message_type: int) -> None:
    """The test render of a template: bounded (templates.RENDER_SECONDS), in a worker thread
    (the event loop keeps serving) and outside any transaction (no write lock held)."""
    if template:
        await anyio.to_thread.run_sync(templates.validate_template, template, message_type)


@router.get("/message-tasks", tags=["node", "admin"],
            summary="Nodes: enabled tasks without webhook secrets; admins: every task")
async def list_tasks(request: Request, p: AnyP) -> Response:
    state = _state(request)
    is_admin = p.role == "admin"
    share = is_admin or state.settings.parent.share_webhook_secrets

    def work(s: Session, now: datetime) -> list[dict[str, Any]]:
        items = tasks.list_tasks(s, enabled_only=not is_admin)
        node = None if is_admin or p.node_id is None else nodes_repo.get_row(s, p.node_id)
        if node is not None and node.legacy:
            # A we-mp-rss child syncs tasks in the original's shape (docs/migration.md).
            return tasks.legacy_task_dicts(s, items)
        return [tasks.task_dict(t, include_secrets=share) for t in items]

    return ok(await state.db.run(work))


def _task_answer(s: Session, task: MessageTask) -> tuple[dict[str, Any], str]:
    """A saved task and the answer's message: "ok", or what its runs will skip (feeds that do
    not exist or are disabled, the original's problem 4), as ``cascade tasks add`` warns."""
    problems = feeds.feed_problems(s, list(task.mps_id or []))
    if not problems:
        return tasks.task_dict(task, include_secrets=True), "ok"
    return (tasks.task_dict(task, include_secrets=True),
            "ok; warning: " + "; ".join(f"{line}: runs skip them" for line in problems.lines()))


@router.post("/message-tasks", tags=["admin"])
async def create_task(request: Request, p: AdminP, body: MessageTaskIn) -> Response:
    state = _state(request)
    checked = (body.message_template, body.message_type)
    await _check_template(*checked)
    return ok(*await state.db.run(lambda s, now: _task_answer(
        s, tasks.create_task(s, now, body, checked=checked))))


@router.put("/message-tasks/{task_id}", tags=["admin"])
async def update_task(request: Request, p: AdminP, task_id: Ident,
                      body: MessageTaskUpdate) -> Response:
    state = _state(request)
    checked = await state.db.run(lambda s, now: tasks.template_after(s, task_id, body))
    await _check_template(*checked)

    def work(s: Session, now: datetime) -> tuple[dict[str, Any], str]:
        result = tasks.update_task(s, now, task_id, body, checked=checked)
        return _task_answer(s, result if result is not None else tasks.get_task(s, task_id))

    return ok(*await state.db.run(work))


@router.delete("/message-tasks/{task_id}", tags=["admin"])
async def delete_task(request: Request, p: AdminP, task_id: Ident) -> Response:
    state = _state(request)

    def work(s: Session, now: datetime) -> dict[str, Any]:
        tasks.delete_task(s, task_id)
        return {"id": task_id, "deleted": True}

    return ok(await state.db.run(work))


# --- events -----------------------------------------------------------------------------------


@router.get("/sync-logs", tags=["admin"], summary="The event log")
async def sync_logs(request: Request, p: AdminP, node_id: OptStr = None,
                    operation: OptStr = None, status: OptStr = None, limit: Limit = 50,
                    offset: Offset = 0) -> Response:
    state = _state(request)

    def work(s: Session, now: datetime) -> dict[str, Any]:
        node = (nodes_repo.find_node_id(s, node_id) or node_id) if node_id else node_id
        items = named_events(s, node_id=node, operation=operation, status=status,
                             limit=limit, offset=offset)
        return {"list": items, "page": {"limit": limit, "offset": offset}}

    return ok(await state.db.run(work))
