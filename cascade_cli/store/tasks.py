"""Message tasks: a named set of feeds, a cron schedule, a webhook and a message template."""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from cascade_cli import cron
from cascade_cli.clock import isoformat_z
from cascade_cli.errors import Conflict, InvalidInput, NotFound
from cascade_cli.protocol import MessageTaskIn, MessageTaskUpdate
from cascade_cli.store.idmatch import match_short_id
from cascade_cli.store.models import Feed, MessageTask, new_id
from cascade_cli.webhook_url import validate_webhook_url


def validate_task_fields(cron_exp: str | None, web_hook_url: str | None) -> None:
    """Reject what would only fail later: bad cron, non-http(s) webhook.

    The template is not checked here: its test render may take up to
    ``templates.RENDER_SECONDS`` and must never run inside a transaction (on SQLite it would
    hold the only write lock). Callers check it first with ``templates.validate_template`` and
    pass the checked ``(template, message_type)`` pair as ``checked``."""
    if cron_exp:
        cron.validate_cron(cron_exp)
    if web_hook_url:
        validate_webhook_url(web_hook_url)


CheckedTemplate = tuple[str | None, int]  # (template, message_type) as validated


def _require_checked(template: str | None, message_type: int,
                     checked: CheckedTemplate | None) -> None:
    if template and (template, message_type) != checked:
        raise Conflict("the task's template or message type changed while its template was "
                       "being checked; try again", code="template_changed")


def template_after(session: Session, ident: str,
                   data: MessageTaskUpdate) -> CheckedTemplate:
    """The (template, message_type) a task will have after ``data`` (to check before the
    writing transaction)."""
    task = get_task(session, ident)
    changes = data.model_dump(exclude_unset=True)
    new_type = data.message_type if data.message_type is not None else task.message_type
    return changes.get("message_template", task.message_template), new_type


def _refuse_duplicate_name(session: Session, name: str, task_id: str | None = None) -> None:
    """A second task of the same name would make every lookup by name ambiguous."""
    q = select(MessageTask.id).where(MessageTask.name == name)
    if task_id is not None:
        q = q.where(MessageTask.id != task_id)
    same = session.scalar(q.limit(1))
    if same is not None:
        raise Conflict(f"a task named {name!r} already exists (id {same})",
                       code="duplicate_name",
                       hint=f"change it with 'cascade tasks update {name}', or choose "
                            "another name")


def create_task(session: Session, now: datetime, data: MessageTaskIn, *,
                checked: CheckedTemplate | None = None) -> MessageTask:
    task_id = data.id or new_id()
    if session.get(MessageTask, task_id) is not None:
        raise Conflict(f"a message task with id '{task_id}' already exists", code="duplicate_id")
    _refuse_duplicate_name(session, data.name)
    validate_task_fields(data.cron_exp, data.web_hook_url)
    _require_checked(data.message_template, data.message_type, checked)
    task = MessageTask(
        id=task_id, name=data.name, mps_id=list(data.mps_id), cron_exp=data.cron_exp,
        web_hook_url=data.web_hook_url, message_type=data.message_type,
        message_template=data.message_template, headers=data.headers, cookies=data.cookies,
        webhook_secret=data.webhook_secret or secrets.token_urlsafe(24), status=data.status,
        overlap_policy=data.overlap_policy, misfire_policy=data.misfire_policy,
        misfire_grace=data.misfire_grace, jitter=data.jitter, created_at=now, updated_at=now)
    session.add(task)
    session.flush()
    return task


def get_task(session: Session, ident: str) -> MessageTask:
    task = session.get(MessageTask, ident)
    if task is None:
        matches = list(session.scalars(select(MessageTask).where(MessageTask.name == ident)))
        if len(matches) > 1:
            raise InvalidInput(f"several tasks are named {ident!r}; use the task id",
                               field="task")
        task = matches[0] if matches else None
    if task is None:  # the last 8+ characters of a generated id, as tables show it
        found = match_short_id(session, MessageTask.id, ident, "task")
        task = session.get(MessageTask, found) if found is not None else None
    if task is None:
        raise NotFound("message task", ident, hint="'cascade tasks list' shows the tasks")
    return task


def update_task(session: Session, now: datetime, ident: str, data: MessageTaskUpdate, *,
                checked: CheckedTemplate | None = None) -> MessageTask:
    task = get_task(session, ident)
    changes = data.model_dump(exclude_unset=True)
    changes.pop("id", None)
    if changes.get("name") and changes["name"] != task.name:
        _refuse_duplicate_name(session, changes["name"], task.id)
    # Validate the task as it will be after the change, not only the changed fields.
    new_type = data.message_type if data.message_type is not None else task.message_type
    validate_task_fields(changes.get("cron_exp", task.cron_exp),
                         changes.get("web_hook_url", task.web_hook_url))
    if "message_template" in changes or data.message_type is not None:
        _require_checked(changes.get("message_template", task.message_template), new_type,
                         checked)
    for key, value in changes.items():
        if value is None and key in ("name", "mps_id", "message_type", "status",
                                     "overlap_policy", "misfire_policy", "jitter"):
            continue
        setattr(task, key, list(value) if key == "mps_id" else value)
    if "cron_exp" in changes:
        task.last_error = None
    task.updated_at = now
    return task


def set_task_status(session: Session, now: datetime, ident: str, status: int) -> MessageTask:
    task = get_task(session, ident)
    task.status = status
    task.updated_at = now
    return task


