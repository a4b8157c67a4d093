"""Nodes and their credentials. Secrets never enter or leave this module except once, at
creation or rotation, inside a ``NodeCredentials`` returned to the caller for display."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cascade_cli import auth
from cascade_cli.auth import NodeCredentials
from cascade_cli.clock import isoformat_z
from cascade_cli.errors import Conflict, InvalidInput, NotFound
from cascade_cli.protocol import NodeUpdate
from cascade_cli.store.idmatch import match_short_id
from cascade_cli.store.models import (
    ACTIVE_STATES,
    PENDING,
    Allocation,
    AuthNonce,
    Node,
    is_active,
)
from cascade_cli.store.prepared import PaddedIn, Prepared

NODE_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"


def name_taken(session: Session, name: str) -> str | None:
    """The stored node name that ``name`` would clash with, if any. Names differing only by
    case (n1, N1) are one name: they read as one node in logs and commands. The database
    holds the same rule (index ``uq_nodes_name_lower``, migration 0006; MySQL/MariaDB by
    their case-insensitive collation), so a race past this check fails there."""
    return session.scalar(select(Node.name).where(func.lower(Node.name) == name.lower())
                          .limit(1))


def create_node(session: Session, now: datetime, name: str, *, description: str = "",
                max_capacity: int = 2) -> tuple[Node, NodeCredentials]:
    if not re.fullmatch(NODE_NAME_RE, name or ""):
        raise InvalidInput(f"invalid node name {name!r}: use letters, digits, '.', '_' or '-' "
                           "(up to 100, starting with a letter or digit)", field="name")
    if not 1 <= max_capacity <= 256:
        raise InvalidInput(f"capacity must be between 1 and 256, got {max_capacity}",
                           field="max_capacity")
    existing = name_taken(session, name)
    if existing is not None:
        same = "" if existing == name else f" ('{existing}': names differing only by case " \
                                           "are one name)"
        raise Conflict(f"a node named '{name}' already exists{same}", code="duplicate_name",
                       hint=f"choose another name, or rotate its credentials with "
                            f"'cascade nodes rotate {existing}'")
    creds = auth.generate_credentials()
    stored = auth.stored_secret_for(creds.api_secret)
    node = Node(name=name, description=description, api_key=creds.api_key,
                secret_hash=stored.secret_hash, public_key=stored.public_key,
                max_capacity=max_capacity, enabled=True, credentials_rotated_at=now,
                created_at=now, updated_at=now)
    session.add(node)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a node named '{name}' already exists", code="duplicate_name") from exc
    return node, creds


def get_node(session: Session, ident: str) -> Node:
    """By id, name, or the last 8+ characters of the id (what ``nodes list`` shows)."""
    node = session.get(Node, ident) or session.scalar(select(Node).where(Node.name == ident))
    if node is None:
        found = match_short_id(session, Node.id, ident, "node")
        node = session.get(Node, found) if found is not None else None
    if node is None:
        raise NotFound("node", ident, hint="'cascade list-credentials' lists the nodes")
    return node


def find_node_id(session: Session, ident: str) -> str | None:
    """The id of the node whose id or name is exactly ``ident``; None when there is none.
    The admin API's ``node_id`` filters and ``store.history.resolve_node_id`` (the CLI's
    ``--node``) both start here."""
    return session.scalar(select(Node.id).where(or_(Node.id == ident, Node.name == ident))
                          .limit(1))


def node_names(session: Session) -> dict[str, str]:
    """Node id -> name, for every node."""
    return {str(i): str(n) for i, n in session.execute(select(Node.id, Node.name))}


def find_by_key(session: Session, api_key: str) -> Node | None:
    if not auth.API_KEY_RE.match(api_key or ""):
        return None
    return session.scalar(select(Node).where(Node.api_key == api_key))


# A node as a Core ``Row`` (the model's column names as attributes): how the parent's request
# path sees the caller's node. Every node request looks it up, so the lookup skips the ORM
# (object loading and identity map); nothing on that path modifies the node object itself.
NodeRow = Any  # a Core ``Row`` or a ``Prepared`` named tuple: attribute access only
_NODES = cast(Table, Node.__table__)
_ROW_BY_KEY = Prepared(select(*_NODES.c).where(_NODES.c.api_key == bindparam("b_key")))
_ROW_BY_ID = Prepared(select(*_NODES.c).where(_NODES.c.id == bindparam("b_id")))


def find_row_by_key(session: Session, api_key: str) -> NodeRow | None:
    """``find_by_key`` as a Core row."""
    if not auth.API_KEY_RE.match(api_key or ""):
        return None
    known = session.info.get(_BY_KEY)
    if known is not None and api_key in known:
        return known[api_key]
    row = _ROW_BY_KEY.execute(session.connection(), {"b_key": api_key}).first()
    # Exact: MySQL/MariaDB compare strings without regard to case.
    return row if row is not None and row.api_key == api_key else None


def get_row(session: Session, node_id: str) -> NodeRow | None:
    known = session.info.get(_BY_ID)
    if known is not None and node_id in known:
        return known[node_id]
    return _ROW_BY_ID.execute(session.connection(), {"b_id": node_id}).first()


# Node rows read ahead for a group-committed batch of node requests (parent.db.BatchingDb):
# one query for the whole batch instead of one per request. Node requests never change the
# columns authentication and claims read (_CHECKED), so within the batch every request sees
# what it would have read itself. An admin change committed by another connection while the
# batch runs is the one thing that could differ (PostgreSQL and MySQL read committed data
# afresh at every statement; on SQLite the batch holds the write lock, so none can commit):
# the verifier that ``read_ahead`` returns reads the rows again once the batch's work is
# done, and a difference sends the batch's requests to run again one by one.
_BY_KEY = "cascade.nodes_by_key"
_BY_ID = "cascade.nodes_by_id"
_CHECKED = ("id", "api_key", "name", "secret_hash", "public_key", "prev_secret_hash",
            "prev_public_key", "prev_valid_until", "enabled", "revoked_at", "max_capacity",
            "legacy")
# NULL-padded IN lists: two fixed statements for any batch
_ROWS_BY_KEYS = PaddedIn(lambda keys: select(*_NODES.c).where(_NODES.c.api_key.in_(keys)),
                         _NODES.c.api_key.type, sizes=(8, 64))


class StaleReadAhead(Exception):
    """A node read ahead for a batch changed while the batch ran (see ``read_ahead``)."""


def _read(session: Session, keys: list[str]) -> dict[str, NodeRow | None]:
    by_key: dict[str, NodeRow | None] = dict.fromkeys(keys)
    for row in _ROWS_BY_KEYS.rows(session.connection(), keys):
        if row.api_key in by_key:  # exact (MySQL compares without regard to case)
            by_key[row.api_key] = row
    return by_key


def _checked(row: NodeRow | None) -> tuple[Any, ...] | None:
    return None if row is None else tuple(getattr(row, name) for name in _CHECKED)


def read_ahead(session: Session, api_keys: list[str]) -> Callable[[Session], None] | None:
    """Look up the nodes of these API keys in one query; ``find_row_by_key`` and
    ``get_row`` in this session answer from it (an unknown key: no node, as a lookup of
    it would find). Returns the verifier to call once the batch's work is done (it raises
    ``StaleReadAhead``), or None where no other connection can change a node meanwhile."""
    keys = sorted({k for k in api_keys if auth.API_KEY_RE.match(k or "")})
    by_key = _read(session, keys)
    session.info[_BY_KEY] = by_key
    session.info[_BY_ID] = {row.id: row for row in by_key.values() if row is not None}
    if session.get_bind().dialect.name == "sqlite":
        return None
    seen = {k: _checked(row) for k, row in by_key.items()}

    def verify(s: Session) -> None:
        now = {k: _checked(row) for k, row in _read(s, keys).items()}
        if now != seen:
            raise StaleReadAhead("a node changed while its requests ran")

    return verify


def list_nodes(session: Session) -> list[Node]:
    return list(session.scalars(select(Node).order_by(Node.created_at, Node.name)))


def node_status(node: Node, now: datetime, offline_after: float) -> str:
    """online / offline / never seen / disabled / revoked, derived from heartbeat age."""
    if node.revoked_at is not None and node.secret_hash is None:
        return "revoked"
    if not node.enabled:
        return "disabled"
    if node.last_heartbeat_at is None:
        return "never seen"
    if (now - node.last_heartbeat_at).total_seconds() <= offline_after:
        return "online"
    return "offline"


def running_counts(session: Session) -> dict[str, int]:
    """Allocations each node holds right now (claimed or executing); the CLI's node listing
    and the admin API's both use it."""
    rows = session.execute(select(Allocation.node_id, func.count())
                           .where(Allocation.status.in_(ACTIVE_STATES),
                                  Allocation.node_id.is_not(None))
                           .group_by(Allocation.node_id))
    return {str(node_id): int(count) for node_id, count in rows}


