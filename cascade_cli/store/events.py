"""The event log (the guide's "sync logs"): one row per notable operation."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from cascade_cli.clock import isoformat_z
from cascade_cli.store.models import Event, Node
from cascade_cli.store.prepared import Prepared


def log_event(session: Session, now: datetime, operation: str, *, node_id: str | None = None,
              direction: str = "internal", status: str = "ok", task_id: str | None = None,
              allocation_id: str | None = None, count: int = 0, error: str | None = None,
              detail: dict[str, Any] | None = None) -> Event:
    event = Event(node_id=node_id, operation=operation, direction=direction, status=status,
                  task_id=task_id, allocation_id=allocation_id, count=count,
                  error=(error[:4000] if error else None), detail=detail, created_at=now)
    session.add(event)
    return event


_EVENTS = cast(Table, Event.__table__)
_INSERT_EVENT = Prepared(insert(_EVENTS), column_keys=[
    "node_id", "operation", "direction", "status", "task_id", "allocation_id", "count",
    "error", "detail", "created_at"])


def insert_event(session: Session, now: datetime, operation: str, *,
                 node_id: str | None = None, direction: str = "internal", status: str = "ok",
                 task_id: str | None = None, allocation_id: str | None = None, count: int = 0,
                 error: str | None = None, detail: dict[str, Any] | None = None) -> None:
    """``log_event`` as one Core INSERT, for the parent's per-request hot paths: no ORM
    object, no unit-of-work flush at commit. Same row, same truncation; returns nothing."""
    _INSERT_EVENT.execute(session.connection(), {
        "node_id": node_id, "operation": operation, "direction": direction, "status": status,
        "task_id": task_id, "allocation_id": allocation_id, "count": count,
        "error": error[:4000] if error else None, "detail": detail, "created_at": now})


def list_events(session: Session, *, node_id: str | None = None, operation: str | None = None,
                status: str | None = None, limit: int = 50, offset: int = 0) -> list[Event]:
    q = select(Event).order_by(Event.id.desc())
    if node_id:
        q = q.where(Event.node_id == node_id)
    if operation:
        q = q.where(Event.operation == operation)
    if status:
        q = q.where(Event.status == status)
    return list(session.scalars(q.limit(limit).offset(offset)))


def named_events(session: Session, *, node_id: str | None = None,
                 operation: str | None = None, status: str | None = None, limit: int = 50,
                 offset: int = 0) -> list[dict[str, Any]]:
    """``list_events`` as dicts, each with its node's name (None for no node, or one deleted
    since): the admin API's ``/sync-logs``."""
    names = dict(session.execute(select(Node.id, Node.name)).all())
    return [{**event_dict(e), "node_name": names.get(e.node_id) if e.node_id else None}
            for e in list_events(session, node_id=node_id, operation=operation, status=status,
                                 limit=limit, offset=offset)]


def event_dict(e: Event) -> dict[str, Any]:
    return {"id": e.id, "node_id": e.node_id, "operation": e.operation, "direction": e.direction,
            "status": e.status, "task_id": e.task_id, "allocation_id": e.allocation_id,
            "count": e.count, "error": e.error, "detail": e.detail,
            "created_at": isoformat_z(e.created_at)}
