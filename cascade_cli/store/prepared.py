"""Prepared Core statements for the parent's per-request path.

``Prepared(stmt)`` compiles a Core statement once per database dialect (SQL text, parameter
order, the column types' bind and result processors) and then runs it on the DBAPI cursor of
the session's connection, in the session's transaction. Same SQL, same type conversions and
same exceptions (wrapped by SQLAlchemy, with its disconnect handling) as
``connection.execute(stmt, params)``, without what that costs on every call: building the
statement's cache key, looking the compiled form up, a new execution context and result
object. That was about a third of the parent's database-side CPU per request.

Only for statements whose bound names are fixed: ``bindparam``s given at execution (each one,
every time), and ``IN`` lists whose values are constants of the statement (expanded once,
here). A list only known at execution time (``column.in_(ids)``) belongs to
``connection.execute``. An INSERT names its columns (``column_keys``), all of them given on
every execution: column defaults computed in Python are not applied here.

This is the store's adapter to SQLAlchemy's private API, and the only module of the store that
uses it: ``compiled._bind_processors``, ``_process_parameters_for_postcompile`` and
``_result_columns``, ``TypeEngine._cached_result_processor`` and
``Connection._handle_dbapi_exception``. The installed SQLAlchemy is checked against the range
these were verified on (``cascade_cli.compat``) when the module is imported; an upgrade starts
here (docs/dev/architecture.md).
"""

from __future__ import annotations

import contextlib
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import Executable

from cascade_cli import compat

compat.require("sqlalchemy", sqlalchemy.__version__)

_UNSET = object()  # equal to no value: the first row of a batch is always converted


class _Plan:
    __slots__ = ("sql", "names", "positional", "defaults", "binds", "row", "results", "slots",
                 "required", "processed")

    def __init__(self, stmt: Any, dialect: Dialect, column_keys: Sequence[str] | None,
                 row_type: Any = None) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=column_keys)
        if column_keys is not None:
            # An INSERT also binds the columns that have Python-side defaults; connection.execute
            # fills those in, Prepared does not: they must be listed (and given) explicitly.
            unlisted = sorted(set(compiled.binds) - set(column_keys))
            if unlisted:
                raise TypeError(f"Prepared insert: list (and pass) the columns "
                                f"{', '.join(unlisted)} in column_keys")
        defaults = compiled.construct_params(_check=False)
        # Parameters the caller must pass: like connection.execute, a missing one is an
        # error, never a silent NULL.
        self.required = frozenset(
            name for name, param in compiled.binds.items()
            if param.required or (column_keys is not None and name in column_keys))
        binds: dict[str, Callable[[Any], Any]] = dict(compiled._bind_processors)
        if compiled.post_compile_params:
            for param in compiled.post_compile_params:
                name = compiled.bind_names[param]
                if defaults.get(name) is None:
                    raise TypeError(f"Prepared: IN list {name!r} has no constant value; "
                                    "run this statement with connection.execute")
            expanded = compiled._process_parameters_for_postcompile(defaults)
            self.sql = expanded.statement
            self.names = list(expanded.positiontup or [])
            defaults = expanded.parameters
            binds.update(expanded.processors)
        else:
            self.sql = compiled.string
            self.names = list(compiled.positiontup or [])
        self.positional = compiled.positional
        self.defaults = dict(defaults)
        self.binds = binds
        # What ``bind`` does per parameter, worked out once: its name, its statement-level
        # value (a constant of the statement, else None), its type's bind processor.
        order = self.names if self.positional else list(self.defaults)
        self.slots = [(name, self.defaults.get(name), binds.get(name), name in self.required)
                      for name in order]
        self.processed = [(i, proc) for i, (_, _, proc, _) in enumerate(self.slots)
                          if proc is not None]
        self.row: Any = None
        self.results: list[tuple[int, Callable[[Any], Any]]] = []
        columns = compiled._result_columns
        if columns:
            names = [c.keyname for c in columns]
            anonymous: Any = namedtuple("PreparedRow", names, rename=True)  # type: ignore[misc]
            self.row = _row_maker(row_type, names) if row_type is not None else anonymous._make
            for i, col in enumerate(columns):
                proc = col.type._cached_result_processor(dialect, None)
                if proc is not None:
                    self.results.append((i, proc))

    def _values(self, params: Mapping[str, Any]) -> list[Any]:
        get = params.get
        try:
            return [params[name] if required else get(name, default)
                    for name, default, _, required in self.slots]
        except KeyError:
            missing = ", ".join(sorted(self.required - params.keys()))
            raise TypeError(f"Prepared statement: no value for the parameter(s) {missing}"
                            ) from None

    def _shaped(self, values: list[Any]) -> Any:
        if self.positional:
            return values
        return {slot[0]: value for slot, value in zip(self.slots, values, strict=True)}

    def bind(self, params: Mapping[str, Any]) -> Any:
        values = self._values(params)
        for i, proc in self.processed:
            values[i] = proc(values[i])
        return self._shaped(values)

    def bind_many(self, params: Sequence[Mapping[str, Any]]) -> list[Any]:
        """``bind`` for each parameter set. Rows of one batch often share a value (the same
        ``created_at`` object in every row of an upload): a slot whose value is the very
        object of the row before reuses its processed form instead of converting it again.
        Safe within one call: nothing can change a value while the batch is bound."""
        rows = [self._values(p) for p in params]
        for i, proc in self.processed:
            last_raw: Any = _UNSET
            last: Any = None
            for values in rows:
                raw = values[i]
                if raw is not last_raw:
                    last_raw, last = raw, proc(raw)
                values[i] = last
        return [self._shaped(values) for values in rows]

    def make_row(self, raw: Sequence[Any]) -> Any:
        if self.results:
            raw = list(raw)
            for i, proc in self.results:
                raw[i] = proc(raw[i])
        return self.row(raw)