def node_view(session: Session, node: Node, now: datetime,
              offline_after: float) -> dict[str, Any]:
    """``node_dict`` with the allocations the node holds now: what ``cascade nodes show``
    and ``GET /nodes/{id}`` print."""
    return node_dict(node, now, offline_after, running_counts(session).get(node.id, 0))


def node_views(session: Session, now: datetime, offline_after: float) -> list[dict[str, Any]]:
    """Every node as ``node_view`` (one query for the running counts): ``cascade nodes
    list`` and ``GET /nodes``."""
    running = running_counts(session)
    return [node_dict(n, now, offline_after, running.get(n.id, 0)) for n in list_nodes(session)]


def is_online(node: Node, now: datetime, offline_after: float) -> bool:
    return node_status(node, now, offline_after) == "online"


def set_enabled(session: Session, now: datetime, ident: str, enabled: bool) -> Node:
    node = get_node(session, ident)
    node.enabled = enabled
    node.updated_at = now
    return node


def set_legacy(session: Session, now: datetime, ident: str, legacy: bool) -> Node:
    """Legacy mode (docs/migration.md): a per-node downgrade for we-mp-rss children running
    the original code; their packages carry the task's webhook URL, headers and cookies."""
    node = get_node(session, ident)
    node.legacy = legacy
    node.updated_at = now
    return node


