"""Deadlines on every database round trip, so that a server that accepts TCP and never
answers (a hung host, a black-holed network path, a stopped VM) costs a request seconds,
not minutes or for ever.

Three limits, from ``database.*`` (see docs/configuration.md):

* ``connect_timeout``: opening a connection, handshake included; also how long the ping of
  a connection that sat idle, and ``/readyz``'s ping, may take.
* ``statement_timeout``: any one round trip (a statement, a fetch, a commit). PostgreSQL also
  gets it as its server-side ``statement_timeout`` (``set_server_statement_timeout``), so
  that a merely slow statement is cancelled by the server (and the connection kept) a little
  before the client gives up.
* ``pool_timeout``: waiting for a free pooled connection.

PostgreSQL (psycopg 3): every blocking operation of a connection goes through
``Connection.wait``; ``DeadlineConnection`` gives it a deadline and closes the connection
when it passes (its state is unknown after a half-done round trip), which SQLAlchemy then
sees as a disconnect and invalidates. MySQL/MariaDB (PyMySQL): its own ``connect_timeout``,
``read_timeout`` and ``write_timeout`` do the same. SQLite is a local file: no network to
hang on, and its lock waits are bounded by ``busy_timeout`` already.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Added to the server-side statement_timeout before the client gives up: the server's own
# cancel (which keeps the connection) should win when the server is alive.
CLIENT_GRACE = 1.0


@dataclass(frozen=True)
class DbTimeouts:
    connect: float = 5.0
    statement: float = 15.0
    pool: float = 10.0

    @property
    def client_statement(self) -> float:
        return self.statement + CLIENT_GRACE


def postgres_connect_args(t: DbTimeouts) -> dict[str, Any]:
    # libpq reads connect_timeout in whole seconds (at least 2 s are used by libpq anyway).
    return {"connect_timeout": max(1, math.ceil(t.connect))}


def set_server_statement_timeout(dbapi_conn: Any, t: DbTimeouts) -> None:
    """The server-side ``statement_timeout`` of a new PostgreSQL connection. A ``SET`` rather
    than the ``options`` startup parameter, which PgBouncer refuses by default; committed, or
    the pool's reset-on-return rollback would undo it."""
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"SET statement_timeout = {int(t.statement * 1000)}")
    finally:
        cur.close()
    dbapi_conn.commit()


def mysql_connect_args(t: DbTimeouts) -> dict[str, Any]:
    # PyMySQL's socket timeouts: a read or write that takes longer ends the connection.
    client = max(1, math.ceil(t.client_statement))
    return {"connect_timeout": max(1, math.ceil(t.connect)), "read_timeout": client,
            "write_timeout": client}


def postgres_connection_class(t: DbTimeouts) -> type[Any]:
    """A psycopg ``Connection`` whose every wait has a deadline (``t.client_statement``,
    or a shorter one inside ``quick``)."""
    import psycopg  # optional dependency: only a PostgreSQL URL needs it
    from psycopg import errors as pg_errors

    class DeadlineConnection(psycopg.Connection[Any]):
        cascade_deadline: float = t.client_statement

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            limit = self.cascade_deadline if timeout is None else timeout
            try:
                return super().wait(gen, interval=interval, timeout=limit)
            except pg_errors._WaitTimeout:
                # Half a round trip happened: the connection cannot be trusted any more.
                # Closed, it is a disconnect for SQLAlchemy, which invalidates it.
                with contextlib.suppress(Exception):
                    self.pgconn.finish()
                raise psycopg.OperationalError(
                    f"the database did not answer within {limit:g} s "
                    "(database.statement_timeout); connection closed") from None

    return DeadlineConnection


@contextlib.contextmanager
def quick(dbapi_conn: Any, seconds: float) -> Iterator[None]:
    """Within the block, a PostgreSQL connection's round trips wait at most ``seconds`` (a
    ping should not get a statement's allowance). Other drivers: unchanged."""
    if not hasattr(dbapi_conn, "cascade_deadline"):
        yield
        return
    before = dbapi_conn.cascade_deadline
    dbapi_conn.cascade_deadline = seconds
    try:
        yield
    finally:
        dbapi_conn.cascade_deadline = before