def _row_maker(row_type: Any, names: list[str]) -> Callable[[Sequence[Any]], Any]:
    """How a result row becomes a ``row_type`` (a NamedTuple): its fields are the statement's
    columns, in order, optionally followed by fields with defaults that the statement does not
    return. Checked once, when the statement is compiled."""
    fields = tuple(row_type._fields)
    defaults = getattr(row_type, "_field_defaults", {})
    if fields[:len(names)] != tuple(names) or any(
            f not in defaults for f in fields[len(names):]):
        raise TypeError(f"Prepared: {row_type.__name__} has the fields {fields}, the statement "
                        f"returns {tuple(names)}")
    if len(fields) == len(names):
        return row_type._make  # type: ignore[no-any-return]
    return lambda raw: row_type(*raw)


# The DBAPI cursor kept for ``Prepared`` statements on a pooled connection, with the DBAPI
# connection it belongs to (``info`` lives as long as that connection; the identity check
# covers a connection replaced underneath). A psycopg cursor costs about 30 us of CPU to
# make (its adapters and transformer), a third of a short statement's whole client cost;
# one reused cursor per connection removes that from every statement.
_CURSOR = "cascade.prepared_cursor"


def _cursor(fairy: Any) -> Any:
    dbapi = fairy.dbapi_connection
    cached = fairy.info.get(_CURSOR)
    if cached is not None and cached[0] is dbapi:
        return cached[1]
    cursor = dbapi.cursor()
    fairy.info[_CURSOR] = (dbapi, cursor)
    return cursor