def delete_task(session: Session, ident: str) -> None:
    session.delete(get_task(session, ident))


def list_tasks(session: Session, *, enabled_only: bool = False) -> list[MessageTask]:
    q = select(MessageTask).order_by(MessageTask.created_at, MessageTask.name)
    if enabled_only:
        q = q.where(MessageTask.status == 1)
    return list(session.scalars(q))


def task_dict(task: MessageTask, *, include_secrets: bool) -> dict[str, Any]:
    """Webhook URL, headers, cookies and signing secret only for admins (or when shared)."""
    data: dict[str, Any] = {
        "id": task.id, "name": task.name, "mps_id": list(task.mps_id or []),
        "cron_exp": task.cron_exp, "message_type": task.message_type, "status": task.status,
        "overlap_policy": task.overlap_policy, "misfire_policy": task.misfire_policy,
        "misfire_grace": task.misfire_grace, "jitter": task.jitter,
        "last_error": task.last_error,
        "created_at": isoformat_z(task.created_at), "updated_at": isoformat_z(task.updated_at),
    }
    if include_secrets:
        data.update({"web_hook_url": task.web_hook_url, "message_template": task.message_template,
                     "headers": task.headers, "cookies": task.cookies})
    return data


def legacy_task_dicts(session: Session, tasks: list[MessageTask]) -> list[dict[str, Any]]:
    """Tasks as we-mp-rss's ``GET /message-tasks`` sent them to its children: ``mps_id`` a
    JSON string of ``[{"id", "mp_name"}]``, ``headers`` a JSON object string, times naive
    ISO. For legacy nodes only: the webhook URL, headers and cookies are in it."""
    ids = sorted({fid for t in tasks for fid in (t.mps_id or [])})
    names = dict(session.execute(select(Feed.id, Feed.mp_name).where(Feed.id.in_(ids)))
                 .all()) if ids else {}
    out = []
    for t in tasks:
        mps = [{"id": fid, "mp_name": names.get(fid, "")} for fid in t.mps_id or []]
        out.append({
            "id": t.id, "name": t.name, "message_type": t.message_type,
            "message_template": t.message_template, "web_hook_url": t.web_hook_url,
            "mps_id": json.dumps(mps, ensure_ascii=False), "cron_exp": t.cron_exp,
            "status": t.status,
            "headers": json.dumps(t.headers, ensure_ascii=False) if t.headers else None,
            "cookies": t.cookies,
            "created_at": _naive(t.created_at), "updated_at": _naive(t.updated_at)})
    return out


def _naive(value: datetime | None) -> str | None:
    return value.replace(tzinfo=None).isoformat() if value is not None else None

def tasks_naming(session: Session, feed_ids: list[str]) -> dict[str, list[str]]:
    """Feed id -> names of the tasks whose feed list still names it (removing or disabling
    the feed makes those tasks skip it: the operator should hear so before, not at 9 am)."""
    wanted = set(feed_ids)
    out: dict[str, list[str]] = {}
    rows = session.execute(select(MessageTask.name, MessageTask.mps_id)
                           .order_by(MessageTask.name))
    for name, mps_id in rows:
        for fid in mps_id or []:
            if fid in wanted:
                out.setdefault(fid, []).append(name)
    return out


# --- the scheduler's reads and marks -------------------------------------------------------


class CronTaskRow(NamedTuple):
    """What the scheduler reads of an enabled task with a cron expression, every pass."""

    id: str
    name: str
    cron_exp: str | None
    overlap_policy: str | None
    misfire_policy: str | None
    misfire_grace: float | None
    jitter: float | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime | None


def enabled_cron_tasks(session: Session) -> list[CronTaskRow]:
    """Only the columns the scheduler needs (not the templates): it runs every tick."""
    return [CronTaskRow._make(row) for row in session.execute(select(
        MessageTask.id, MessageTask.name, MessageTask.cron_exp,
        MessageTask.overlap_policy, MessageTask.misfire_policy,
        MessageTask.misfire_grace, MessageTask.jitter, MessageTask.last_error,
        MessageTask.created_at, MessageTask.updated_at).where(
        MessageTask.status == 1, MessageTask.cron_exp.is_not(None),
        MessageTask.cron_exp != "")).all()]


def tasks_with_cron(session: Session) -> list[MessageTask]:
    """Every task with a cron expression, enabled or not, by name."""
    return list(session.scalars(select(MessageTask).where(
        MessageTask.cron_exp.is_not(None), MessageTask.cron_exp != "")
        .order_by(MessageTask.name)))


def find_task(session: Session, ident: str) -> MessageTask | None:
    """The task with this id, else the first one with this name."""
    task = session.get(MessageTask, ident)
    if task is None:
        task = session.scalar(select(MessageTask).where(MessageTask.name == ident).limit(1))
    return task


def set_last_error(session: Session, task_id: str, text: str) -> bool:
    """Record ``text`` as the task's last error; True only if it changed (so that of several
    processes one reports it, once)."""
    result = session.execute(update(MessageTask).where(
        MessageTask.id == task_id,
        or_(MessageTask.last_error.is_(None), MessageTask.last_error != text))
        .values(last_error=text))
    return int(getattr(result, "rowcount", 0) or 0) > 0


def clear_last_error(session: Session, task_id: str, prefix: str) -> None:
    """Forget the task's last error if it starts with ``prefix``."""
    session.execute(update(MessageTask).where(
        MessageTask.id == task_id, MessageTask.last_error.like(prefix + "%"))
        .values(last_error=None))
