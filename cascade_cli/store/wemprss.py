"""Import a we-mp-rss deployment's nodes, feeds and message tasks (``cascade import we-mp-rss``).

The source is read with its own table definitions (``we_cascade_nodes``, ``we_feeds``,
``we_message_tasks``, as we-mp-rss declares them), on SQLite, MySQL/MariaDB or PostgreSQL,
read-only. Everything is keyed by the original's ids and keys, so a second import changes
nothing it already brought over (idempotent); a dry run does the same work and rolls it back.

Imported nodes keep their key and the original's unsalted SHA-256 of the secret (stored as
``sha256$<hex>``) so that deployed children keep working with plain AK-SK; they are marked
legacy. ``cascade nodes rotate NAME`` replaces that secret with a Cascade one.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    select,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from cascade_cli.errors import CascadeError, Conflict, InvalidInput, StoreError
from cascade_cli.protocol import FEED_ID_PATTERN, MessageTaskIn, normalise_mps_id, parse_model
from cascade_cli.store import nodes, tasks
from cascade_cli.store.constants import DEFAULT_FEED_URL
from cascade_cli.store.engine import mask_url, normalise_db_url
from cascade_cli.store.events import log_event
from cascade_cli.store.models import Feed, MessageTask, Node

# The original's tables, only the columns read here.
_META = MetaData()
WE_NODES = Table(
    "we_cascade_nodes", _META,
    Column("id", String(255), primary_key=True), Column("node_type", Integer),
    Column("name", String(255)), Column("description", Text),
    Column("callback_url", String(500)), Column("api_key", String(100)),
    Column("api_secret_hash", String(64)), Column("is_active", Boolean))
WE_FEEDS = Table(
    "we_feeds", _META,
    Column("id", String(255), primary_key=True), Column("mp_name", String(255)),
    Column("mp_cover", String(255)), Column("mp_intro", String(255)),
    Column("status", Integer), Column("faker_id", String(255)),
    Column("created_at", DateTime))
WE_TASKS = Table(
    "we_message_tasks", _META,
    Column("id", String(255), primary_key=True), Column("message_type", Integer),
    Column("name", String(100)), Column("message_template", Text),
    Column("web_hook_url", String(500)), Column("headers", Text), Column("cookies", Text),
    Column("mps_id", Text), Column("cron_exp", String(100)), Column("status", Integer))


@dataclass
class Source:
    nodes: list[dict[str, Any]]
    feeds: list[dict[str, Any]]
    tasks: list[dict[str, Any]]


@dataclass
class ImportSummary:
    dry_run: bool
    feed_url_pattern: str
    nodes_created: list[str] = field(default_factory=list)
    nodes_existing: list[str] = field(default_factory=list)
    feeds_created: int = 0
    feeds_updated: int = 0
    feeds_unchanged: int = 0
    tasks_created: list[str] = field(default_factory=list)
    tasks_existing: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "feed_url_pattern": self.feed_url_pattern,
                "nodes": {"created": self.nodes_created, "existing": self.nodes_existing},
                "feeds": {"created": self.feeds_created, "updated": self.feeds_updated,
                          "unchanged": self.feeds_unchanged},
                "tasks": {"created": self.tasks_created, "existing": self.tasks_existing},
                "skipped": self.skipped}


def read_source(url: str) -> Source:
    """The three tables of a we-mp-rss database, read-only. A missing table is an error
    naming it (the URL then points at something else)."""
    engine = create_engine(normalise_db_url(url))
    try:
        with engine.connect() as conn:
            return Source(
                nodes=[dict(r._mapping) for r in conn.execute(select(WE_NODES))],
                feeds=[dict(r._mapping) for r in conn.execute(select(WE_FEEDS))],
                tasks=[dict(r._mapping) for r in conn.execute(select(WE_TASKS))])
    except SQLAlchemyError as exc:
        text = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise StoreError(f"cannot read the we-mp-rss database {mask_url(url)}: {text}",
                         hint="--database must be the URL of we-mp-rss's own database "
                              "(its config.yaml 'db' value), with the tables we_cascade_nodes, "
                              "we_feeds and we_message_tasks") from exc
    finally:
        engine.dispose()


def check_pattern(pattern: str) -> str:
    if "{id}" not in pattern or not re.match(r"^https?://\S+$", pattern):
        raise InvalidInput(f"--feed-url-pattern must be an http(s) URL containing {{id}}, got "
                           f"{pattern!r}", field="feed_url_pattern",
                           hint=f"e.g. {DEFAULT_FEED_URL} (we-mp-rss's RSS of one account)")
    return pattern


def _slug(name: str, fallback: str) -> str:
    """A Cascade node name (ASCII letters, digits, '.', '_', '-') from the original's name,
    which is often Chinese; the original name is kept in the description."""
    text = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-._")[:60]
    return text if text and text[0].isalnum() else fallback


def _node_name(session: Session, row: dict[str, Any]) -> str:
    base = _slug(str(row.get("name") or ""), f"wemp-{str(row['id'])[:8]}")
    name = base
    if nodes.name_taken(session, name) is not None:  # n1 and N1 are one name
        name = f"{base}-{re.sub(r'[^A-Za-z0-9]', '', str(row['id']))[:8]}"
    return name


def _import_nodes(session: Session, now: datetime, rows: list[dict[str, Any]],
                  out: ImportSummary) -> None:
    for row in rows:
        label = str(row.get("name") or row["id"])
        if row.get("node_type") != 1:
            continue  # the original's parent record: this parent replaces it
        key, digest = row.get("api_key"), row.get("api_secret_hash")
        if not key or not digest:
            out.skipped.append({"kind": "node", "id": str(row["id"]), "name": label,
                                "reason": "no credentials were ever generated for it"})
            continue
        existing = session.scalar(select(Node).where(Node.api_key == key))
        if existing is not None and existing.api_key == key:
            out.nodes_existing.append(existing.name)
            continue
        description = " ".join(p for p in (label, str(row.get("description") or ""))
                               if p).strip()[:480]
        try:
            node, _created = nodes.import_legacy_node(
                session, now, name=_node_name(session, row), api_key=str(key),
                sha256_hex=str(digest), description=f"we-mp-rss: {description}",
                enabled=row.get("is_active") is not False,
                callback_url=row.get("callback_url"))
        except (InvalidInput, Conflict, ValueError) as exc:
            out.skipped.append({"kind": "node", "id": str(row["id"]), "name": label,
                                "reason": str(exc) or "api_secret_hash is not a SHA-256"})
            continue
        out.nodes_created.append(node.name)


def _import_feeds(session: Session, now: datetime, rows: list[dict[str, Any]],
                  pattern: str, out: ImportSummary) -> None:
    for row in rows:
        fid = str(row["id"])
        if not re.fullmatch(FEED_ID_PATTERN, fid):
            out.skipped.append({"kind": "feed", "id": fid, "name": str(row.get("mp_name")),
                                "reason": "the id has characters Cascade does not accept"})
            continue
        values = {"mp_name": str(row.get("mp_name") or fid)[:255],
                  "faker_id": row.get("faker_id"), "mp_cover": row.get("mp_cover"),
                  "mp_intro": row.get("mp_intro")}
        feed = session.get(Feed, fid)
        if feed is None:
            session.add(Feed(id=fid, url=pattern.replace("{id}", fid), kind="rss",
                             status=0 if row.get("status") == 0 else 1,
                             created_at=now, updated_at=now, **values))
            out.feeds_created += 1
        elif any(getattr(feed, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(feed, k, v)
            feed.updated_at = now
            out.feeds_updated += 1
        else:
            out.feeds_unchanged += 1
    session.flush()


def _import_tasks(session: Session, now: datetime, rows: list[dict[str, Any]],
                  template_problems: dict[str, str | None], out: ImportSummary) -> None:
    for row in rows:
        tid, name = str(row["id"]), str(row.get("name") or row["id"])
        if session.get(MessageTask, tid) is not None:
            out.tasks_existing.append(name)
            continue
        try:
            feed_ids = normalise_mps_id(row.get("mps_id"))
        except ValueError:
            feed_ids = []
        known = [f for f in feed_ids if session.get(Feed, f) is not None]
        data = {"id": tid, "name": name, "mps_id": known, "cron_exp": row.get("cron_exp"),
                "web_hook_url": row.get("web_hook_url"),
                "message_type": 1 if row.get("message_type") == 1 else 0,
                "message_template": row.get("message_template") or None,
                "headers": row.get("headers"), "cookies": row.get("cookies"),
                "status": 1 if row.get("status") == 1 else 0}
        if session.scalar(select(MessageTask.id).where(MessageTask.name == name)) is not None:
            data["name"] = f"{name} ({tid[:8]})"
        problem = template_problems.get(
            tid, "its template was not test-rendered before the import")
        if problem is not None and data["message_template"]:
            # A template Cascade cannot render: keep the task, with the default template.
            data["message_template"] = None
            out.skipped.append({"kind": "task_template", "id": tid, "name": name,
                                "reason": f"{problem}; imported with Cascade's default "
                                          "template (set one with 'cascade tasks update')"})
        try:
            _create_task(session, now, data)
        except CascadeError as exc:
            out.skipped.append({"kind": "task", "id": tid, "name": name,
                                "reason": exc.message})
            continue
        out.tasks_created.append(str(data["name"]))
        if len(known) < len(feed_ids):
            out.skipped.append({"kind": "task_feeds", "id": tid, "name": name,
                                "reason": f"{len(feed_ids) - len(known)} of its feeds are not "
                                          "in we_feeds; they were left out"})


def _create_task(session: Session, now: datetime, data: dict[str, Any]) -> None:
    task = parse_model(MessageTaskIn, data, where=f"task {data['name']!r}")
    with session.begin_nested():
        # The caller test-rendered the template before this transaction (template_problems).
        tasks.create_task(session, now, task,
                          checked=(task.message_template, task.message_type))


def task_templates(source: Source) -> list[tuple[str, str | None, int]]:
    """(task id, template, message type) of the source's tasks: the caller test-renders them
    before the importing transaction and passes what it found to ``apply``."""
    return [(str(row["id"]), row.get("message_template") or None,
             1 if row.get("message_type") == 1 else 0) for row in source.tasks]


def apply(session: Session, now: datetime, source: Source, *, feed_url_pattern: str,
          template_problems: dict[str, str | None] | None = None,
          dry_run: bool = False) -> ImportSummary:
    """Import into the caller's unit of work (rolled back by the caller for a dry run).

    ``template_problems`` maps a task id to why its template cannot be rendered (None: fine);
    templates are checked outside the transaction, so a task missing from it is imported with
    its template only if that is empty."""
    out = ImportSummary(dry_run=dry_run, feed_url_pattern=check_pattern(feed_url_pattern))
    _import_nodes(session, now, source.nodes, out)
    _import_feeds(session, now, source.feeds, feed_url_pattern, out)
    _import_tasks(session, now, source.tasks, template_problems or {}, out)
    if not dry_run:
        # In the event log (cascade events, /sync-logs) so the switch is on the record.
        created = (len(out.nodes_created) + out.feeds_created + out.feeds_updated
                   + len(out.tasks_created))
        log_event(session, now, "import_we_mp_rss", count=created,
                  status="ok" if not out.skipped else "warning", detail=out.to_dict())
    session.flush()
    return out
