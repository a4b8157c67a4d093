"""Engine and session factories. Nothing here runs at import time.

``Store`` bundles an engine with a session factory; build one per process (in the CLI command
or daemon ``run``) and pass it down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    NoSuchModuleError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from cascade_cli.errors import ConfigError, StoreError
from cascade_cli.store import dialects, faults, timeouts
from cascade_cli.store.alloc_facts import FactsMemory
from cascade_cli.store.timeouts import DbTimeouts


def url_has_password(url: str) -> bool:
    """Whether a database URL carries a password (``cascade doctor`` warns about secrets in
    a config file others can read). A URL SQLAlchemy cannot parse has none to find."""
    try:
        return bool(make_url(url).password)
    except ArgumentError:
        return False


def mask_url(url: str | URL) -> str:
    """The URL with its password hidden, for logs and startup lines."""
    try:
        return make_url(str(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def normalise_db_url(url: str) -> URL:
    """Pick the drivers we ship: psycopg 3 for PostgreSQL, PyMySQL for MySQL/MariaDB."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database.url: not a database URL, got \"{mask_url(url)}\"",
                          key="database.url",
                          hint="use sqlite:///path.db, postgresql://user@host/db or "
                               "mysql://user@host/db") from exc
    backend = parsed.get_backend_name()
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.set(drivername="mysql+pymysql")
    elif backend not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise ConfigError(f"database.url: unsupported database '{backend}'",
                          key="database.url", hint="use SQLite, PostgreSQL or MySQL/MariaDB")
    return parsed


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers and one writer work together; busy_timeout waits instead of failing.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    # Checkpoint the WAL every ~40 MB instead of every 4 MB (the default): a page the parent
    # rewrites on every request (allocation and index pages) is copied back once per
    # checkpoint, so fewer checkpoints copy less. Measured: -11% CPU per full cycle.
    cur.execute("PRAGMA wal_autocheckpoint=10000")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # Take the write lock at BEGIN: a deferred transaction that later upgrades to a writer can
    # fail at once with "database is locked" instead of waiting on busy_timeout.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


# A pooled connection that sat unused this long is pinged before it is handed out again.
# SQLAlchemy's ``pool_pre_ping`` pings on every checkout: one more round trip for every
# transaction, 13% of the parent's database thread under load on PostgreSQL, for connections
# that were in use a few milliseconds ago. A connection that breaks while busy is invalidated
# by SQLAlchemy and the request is answered 503 with Retry-After, as any failure mid-request.
PING_AFTER_IDLE = 2.0  # seconds
_IDLE_SINCE = "cascade_idle_since"


