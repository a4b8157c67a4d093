"""Node (child) routes of PROTOCOL.md. Mounted under both prefixes by ``app.create_app``.

Handlers stay thin: authenticate (dependency), run one unit of work in a worker thread, wrap
the result in the envelope. The state machine, leases and fencing live in
``cascade_cli.store.allocations``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from cascade_cli import PROTOCOL_VERSION
from cascade_cli.clock import isoformat_z
from cascade_cli.errors import ForbiddenError, ProtocolError
from cascade_cli.protocol import (
    AllocationAnswer,
    HeartbeatAnswer,
    HeartbeatCheck,
    HeartbeatIn,
    LegacyTaskPackage,
    ReportCompletionIn,
    ReportResultAnswer,
    ReportResultIn,
    TaskPackage,
    TaskStatusIn,
    UploadAnswer,
    UploadArticlesIn,
    WireAnswer,
)
from cascade_cli.store import allocations
from cascade_cli.store.events import log_event
from cascade_cli.store.nodes import NodeRow, remember_nonce
from cascade_cli.web.envelope import EnvelopeResponse, no_work
from cascade_cli.web.http_auth import (
    NodeAuth,
    Principal,
    nonce_expiry,
    require_any,
    require_node,
)

# Claims, uploads and completions at DEBUG only: at INFO they would be most of the log and
# a noticeable share of the parent's CPU.
log = logging.getLogger("cascade.node")

router = APIRouter(tags=["node"])
T = TypeVar("T")

NodeP = Annotated[NodeAuth, Depends(require_node)]
AnyP = Annotated[Principal, Depends(require_any)]


def _state(request: Request) -> Any:
    return request.app.state.cascade


class AnswerResponse(EnvelopeResponse):
    """The success envelope around a typed answer (or a list of them), serialised by the
    answer's own (compiled) serializer: the same bytes ``envelope.ok`` writes for the
    answer's dict, without building that dict first."""

    def render(self, content: Any) -> bytes:
        if isinstance(content, list):
            data = b"[" + b",".join(a.wire_json() for a in content) + b"]"
        else:
            data = content.wire_json()
        return b'{"code":0,"message":"ok","data":' + data + b"}"


def answer(data: WireAnswer | list[TaskPackage]) -> AnswerResponse:
    return AnswerResponse(data)


async def node_op(request: Request, p: NodeAuth,
                  fn: Callable[[Session, datetime, NodeRow], T]) -> T:
    """Run ``fn(s, now, node)`` in one unit of work with the caller's credential checked and
    its node loaded in it: one transaction per request."""
    state = _state(request)
    first = p.node_id is None

    def work(s: Session, now: datetime) -> T:
        if first:
            p.node_id = None  # a retried transaction checks the credential (and nonce) again
        return fn(s, now, p.node(s, now))

    try:
        return await state.db.run(work, batch=True, hint=p.parsed.api_key)
    except ProtocolError:
        if first and p.signed and p.node_id is not None:
            # The work was refused and rolled back with the nonce it recorded: remember
            # the nonce on its own so the refused request cannot be replayed either.
            node_id, nonce = p.node_id, p.parsed.nonce  # type: ignore[union-attr]
            await state.db.run(lambda s, now: remember_nonce(
                s, node_id, nonce, nonce_expiry(state.settings, now)))
        raise


@router.get("/heartbeat", summary="Connection check (read-only; node or admin)")
async def heartbeat_get(request: Request, p: AnyP) -> Response:
    now = _state(request).clock.now()
    return answer(HeartbeatCheck(status="alive", node_id=p.node_id, node_name=p.node_name,
                                 role=p.role, server_time=isoformat_z(now),
                                 protocol=PROTOCOL_VERSION))


@router.post("/heartbeat", summary="Mark the node online and renew its leases")
async def heartbeat_post(request: Request, p: NodeP,
                         body: Annotated[HeartbeatIn | None, Body()] = None) -> Response:
    state = _state(request)
    hb = body or HeartbeatIn()
    data = await node_op(request, p, lambda s, now, node: HeartbeatAnswer.model_validate(
        allocations.heartbeat(s, now, node, hb, state.settings)))
    return answer(data)


