"""SQLAlchemy 2 typed models. Field names follow PROTOCOL.md.

Identifiers are strings (UUIDv7 hex, see ``new_id``, unless the protocol gives them, such as
feed ids like ``MP_WXS_123``). Times are ``UTCDateTime``. JSON columns hold lists/objects.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    literal_column,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cascade_cli.store.constants import (  # noqa: F401 - re-exported: the store's names for them
    ALLOCATION_STATES,
    CLAIMED,
    COMPLETED,
    EXECUTING,
    FAILED,
    PENDING,
    TIMEOUT,
)
from cascade_cli.store.types import UTCDateTime

# Deterministic constraint names make migrations portable across databases.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# MySQL's TEXT is 64 KiB; article content and templates may be larger.
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def new_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: the creation time in milliseconds, then 74
    random bits. Ids made together sort together, so a B-tree index keyed by one (the
    allocations' own, and ``articles.allocation_id``, ``feed_results.allocation_id``...)
    takes new keys on its last pages instead of on a random page each: fewer pages
    rewritten per transaction (uuid4 ids cost a random page per index per row)."""
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 of them kept
    value = ((time.time_ns() // 1_000_000) & _MS_MASK) << 80 | 0x7 << 76 \
        | (rand >> 68) << 64 | 0b10 << 62 | (rand & _RAND_B_MASK)
    return f"{value:032x}"


_MS_MASK = (1 << 48) - 1
_RAND_B_MASK = (1 << 62) - 1


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# Allocation states (PROTOCOL.md "Allocation states"): PENDING ... TIMEOUT and
# ALLOCATION_STATES come from store.constants (no SQLAlchemy there, for the CLI).
ACTIVE_STATES = (CLAIMED, EXECUTING)
TERMINAL_STATES = (COMPLETED, FAILED, TIMEOUT)
NON_TERMINAL_STATES = (PENDING, CLAIMED, EXECUTING)
# The active states as SQL text: the predicate of the partial index ``ix_alloc_node_status``.
ACTIVE_SQL = "status IN ({})".format(", ".join(f"'{state}'" for state in ACTIVE_STATES))


def is_active(status: Any) -> Any:
    """``status IN ('claimed', 'executing')`` with the states written into the SQL, not bound
    as parameters: SQLite and PostgreSQL use a partial index only when the query's own
    condition implies the index's, and a bound parameter's value is unknown when the
    statement is planned. Use it wherever a query looks a node's held allocations up."""
    return status.in_([literal_column(f"'{state}'") for state in ACTIVE_STATES])


# Run states.
RUN_RUNNING = "running"
RUN_FINISHED = "finished"

# Delivery (notification outbox) states.
DELIVERY_PENDING = "pending"
DELIVERY_DELIVERED = "delivered"
DELIVERY_DEAD = "dead"


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    api_key: Mapped[str] = mapped_column(String(64), unique=True)
    # One-way hash of the secret and the Ed25519 public key derived from it; never the secret.
    secret_hash: Mapped[str | None] = mapped_column(String(128))
    public_key: Mapped[str | None] = mapped_column(String(64))
    # Rotation overlap: the previous secret stays valid until prev_valid_until.
    prev_secret_hash: Mapped[str | None] = mapped_column(String(128))
    prev_public_key: Mapped[str | None] = mapped_column(String(64))
    prev_valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    credentials_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    max_capacity: Mapped[int] = mapped_column(Integer, default=2)
    callback_url: Mapped[str | None] = mapped_column(String(1000))
    # A we-mp-rss child running the original code (docs/migration.md): its task packages
    # carry the task's webhook URL, template, headers and cookies, its heartbeat renews all
    # its leases, and it may report with the original shapes. Off for every new node.
    legacy: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    hostname: Mapped[str | None] = mapped_column(String(255))
    version: Mapped[str | None] = mapped_column(String(64))
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


# Names differing only by case (n1, N1) are one name: they read as one node in logs and
# commands. The database holds the rule too (migration 0006), so two parent processes cannot
# both create one. MySQL/MariaDB need no index for it: their unique index on ``name`` already
# compares by the column's case-insensitive collation (the migration checks it), and MariaDB
# has no expression indexes.
NAME_CASE_INDEX_DIALECTS = ("sqlite", "postgresql")
Index("uq_nodes_name_lower", func.lower(Node.name), unique=True).ddl_if(
    dialect=NAME_CASE_INDEX_DIALECTS)  # type: ignore[arg-type]  # a tuple works (DDLIf)


class Feed(Base):
    __tablename__ = "feeds"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    mp_name: Mapped[str] = mapped_column(String(255), default="")
    url: Mapped[str] = mapped_column(String(4096), default="")
    kind: Mapped[str] = mapped_column(String(64), default="rss")
    faker_id: Mapped[str | None] = mapped_column(String(255))
    mp_cover: Mapped[str | None] = mapped_column(String(4096))
    mp_intro: Mapped[str | None] = mapped_column(Text)
    status: Mapped[int] = mapped_column(Integer, default=1)
    preferred_node: Mapped[str | None] = mapped_column(
        ForeignKey("nodes.id", ondelete="SET NULL"), index=True)
    # Conditional GET state reported back by children.
    etag: Mapped[str | None] = mapped_column(String(1024))
    last_modified: Mapped[str | None] = mapped_column(String(255))
    last_fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MessageTask(Base):
    __tablename__ = "message_tasks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    mps_id: Mapped[list[str]] = mapped_column(JSON, default=list)  # feed ids
    cron_exp: Mapped[str | None] = mapped_column(String(255))
    web_hook_url: Mapped[str | None] = mapped_column(String(4096))
    message_type: Mapped[int] = mapped_column(Integer, default=0)
    message_template: Mapped[str | None] = mapped_column(LongText)
    headers: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    cookies: Mapped[str | None] = mapped_column(Text)
    # Per-task HMAC secret for the webhook signature header; never sent to children.
    webhook_secret: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[int] = mapped_column(Integer, default=1)
    overlap_policy: Mapped[str] = mapped_column(String(16), default="skip")  # skip | allow
    misfire_policy: Mapped[str] = mapped_column(String(16), default="skip")  # skip | run_once
    misfire_grace: Mapped[float | None] = mapped_column()  # seconds; None -> config default
    jitter: Mapped[float] = mapped_column(default=0.0)  # seconds
    last_error: Mapped[str | None] = mapped_column(Text)  # e.g. invalid cron, seen by doctor
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ScheduleRun(Base):
    """One run of a task. Unique per (task, scheduled time): a tick fires exactly once."""

    __tablename__ = "schedule_runs"
    __table_args__ = (
        UniqueConstraint("task_id", "scheduled_for", name="uq_run_task_tick"),
        # The notifier's look for finished runs not notified yet, every poll (migration 0007).
        Index("ix_run_status_notified", "status", "notified_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    task_id: Mapped[str] = mapped_column(ForeignKey("message_tasks.id", ondelete="CASCADE"),
                                         index=True)
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime())
    trigger: Mapped[str] = mapped_column(String(16), default="manual")  # cron | manual | api
    status: Mapped[str] = mapped_column(String(16), default=RUN_RUNNING, index=True)
    allocation_count: Mapped[int] = mapped_column(Integer, default=0)
    # Allocations not yet terminal. Each transaction's terminal transitions take it down with
    # one atomic UPDATE per run just before the commit (store.runs), so finding the end of a
    # run costs O(1) instead of a count per completion.
    open_allocations: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the notifier queued the run's notifications (None: not yet, or still running).
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Allocation(Base):
    __tablename__ = "allocations"
    __table_args__ = (
        # The claim's order (created_at, id) in full: allocations of one dispatch share
        # their created_at, and without id the database sorted all of them on every claim.
        Index("ix_alloc_status_created", "status", "created_at", "id"),
        Index("ix_alloc_status_lease", "status", "lease_expires_at"),
        # What each node holds (capacity checks). Only active allocations on SQLite and
        # PostgreSQL (migration 0004): a full index took an entry for every allocation a
        # node ever had, and as every status change moved that entry, each commit wrote
        # one page per node in it (16% of the WAL frames of a full cycle on SQLite). Kept
        # small, the index stays on a page or two. MySQL/MariaDB have no partial indexes
        # and build the full one (the dialect options below do not apply to them).
        Index("ix_alloc_node_status", "node_id", "status",
              sqlite_where=text(ACTIVE_SQL), postgresql_where=text(ACTIVE_SQL)),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    schedule_run_id: Mapped[str] = mapped_column(
        ForeignKey("schedule_runs.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(String(64), index=True)
    task_name: Mapped[str] = mapped_column(String(255), default="")
    # The node it is meant for first (feed affinity); NULL = shared pool.
    target_node_id: Mapped[str | None] = mapped_column(String(32), index=True)
    # The node holding (or last holding) it.
    node_id: Mapped[str | None] = mapped_column(String(32))
    feed_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    result_summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_message: Mapped[str | None] = mapped_column(Text)
    article_count: Mapped[int] = mapped_column(Integer, default=0)
    new_article_count: Mapped[int] = mapped_column(Integer, default=0)
    dispatched_at: Mapped[datetime] = mapped_column(UTCDateTime())
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Article(Base):
    """Stored identity = hash of (feed id, guid or url): the same article is one row."""

    __tablename__ = "articles"
    # The key is (feed, identity), not the identity alone, though the identity already
    # depends on the feed: an index keyed by a hash puts each of an upload's 20-odd articles
    # on a page of its own, all of them rewritten by the transaction; led by the feed, the
    # upload's articles share a page or two (measured on SQLite: -30% CPU per upload).
    # On MySQL/MariaDB the primary key is also the table's order: a feed's articles lie
    # together. Migration 0002 made the change.
    __table_args__ = (PrimaryKeyConstraint("feed_id", "id"),
                      Index("ix_article_feed_published", "feed_id", "publish_time"),
                      Index("ix_article_allocation", "allocation_id"))

    id: Mapped[str] = mapped_column(String(64))
    # No index of its own: the primary key and ix_article_feed_published start with it.
    feed_id: Mapped[str] = mapped_column(String(128))
    guid: Mapped[str | None] = mapped_column(String(2048))
    client_id: Mapped[str | None] = mapped_column(String(255))  # the raw id a child sent
    title: Mapped[str] = mapped_column(String(1000), default="")
    url: Mapped[str] = mapped_column(String(4096), default="")
    pic_url: Mapped[str | None] = mapped_column(String(4096))
    description: Mapped[str | None] = mapped_column(LongText)
    content: Mapped[str | None] = mapped_column(LongText)
    author: Mapped[str | None] = mapped_column(String(255))
    publish_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Where it was first seen: drives "new articles of this run" for notifications.
    schedule_run_id: Mapped[str | None] = mapped_column(String(32), index=True)
    allocation_id: Mapped[str | None] = mapped_column(String(32))
    node_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class FeedResult(Base):
    """One per-feed outcome reported with a completion (failure rates, freshness)."""

    __tablename__ = "feed_results"
    __table_args__ = (
        UniqueConstraint("allocation_id", "feed_id", name="uq_feed_result_alloc_feed"),
        Index("ix_feed_result_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    allocation_id: Mapped[str] = mapped_column(String(32))
    schedule_run_id: Mapped[str | None] = mapped_column(String(32), index=True)
    feed_id: Mapped[str] = mapped_column(String(128), index=True)
    # Not indexed: nothing looks results up by node, and every completion would write the
    # index (migration 0003 dropped it).
    node_id: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # success | failed | not_modified
    article_count: Mapped[int] = mapped_column(Integer, default=0)
    new_article_count: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Event(Base):
    """The event log (the original's "sync logs")."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_event_created", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    node_id: Mapped[str | None] = mapped_column(String(32), index=True)
    operation: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(16), default="inbound")  # in/out/internal
    status: Mapped[str] = mapped_column(String(16), default="ok")  # ok | failed | warning
    task_id: Mapped[str | None] = mapped_column(String(64))
    allocation_id: Mapped[str | None] = mapped_column(String(32))
    count: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuthNonce(Base):
    """Nonces of signed requests, shared by every parent process on the database."""

    __tablename__ = "auth_nonces"

    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class AdminToken(Base):
    """Issued admin tokens (by jti), so they can be listed and revoked."""

    __tablename__ = "admin_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Delivery(Base):
    """The notification outbox: one row per (run, feed) with new articles."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_delivery_status_next", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # Idempotency id sent to receivers; unique so a run never queues a feed twice.
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    schedule_run_id: Mapped[str | None] = mapped_column(String(32), index=True)
    task_id: Mapped[str] = mapped_column(String(64), index=True)
    feed_id: Mapped[str | None] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(32), default="generic")
    url: Mapped[str] = mapped_column(String(4096))
    body: Mapped[str] = mapped_column(LongText)
    content_type: Mapped[str] = mapped_column(String(100), default="application/json")
    status: Mapped[str] = mapped_column(String(16), default=DELIVERY_PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=8)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    # A sender claims a row for a short while so two parent processes never send it at once.
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