def uses_plain_legacy_secret(node: Node | NodeRow) -> bool:
    """Still authenticated by the secret hash imported from we-mp-rss (plain AK-SK only:
    no public key, so no signed requests until the secret is rotated)."""
    return auth.is_legacy_hash(node.secret_hash)


def legacy_nodes(session: Session) -> list[Node]:
    """Nodes still in legacy mode or on an imported we-mp-rss secret (doctor lists them)."""
    return [n for n in list_nodes(session)
            if n.legacy or uses_plain_legacy_secret(n) or auth.is_legacy_hash(n.prev_secret_hash)]


def import_legacy_node(session: Session, now: datetime, *, name: str, api_key: str,
                       sha256_hex: str, description: str = "", enabled: bool = True,
                       callback_url: str | None = None) -> tuple[Node, bool]:
    """A we-mp-rss child with its existing key and secret hash (so the deployed child keeps
    working), in legacy mode. Idempotent by key: (node, created)."""
    if not auth.API_KEY_RE.match(api_key or ""):
        raise InvalidInput(f"node '{name}': api_key {api_key!r} is not a key Cascade can "
                           "accept (8-64 letters, digits, '-' or '_')", field="api_key")
    stored = auth.legacy_hash(sha256_hex)
    existing = session.scalar(select(Node).where(Node.api_key == api_key))
    if existing is not None and existing.api_key == api_key:
        return existing, False
    if not re.fullmatch(NODE_NAME_RE, name or ""):
        raise InvalidInput(f"invalid node name {name!r}", field="name")
    taken = name_taken(session, name)
    if taken is not None:
        same = "" if taken == name else f" ('{taken}': names differing only by case are one " \
                                        "name)"
        raise Conflict(f"a node named '{name}' already exists with another key{same}",
                       code="duplicate_name")
    node = Node(name=name, description=description, api_key=api_key, secret_hash=stored,
                public_key=None, max_capacity=2, enabled=enabled, legacy=True,
                callback_url=callback_url or None, credentials_rotated_at=None,
                created_at=now, updated_at=now)
    # A savepoint: a node created meanwhile by another process fails only this one, and the
    # importer goes on with the next.
    try:
        with session.begin_nested():
            session.add(node)
            session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a node named '{name}' (or with key {api_key!r}) already exists",
                       code="duplicate_name") from exc
    return node, True


def update_node(session: Session, now: datetime, ident: str, data: NodeUpdate) -> Node:
    """Change what an operator may change (description, capacity, enabled); the CLI's
    ``nodes set`` and the admin ``PUT /nodes/{id}`` both come here."""
    node = get_node(session, ident)
    if data.description is not None:
        node.description = data.description
    if data.max_capacity is not None:
        node.max_capacity = data.max_capacity
    if data.enabled is not None:
        node.enabled = data.enabled
    node.updated_at = now
    session.flush()
    return node