async def _claim(request: Request, p: NodeAuth, max_count: int, wait: float,
                 node_id: str | None = None) -> list[TaskPackage]:
    state = _state(request)
    settings = state.settings

    def attempt(s: Session, now: datetime, node: NodeRow) -> list[TaskPackage] | None:
        if node_id and node_id not in (node.id, node.name):
            raise ForbiddenError("node_id is not the caller's own node", code="node_mismatch")
        # claim() itself answers "nothing" with the same two reads a has_claimable()
        # pre-check would cost, so calling both only doubled the work on every poll.
        n = max(1, min(max_count, node.max_capacity))
        claimed = allocations.claim(s, now, node, settings, max_count=n)
        legacy = bool(node.legacy)
        model = LegacyTaskPackage if legacy else TaskPackage
        return [model.model_validate(allocations.package(s, a, now, legacy=legacy))
                for a in claimed] or None

    async def try_once() -> list[TaskPackage] | None:
        return await node_op(request, p, attempt)

    packages = await state.waiters.poll(try_once, wait, is_gone=request.is_disconnected)
    if packages:
        state.metrics.claims.inc(len(packages))
        if log.isEnabledFor(logging.DEBUG):  # hot path: nothing is formatted unless asked
            for pkg in packages:
                log.debug("claim: node %s took allocation %s (task %s, %d feeds)",
                          p.node_name, pkg.allocation_id, pkg.task_name, len(pkg.feeds))
    return packages or []


@router.post("/claim-task", summary="Claim work (long poll with wait=N seconds)")
async def claim_task(request: Request, p: NodeP,
                     wait: Annotated[float, Query(ge=0, le=60)] = 0,
                     max: Annotated[int, Query(ge=1, le=256)] = 1) -> Response:  # noqa: A002
    packages = await _claim(request, p, max, wait)
    if not packages:
        return no_work()
    # max=1 (the default and the legacy shape): one package; max>1: a list of packages.
    return answer(packages[0] if max == 1 else packages)


@router.get("/pending-tasks", summary="Legacy claim: claim-task with max=1, wait=0")
async def pending_tasks(request: Request, p: NodeP,
                        node_id: Annotated[str | None, Query(max_length=100)] = None
                        ) -> Response:
    packages = await _claim(request, p, 1, 0, node_id)
    return answer(packages[0]) if packages else no_work()


@router.put("/task-status", summary="executing / failed / released")
async def task_status(request: Request, p: NodeP, body: TaskStatusIn) -> Response:
    state = _state(request)
    result = await node_op(request, p, lambda s, now, node: _alloc_answer(
        allocations.set_status(s, now, node, body, state.settings)))
    if result.status == "pending":
        state.waiters.notify()  # released work is claimable again at once
    return answer(result)


def _alloc_answer(alloc: Any) -> AllocationAnswer:
    return AllocationAnswer(allocation_id=alloc.id, status=alloc.status)


@router.post("/upload-articles", summary="Upload fetched articles (idempotent)")
async def upload_articles(request: Request, p: NodeP, body: UploadArticlesIn) -> Response:
    state = _state(request)
    allocations.check_upload_size(body, state.settings)
    received, new = await node_op(request, p, lambda s, now, node: allocations.upload_articles(
        s, now, node, body, state.settings))
    if log.isEnabledFor(logging.DEBUG):
        log.debug("upload: node %s, allocation %s: %d articles, %d new", p.node_name,
                  body.allocation_id, received, new)
    return answer(UploadAnswer(received=received, new_count=new))


@router.post("/report-completion", summary="Per-feed results; finishes the allocation")
async def report_completion(request: Request, p: NodeP, body: ReportCompletionIn) -> Response:
    state = _state(request)
    result = await node_op(request, p, lambda s, now, node: _alloc_answer(
        allocations.report_completion(s, now, node, body, state.settings)))
    if body.results:
        statuses: dict[str, int] = {}
        for r in body.results:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        state.metrics.record_feed_results(statuses)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("completion: node %s, allocation %s %s: %s", p.node_name,
                      body.allocation_id, result.status,
                      ", ".join(f"{n} {k}" for k, n in sorted(statuses.items())))
    return answer(result)


@router.post("/report-result", summary="Legacy result report (recorded as an event)")
async def report_result(request: Request, p: NodeP, body: ReportResultIn) -> Response:
    def work(s: Session, now: datetime, node: NodeRow) -> ReportResultAnswer:
        ev = log_event(s, now, "report_result", node_id=node.id, direction="inbound",
                       task_id=body.task_id, count=len(body.results),
                       detail={"results": len(body.results)})
        s.flush()
        return ReportResultAnswer(task_id=body.task_id, recorded=True, event_id=ev.id)

    return answer(await node_op(request, p, work))