def _run(conn: Connection, plan: _Plan, call: Callable[[Any], Any], bound: Any) -> Any:
    fairy = conn.connection  # the transaction's pooled connection
    cursor = _cursor(fairy)
    try:
        return call(cursor)
    except Exception as exc:
        # A cursor that failed is not used again: the next statement makes a fresh one.
        fairy.info.pop(_CURSOR, None)
        with contextlib.suppress(Exception):
            cursor.close()
        # SQLAlchemy's own handling: wraps into DBAPIError subclasses (IntegrityError,
        # OperationalError...) and invalidates a connection the database dropped.
        conn._handle_dbapi_exception(exc, plan.sql, bound, cursor, None)
        raise  # unreachable: the call above always raises


class PreparedResult:
    """The rows (named tuples: ``row.column``) and row count of one execution."""

    __slots__ = ("rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def all(self) -> list[Any]:
        return self.rows

    def first(self) -> Any:
        return self.rows[0] if self.rows else None

    def one(self) -> Any:
        if len(self.rows) != 1:
            raise LookupError(f"expected one row, got {len(self.rows)}")
        return self.rows[0]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None


class Prepared:
    """A Core statement, compiled once per dialect, run on the DBAPI cursor."""

    __slots__ = ("stmt", "column_keys", "row_type", "_plans")

    def __init__(self, stmt: Executable, column_keys: Sequence[str] | None = None, *,
                 row: type[tuple[Any, ...]] | None = None) -> None:
        """``row``: the NamedTuple the rows are made as (else an anonymous named tuple)."""
        self.stmt = stmt
        self.column_keys = list(column_keys) if column_keys is not None else None
        self.row_type = row
        self._plans: dict[str, _Plan] = {}

    def plan(self, dialect: Dialect) -> _Plan:
        key = f"{dialect.name}+{dialect.driver}"
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _Plan(self.stmt, dialect, self.column_keys,
                                            self.row_type)
        return plan

    def execute(self, conn: Connection, params: Mapping[str, Any] | None = None
                ) -> PreparedResult:
        plan = self.plan(conn.dialect)
        bound = plan.bind(params or {})

        def call(cursor: Any) -> PreparedResult:
            cursor.execute(plan.sql, bound)
            rows = ([plan.make_row(r) for r in cursor.fetchall()]
                    if plan.row is not None else [])
            return PreparedResult(rows, cursor.rowcount)

        return _run(conn, plan, call, bound)  # type: ignore[no-any-return]

    def executemany(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> int:
        """Run once per parameter set (no rows returned); the summed row count where the
        driver reports it (SQLite, MySQL), else -1."""
        if not params:
            return 0
        plan = self.plan(conn.dialect)
        bound = plan.bind_many(params)

        def call(cursor: Any) -> int:
            cursor.executemany(plan.sql, bound)
            return int(cursor.rowcount)

        return _run(conn, plan, call, bound)  # type: ignore[no-any-return]


class PaddedIn:
    """A SELECT over ``column IN (values)`` for lists of any length, as a handful of
    ``Prepared`` statements: one per size in ``sizes``. A longer list is cut into chunks of
    the largest size, and a chunk is padded with NULLs (which match nothing) up to the next
    size: a few fixed SQL texts instead of a new one for every list length.

    ``make(binds)`` builds the statement from the list of bound parameters to put in the IN.
    """

    __slots__ = ("sizes", "_stmts")

    def __init__(self, make: Callable[[list[Any]], Executable], value_type: Any,
                 sizes: Sequence[int] = (1, 8, 64, 512)) -> None:
        from sqlalchemy import bindparam

        self.sizes = tuple(sizes)
        self._stmts = {n: Prepared(make([bindparam(f"in{j}", type_=value_type)
                                         for j in range(n)])) for n in self.sizes}

    def rows(self, conn: Connection, values: Sequence[Any]) -> Iterator[Any]:
        top = self.sizes[-1]
        for start in range(0, len(values), top):
            chunk = values[start:start + top]
            size = next(n for n in self.sizes if n >= len(chunk))
            params = {f"in{j}": chunk[j] if j < len(chunk) else None for j in range(size)}
            yield from self._stmts[size].execute(conn, params).all()