def rotate_credentials(session: Session, now: datetime, ident: str,
                       overlap_seconds: float) -> tuple[Node, NodeCredentials]:
    """New secret (same key); the old secret keeps working for ``overlap_seconds``."""
    node = get_node(session, ident)
    new = auth.generate_api_secret()
    stored = auth.stored_secret_for(new)
    if node.secret_hash and overlap_seconds > 0:
        node.prev_secret_hash = node.secret_hash
        node.prev_public_key = node.public_key
        node.prev_valid_until = now + timedelta(seconds=overlap_seconds)
    else:
        node.prev_secret_hash = node.prev_public_key = None
        node.prev_valid_until = None
    node.secret_hash = stored.secret_hash
    node.public_key = stored.public_key
    node.revoked_at = None
    node.credentials_rotated_at = now
    node.updated_at = now
    return node, NodeCredentials(node.api_key, new)


def revoke_credentials(session: Session, now: datetime, ident: str) -> Node:
    """At once: neither the current nor an overlapping previous secret works any more."""
    node = get_node(session, ident)
    node.secret_hash = node.public_key = None
    node.prev_secret_hash = node.prev_public_key = None
    node.prev_valid_until = None
    node.revoked_at = now
    node.updated_at = now
    return node


def delete_node(session: Session, ident: str) -> Node:
    node = get_node(session, ident)
    held = session.scalar(select(Allocation.id).where(
        Allocation.node_id == node.id, is_active(Allocation.status)).limit(1))
    if held is not None:
        raise Conflict(f"node '{node.name}' still holds allocations",
                       hint=f"disable it first ('cascade nodes disable {node.name}') and wait "
                            "for its leases to expire")
    # Allocations targeted at it go back to the shared pool.
    session.execute(update(Allocation).where(Allocation.target_node_id == node.id,
                                             Allocation.status == PENDING)
                    .values(target_node_id=None))
    session.execute(delete(AuthNonce).where(AuthNonce.node_id == node.id))
    session.delete(node)
    return node


def secret_matches(node: Node | NodeRow, api_secret: str, now: datetime) -> bool:
    """Constant-time check against the current and, within overlap, the previous secret."""
    current = auth.verify_secret(api_secret, node.secret_hash)
    previous = False
    if node.prev_secret_hash and node.prev_valid_until and now < node.prev_valid_until:
        previous = auth.verify_secret(api_secret, node.prev_secret_hash)
    return current or previous


def public_keys(node: Node | NodeRow, now: datetime) -> list[str]:
    keys = [node.public_key] if node.public_key else []
    if node.prev_public_key and node.prev_valid_until and now < node.prev_valid_until:
        keys.append(node.prev_public_key)
    return keys


def remember_nonce(session: Session, node_id: str, nonce: str, expires_at: datetime) -> bool:
    """False when the nonce was already used (shared by all parent processes on the DB)."""
    try:
        with session.begin_nested():
            session.add(AuthNonce(nonce=f"{node_id}:{nonce}", node_id=node_id,
                                  expires_at=expires_at))
    except IntegrityError:
        return False
    return True


def purge_nonces(session: Session, now: datetime) -> int:
    result = session.execute(delete(AuthNonce).where(AuthNonce.expires_at < now))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class NodeView:
    """A node as shown to people and API clients: never a secret or a hash."""

    data: dict[str, Any]


def node_dict(node: Node, now: datetime, offline_after: float,
              running: int | None = None) -> dict[str, Any]:
    return {
        "id": node.id,
        "name": node.name,
        "description": node.description,
        "api_key": node.api_key,
        "status": node_status(node, now, offline_after),
        "enabled": node.enabled,
        "legacy": bool(node.legacy),
        "plain_legacy_secret": uses_plain_legacy_secret(node),
        "max_capacity": node.max_capacity,
        "running": running,
        "last_heartbeat_at": isoformat_z(node.last_heartbeat_at),
        "hostname": node.hostname,
        "version": node.version,
        "credentials_rotated_at": isoformat_z(node.credentials_rotated_at),
        "previous_secret_valid_until": isoformat_z(node.prev_valid_until),
        "revoked_at": isoformat_z(node.revoked_at),
        "created_at": isoformat_z(node.created_at),
    }


def names_by_id(session: Session, ids: list[str]) -> dict[str, str]:
    """Node id -> name for those of ``ids`` that exist."""
    if not ids:
        return {}
    return {str(i): str(n) for i, n in session.execute(
        select(Node.id, Node.name).where(Node.id.in_(ids)))}
