"""What a database failure means, in words an operator can act on: the one place where the
drivers' exceptions become ours (as httpx's ``_exceptions``: callers above the store never
see SQLAlchemy's or a driver's classes).

The drivers report a full disk, a read-only file, a missing schema and an unreachable server
each in their own way; ``translate`` turns the ones we recognise into the ``StoreError``
subclass that names the cause (each carries the HTTP status and code it is answered with),
and returns ``None`` for anything else. ``in_unit`` is what a unit of work
(``Store.session``) raises: that, or ``DatabaseBusy`` for a lock wait, deadlock or
serialization failure (``transient``: the transaction may be run again as it is), and None
only for what is a bug (a constraint violation, a malformed statement).
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

from sqlalchemy.engine.url import URL
from sqlalchemy.exc import DBAPIError, OperationalError

from cascade_cli.errors import (
    DatabaseBusy,
    DatabaseFull,
    DatabaseReadOnly,
    SchemaOutOfDate,
    StoreError,
)

_PG_FULL = {"53100"}  # disk_full
_PG_READ_ONLY = {"25006"}  # read_only_sql_transaction (a standby, default_transaction_read_only)
_PG_NO_TABLE = {"42P01"}  # undefined_table
_PG_CANCELED = {"57014"}  # query_canceled: the server-side statement_timeout
_MY_FULL = {1114, 1021}  # table is full, disk full
_MY_READ_ONLY = {1290, 1792}  # --read-only server, read-only transaction
_MY_NO_TABLE = {1146}
_SQLITE_FULL = 13
_SQLITE_READONLY = 8
_SQLITE_CANTOPEN = 14
_TRANSIENT_SQLSTATES = {"40P01", "40001"}  # PostgreSQL deadlock, serialization failure
_TRANSIENT_MYSQL = {1213, 1205}  # deadlock, lock wait timeout
_UNREACHABLE = ("connection refused", "could not connect", "can't connect",
                "name or service not known", "connection timed out", "timeout expired",
                "did not answer within", "timed out", "unknown database", "does not exist",
                "access denied", "server closed the connection", "lost connection")


def translate(exc: DBAPIError, url: URL, masked_url: str) -> StoreError | None:
    orig: Any = exc.orig
    text = _text(orig)
    sqlstate = getattr(orig, "sqlstate", None)
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()) or ())
    errno = args[0] if args and isinstance(args[0], int) else None
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    primary = sqlite_code & 0xFF if isinstance(sqlite_code, int) else None
    lowered = text.lower()

    if url.get_backend_name() == "sqlite":
        if primary == _SQLITE_FULL or "database or disk is full" in lowered:
            return DatabaseFull(f"the database file {_sqlite_file(url)} cannot grow: the disk "
                                f"(or the database's size limit) is full ({text})",
                                hint="free disk space on the parent host, or purge old history "
                                     "('cascade purge')")
        if primary in (_SQLITE_READONLY, _SQLITE_CANTOPEN) or "readonly database" in lowered \
                or "unable to open database" in lowered:
            return DatabaseReadOnly(_sqlite_access(url, text),
                                    hint="make the file and its folder writable by the user "
                                         "running cascade (SQLite also writes NAME-wal and "
                                         "NAME-shm beside the file), or set database.url")
    if sqlstate in _PG_FULL or errno in _MY_FULL:
        return DatabaseFull(f"the database server's storage is full ({masked_url}): {text}",
                            hint="free disk space on the database server")
    if sqlstate in _PG_READ_ONLY or errno in _MY_READ_ONLY:
        return DatabaseReadOnly(f"the database refuses writes ({masked_url}): {text}",
                                hint="point database.url at the primary server, not a "
                                     "read-only standby or replica")
    if sqlstate in _PG_NO_TABLE or errno in _MY_NO_TABLE or "no such table" in lowered:
        return SchemaOutOfDate(f"database {masked_url} has no Cascade schema (or an old one): "
                               f"{text}", hint="run 'cascade init' on the parent first")
    if sqlstate in _PG_CANCELED:
        return StoreError(f"a statement ran longer than database.statement_timeout and was "
                          f"cancelled ({masked_url}): {text}",
                          hint="the database server is overloaded or the statement is slow; "
                               "raise database.statement_timeout if it is legitimate")
    if exc.connection_invalidated or any(s in lowered for s in _UNREACHABLE):
        return StoreError(f"database unreachable ({masked_url}): {text}",
                          hint="check database.url, that the server is running and that it "
                               "answers (database.connect_timeout, database.statement_timeout)")
    return None


def is_transient(exc: DBAPIError) -> bool:
    """A deadlock or serialization failure: the database rolled the whole transaction back,
    and running it again is the remedy."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()) or ())
    return bool(args) and args[0] in _TRANSIENT_MYSQL


def in_unit(exc: DBAPIError, url: URL, masked_url: str) -> StoreError | None:
    """What a unit of work raises for ``exc``: a recognised fault (``translate``), else
    ``DatabaseBusy`` for a transient conflict or any other operational failure (a lock
    that outlived ``busy_timeout``...), else None (a bug: raised as it is)."""
    translated = translate(exc, url, masked_url)
    if translated is not None:
        return translated
    transient = is_transient(exc)
    if transient or isinstance(exc, OperationalError):
        cause = type(exc.orig).__name__
        return DatabaseBusy(f"database busy ({masked_url}): {cause}: {_text(exc.orig)}",
                            cause=cause, transient=transient,
                            hint="another transaction held the rows; retry shortly")
    return None


def _text(orig: Any) -> str:
    return str(orig).strip().splitlines()[0][:300] if str(orig).strip() else type(orig).__name__


def _sqlite_file(url: URL) -> str:
    return str(Path(url.database or "").resolve()) if url.database else "(in memory)"


def _sqlite_access(url: URL, text: str) -> str:
    """The file, its folder, who we are and what they allow: what a read-only file needs."""
    path = Path(url.database or "").resolve()
    folder = path.parent
    user = _user()
    facts = []
    for what, p in (("file", path), ("folder", folder)):
        if not p.exists():
            facts.append(f"{what} {p} does not exist")
            continue
        mode = oct(p.stat().st_mode & 0o777)
        writable = os.access(p, os.W_OK)
        facts.append(f"{what} {p} is mode {mode}, {'' if writable else 'not '}writable by "
                     f"{user}")
    return f"cannot write the SQLite database {path} ({text}): {'; '.join(facts)}"


def _user() -> str:
    # The effective user, not $USER: the one the kernel checks permissions for.
    try:
        return f"{pwd.getpwuid(os.geteuid()).pw_name} (uid {os.geteuid()})"
    except (KeyError, OSError):
        return f"uid {os.geteuid()}"