def _ping_on_checkout_after_idle(engine: Engine, ping_timeout: float) -> None:
    dialect = engine.dialect

    def checkin(dbapi_conn: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    def checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.pop(_IDLE_SINCE, None)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE:
            return  # new, or just returned by its last user
        try:
            with timeouts.quick(dbapi_conn, ping_timeout):
                dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - any failure: the connection is unusable
            # The pool discards this connection and checks out a fresh one.
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc

    event.listen(engine, "checkin", checkin)
    event.listen(engine, "checkout", checkout)


def _json_for_postgres(value: Any) -> bytes:
    """JSON as PostgreSQL receives it: text as UTF-8, not as ``\\u`` escapes, and no
    blanks, encoded by orjson. An upload's articles travel as one JSON document (see
    ``articles``): the json module tested every character on two passes (about 7% of the
    parent's instructions per allocation), its default turned each CJK character into six
    bytes, and PostgreSQL then decoded every escape again. The database is UTF8 (see
    docs/deployment.md); control characters are still escaped."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)  # as json.dumps: {1: x} -> {"1": x}


def build_engine(url: str, *, echo: bool = False, pool_size: int = 10,
                 limits: DbTimeouts | None = None) -> Engine:
    parsed = normalise_db_url(url)
    limits = limits or DbTimeouts()
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the database folder {Path(database).parent}: "
                                 f"{exc.strerror or exc}",
                                 hint="set data_dir or database.url to a writable place") from exc
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30,
                                  "isolation_level": None}
        kwargs["pool_size"] = pool_size
    else:
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size
        kwargs["pool_timeout"] = limits.pool
        if parsed.get_backend_name() == "mysql":
            kwargs["isolation_level"] = "READ COMMITTED"
            kwargs["connect_args"] = timeouts.mysql_connect_args(limits)
        if parsed.get_backend_name() == "postgresql":
            kwargs["json_serializer"] = _json_for_postgres
            kwargs["connect_args"] = timeouts.postgres_connect_args(limits)
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"database.url: no driver installed for {parsed.drivername}",
                          key="database.url",
                          hint="pip install 'cascade-cli[postgres]' or 'cascade-cli[mysql]'"
                          ) from exc
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
    else:
        _ping_on_checkout_after_idle(engine, limits.connect)
    if parsed.get_backend_name() == "postgresql":
        connection_class = timeouts.postgres_connection_class(limits)

        def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
            # psycopg.connect() itself, with the connection class whose waits have deadlines.
            return connection_class.connect(*cargs, **cparams)

        event.listen(engine, "do_connect", connect)
        event.listen(engine, "connect",
                     lambda dbapi_conn, _record: timeouts.set_server_statement_timeout(
                         dbapi_conn, limits))
    return engine


_BEFORE_COMMIT = "cascade.before_commit"
_UNDONE = "cascade.savepoints_rolled_back"
H = TypeVar("H", bound=Callable[[Session], None])


def add_unless_taken(session: Session, row: Any) -> bool:
    """Insert ``row`` in a savepoint; False when a unique constraint says another process (or
    an earlier pass) inserted its twin first: once is enough, and the surrounding transaction
    goes on."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return False
    return True


def before_commit(session: Session, key: str, make: Callable[[], H]) -> H:
    """The transaction's hook registered under ``key`` (made by ``make()`` the first time):
    ``Store.session()`` runs ``hook(session)`` once, in the transaction, after the unit of
    work and just before the commit; a rollback drops it. For work that should hold its
    locks as briefly as possible; the hook object gathers what the units hand it, tagged
    with ``current_transaction`` so that it can leave out what a savepoint rollback undid
    (``undone``)."""
    hooks: dict[str, Any] = session.info.setdefault(_BEFORE_COMMIT, {})
    hook = hooks.get(key)
    if hook is None:
        hook = hooks[key] = make()
    return hook  # type: ignore[no-any-return]


def current_transaction(session: Session) -> SessionTransaction | None:
    """The innermost transaction: a savepoint if one is open."""
    return session.get_nested_transaction() or session.get_transaction()


def undone(session: Session, transaction: SessionTransaction | None) -> bool:
    """Whether what was done in ``transaction`` was undone by a savepoint rollback."""
    rolled_back = session.info.get(_UNDONE)
    while rolled_back and transaction is not None:
        if transaction in rolled_back:
            return True
        transaction = transaction.parent
    return False


_AFTER_COMMIT = "cascade.after_commit"


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    """Call ``fn()`` once the transaction has committed (through ``Store.session()``); a
    rollback, or a savepoint rollback of the part that registered it, drops it. For what
    must describe committed work only, such as the daemon's log lines: a group-committed
    batch may roll back and run its units again, and a line logged in the transaction
    would then be told twice, or about work that never happened."""
    session.info.setdefault(_AFTER_COMMIT, []).append((current_transaction(session), fn))


def _take_after_commit(session: Session) -> list[Callable[[], None]]:
    pending = session.info.pop(_AFTER_COMMIT, None)
    if not pending:
        return []
    return [fn for transaction, fn in pending if not undone(session, transaction)]


def _run_after_commit(hooks: list[Callable[[], None]]) -> None:
    for fn in hooks:
        try:
            fn()
        except Exception:  # noqa: BLE001 - the work is committed; a hook must not undo the answer
            logging.getLogger("cascade.store").exception("after-commit hook failed")


def _run_before_commit(session: Session) -> None:
    for hook in session.info.pop(_BEFORE_COMMIT, {}).values():
        hook(session)


def _refuse_commit_with_hooks(session: Session) -> None:
    # SQLAlchemy's own event cannot tell the outermost commit from a savepoint release while
    # a savepoint is open: the hooks run from Store.session() instead, and a commit made any
    # other way with hooks pending is a bug that would lose their work.
    if session.info.get(_BEFORE_COMMIT) and not session.in_nested_transaction():
        raise RuntimeError("before-commit hooks are pending: commit through Store.session()")


def _note_savepoint_rollback(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        session.info.setdefault(_UNDONE, set()).add(transaction)


def _forget_transaction(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost transaction ended
        session.info.pop(_BEFORE_COMMIT, None)
        session.info.pop(_UNDONE, None)
        session.info.pop(_AFTER_COMMIT, None)


class Store:
    """An engine plus a session factory. ``session()`` is one unit of work."""

    def __init__(self, engine: Engine, limits: DbTimeouts | None = None) -> None:
        self.engine = engine
        self.limits = limits or DbTimeouts()
        # What this process remembers of the allocations it claimed (see alloc_facts), and
        # the database's own way of doing the hot writes, chosen once; every session carries
        # the dialect (``dialects.of(session)``).
        self.facts = FactsMemory()
        self.backend = dialects.for_name(engine.dialect.name, self.facts)
        self._factory = sessionmaker(bind=engine, expire_on_commit=False, future=True,
                                     info={dialects.SESSION_KEY: self.backend})
        event.listen(self._factory, "before_commit", _refuse_commit_with_hooks)
        event.listen(self._factory, "after_soft_rollback", _note_savepoint_rollback)
        event.listen(self._factory, "after_transaction_end", _forget_transaction)

    @classmethod
    def from_url(cls, url: str, *, echo: bool = False, pool_size: int = 10,
                 limits: DbTimeouts | None = None) -> Store:
        return cls(build_engine(url, echo=echo, pool_size=pool_size, limits=limits), limits)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def supports_skip_locked(self) -> bool:
        return self.dialect in ("postgresql", "mysql", "mariadb")

    @property
    def masked_url(self) -> str:
        return mask_url(self.engine.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Commit on success, roll back on any error; database failures become StoreError
        (``faults.in_unit``: ``DatabaseBusy`` for a lock or a deadlock)."""
        s = self._factory()
        try:
            yield s
            _run_before_commit(s)
            hooks = _take_after_commit(s)
            s.commit()
            _run_after_commit(hooks)
        except DBAPIError as exc:
            _quiet_rollback(s)
            translated = faults.in_unit(exc, self.engine.url, self.masked_url)
            if translated is not None:
                raise translated from exc
            raise  # a bug (a constraint violated, a malformed statement): as it is
        except PoolTimeout as exc:
            _quiet_rollback(s)
            raise StoreError(f"no free database connection within {self.limits.pool:g} s "
                             f"({self.masked_url})",
                             hint="the server is slow or not answering; see "
                                  "database.pool_size and database.pool_timeout") from exc
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def ping(self) -> None:
        """``SELECT 1`` within ``database.connect_timeout``; ``StoreError`` otherwise."""
        try:
            with self.engine.connect() as conn, \
                    timeouts.quick(conn.connection.dbapi_connection, self.limits.connect):
                conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            raise faults.translate(exc, self.engine.url, self.masked_url) or StoreError(
                f"database unreachable ({self.masked_url}): {_short(exc)}",
                hint="check database.url and that the server is running") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"database unreachable ({self.masked_url}): {_short(exc)}",
                             hint="check database.url and that the server is running") from exc

    def dispose(self) -> None:
        self.engine.dispose()


def _quiet_rollback(s: Session) -> None:
    # The rollback of a unit whose connection broke may fail too; the first error is the one
    # to report.
    with suppress(DBAPIError):
        s.rollback()


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0][:300] if str(orig).strip() else type(orig).__name__
