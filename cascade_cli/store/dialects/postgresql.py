"""PostgreSQL: ``UPDATE ... RETURNING`` with data-modifying CTEs, rows sent as one JSON
document, and, for allocations this process handed out (``facts``), an owner's upload and
completion as one statement each."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Integer,
    Select,
    String,
    Text,
    any_,
    bindparam,
    column,
    exists,
    func,
    insert,
    literal,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from cascade_cli.protocol import ArticleIn
from cascade_cli.store.dialects.base import (
    ALLOC,
    ALLOCATION_COLUMNS,
    ARTICLES,
    CANDIDATES,
    CLAIMED_VALUES,
    COMPLETED_VALUES,
    EVENT_KEYS,
    EVENTS,
    FEEDS,
    LEASE,
    NOW,
    RESULT_KEYS,
    RESULTS,
    TASK_COLUMNS,
    A,
    AllocationRow,
    BaseDialect,
    ClaimedRow,
    free_capacity,
    owner_conditions,
    owner_update,
)
from cascade_cli.store.feeds import PACKAGE_COLUMNS
from cascade_cli.store.models import PENDING
from cascade_cli.store.prepared import Prepared


def _any_of(values: Select[Any]) -> Any:
    """``= ANY(ARRAY(values))``, so that a lookup of ids listed in a JSON document is index
    probes whatever the planner guesses. An ``IN (SELECT ... FROM json_...)`` is guessed at
    100 rows (the planner cannot see into the document) and was run as a hash join over a
    sequential scan of the whole table (0.4-0.9 ms per claim or completion with 3,000 feeds,
    and growing with the table)."""
    return any_(func.array(values.scalar_subquery()))


def _package_feeds_column() -> Any:
    """The allocation's feeds as a task package lists them, as one JSON array returned by
    the claim itself (``feeds.package_feeds`` is one more round trip)."""
    f = FEEDS.alias("f")
    fields = [part for c in PACKAGE_COLUMNS for part in (literal(c.name), f.c[c.name])]
    return type_coerce(
        select(func.json_agg(func.json_build_object(*fields)))
        .where(f.c.id == _any_of(select(func.json_array_elements_text(A.feed_ids))
                                  .correlate(ALLOC))).scalar_subquery(), JSON
    ).label("package_feeds")


def _claim() -> Prepared:
    """One statement: the node's free capacity is counted, the candidates (locked, skipping
    rows other claims hold) are moved and returned at once, with their task's package fields
    and their feeds. The candidates are a CTE: it runs exactly once (an ``IN (SELECT ...
    LIMIT n)`` may be re-run by the planner and move more than n rows). ``= ANY(ARRAY(...))``
    and not a join with the CTE: the planner cannot know how many rows the LIMIT expression
    lets through, guessed a tenth of the pending rows, and joined them by hashing the whole
    table (0.7 of a 0.8 ms claim with 3,000 allocations, growing with the table); the array
    makes it primary-key probes. ``status = 'pending'`` again on the outer rows guards the
    rows locked after the candidates were read."""
    picked = (CANDIDATES.with_for_update(skip_locked=True, of=ALLOC).with_only_columns(A.id)
              .limit(free_capacity(func.greatest, func.least)))
    target = A.id == _any_of(select(picked.cte("picked").c.id))
    return Prepared(update(ALLOC).where(target, A.status == PENDING).values(CLAIMED_VALUES)
                    .returning(*ALLOCATION_COLUMNS, *TASK_COLUMNS, _package_feeds_column()),
                    row=ClaimedRow)


# --- articles: the whole merge is one statement with one parameter ----------------------------
#
# The rows travel as one JSON document (encoded by orjson, see engine._json_for_postgres) that
# the server expands into the table's row type; the insert and the allocation's counter are
# one round trip. Arrays per column (``unnest``) cost more: psycopg builds array literals
# element by element in Python, and a multi-row VALUES list is a new SQL text for every batch
# size.

_ARTICLE_COLUMNS = [c.name for c in ARTICLES.c]
_KEY = ["feed_id", "id"]  # the primary key (see models.Article)
_ROWS = (func.json_to_recordset(bindparam("b_rows", type_=postgresql.JSON))
         .table_valued(*[column(c.name, c.type) for c in ARTICLES.c])
         .render_derived(name="r", with_types=True))


def _new_articles_cte(*conditions: Any) -> Any:
    """The CTE that inserts the ``b_rows`` document's articles not stored yet (when
    ``conditions`` hold) and returns their ids."""
    return (postgresql.insert(ARTICLES)
            .from_select(_ARTICLE_COLUMNS, select(*_ROWS.c).where(*conditions))
            .on_conflict_do_nothing(index_elements=_KEY).returning(ARTICLES.c.id)
            .cte("new"))


_NEW = _new_articles_cte()
_BUMP = (update(ALLOC).where(A.id == bindparam("b_alloc"), exists(select(_NEW.c.id)))
         .values(new_article_count=A.new_article_count
                 + select(func.count()).select_from(_NEW).scalar_subquery())
         .cte("bump"))
_MERGE = Prepared(select(func.count()).select_from(_NEW).add_cte(_BUMP))


def _json_time(value: datetime) -> str:
    """A datetime as the JSON document carries it: naive UTC (see types.UTCDateTime)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat()


# The article's own columns that may be NULL: (column, ArticleIn attribute).
_OPTIONAL = (("guid", "guid"), ("client_id", "id"), ("pic_url", "pic_url"),
             ("description", "description"), ("content", "content"), ("author", "author"))


def document(unique: dict[str, tuple[str, ArticleIn]], now: datetime,
             shared: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows as one JSON document, built directly in its final form. A NULL is left out
    (``json_to_recordset`` reads a missing key as NULL): a smaller document to encode here and
    to parse there, and no per-value type test."""
    common = {k: v for k, v in shared.items() if v is not None}
    common["created_at"] = _json_time(now)
    rows = []
    for ident, (feed_id, a) in unique.items():
        row = {"id": ident, "feed_id": feed_id, "title": a.title or "", "url": a.url or "",
               **common}
        for name, attr in _OPTIONAL:
            value = getattr(a, attr)
            if value is not None:
                row[name] = value
        if a.publish_time is not None:
            row["publish_time"] = _json_time(a.publish_time)
        rows.append(row)
    return rows


# --- completion ----------------------------------------------------------------------------------


def _completion_ctes(*gate: Any) -> tuple[Any, Any]:
    """A completion's feed results and its feeds' fetch outcomes, as two data-modifying CTEs
    (when ``gate`` holds). The results travel as one JSON document, expanded once (CTE
    ``r``) and read by both."""
    fc = FEEDS.c
    rows = (func.json_to_recordset(bindparam("b_results", type_=postgresql.JSON))
            .table_valued(column("feed_id", String()), column("status", String()),
                          column("article_count", Integer()), column("error", Text()),
                          column("duration_ms", Integer()), column("last_error", Text()),
                          column("etag", fc.etag.type),
                          column("last_modified", fc.last_modified.type))
            .render_derived(name="rows", with_types=True))
    r = select(*rows.c).where(*gate).cte("r")
    now = bindparam("b_now", type_=RESULTS.c.created_at.type)
    new_count = (select(func.count()).select_from(ARTICLES)
                 .where(ARTICLES.c.allocation_id == bindparam("b_allocation_id"),
                        ARTICLES.c.feed_id == r.c.feed_id).scalar_subquery())
    given = {"allocation_id": bindparam("b_allocation_id", type_=RESULTS.c.allocation_id.type),
             "schedule_run_id": bindparam("b_schedule_run_id",
                                          type_=RESULTS.c.schedule_run_id.type),
             "node_id": bindparam("b_node_id", type_=RESULTS.c.node_id.type),
             "created_at": now}
    results = insert(RESULTS).from_select(
        [*RESULT_KEYS, "new_article_count"],
        select(*[given[k] if k in given else r.c[k] for k in RESULT_KEYS], new_count)
    ).cte("results")
    feeds = update(FEEDS).where(fc.id == r.c.feed_id,
                                fc.id == _any_of(select(r.c.feed_id))).values(
        last_status=r.c.status, last_error=r.c.last_error,
        etag=func.coalesce(r.c.etag, fc.etag),
        last_modified=func.coalesce(r.c.last_modified, fc.last_modified),
        last_fetched_at=now).cte("fetched")
    return results, feeds


def _event_values(*given_by_row: str) -> dict[str, Any]:
    return {k: bindparam(f"e_{k}", type_=EVENTS.c[k].type) for k in EVENT_KEYS
            if k not in given_by_row}


# A completion's feed results, fetch outcomes and event in one statement (three round trips
# before).
_RECORD_COMPLETION = Prepared(insert(EVENTS).values(_event_values())
                              .add_cte(*_completion_ctes()))


def _complete(with_epoch: bool) -> Prepared:
    """An owner's completion as one statement, for an allocation whose feeds are known
    beforehand: the owner write (CTE ``done``, with the error known in advance), then, only
    if it matched, the results, fetch outcomes and the event, whose count and detail are the
    completed row's. Returns the completed row, or no row when the caller may not complete
    it."""
    values = {**COMPLETED_VALUES, A.error_message: bindparam("b_error", type_=Text())}
    done = owner_update(values, with_epoch=with_epoch).returning(*ALLOCATION_COLUMNS).cte("done")
    gate = exists(select(done.c.id))
    event_values = _event_values("task_id", "allocation_id", "count", "detail")
    event = insert(EVENTS).from_select(
        [*event_values, "task_id", "allocation_id", "count", "detail"],
        select(*event_values.values(), done.c.task_id, done.c.id, done.c.article_count,
               done.c.result_summary)).cte("event")
    return Prepared(select(*done.c).add_cte(*_completion_ctes(gate), event), row=AllocationRow)


def _upload(with_epoch: bool) -> Prepared:
    """An owner's upload as one statement. The owner's row is locked (as the lease renewal
    would), the articles not stored yet are inserted only if it was found, and the renewal
    and the new-article count are one UPDATE of that row. Returns one row (the new count)
    for the owner, none otherwise."""
    owner = select(A.id).where(*owner_conditions(with_epoch)).with_for_update().cte("owner")
    new = _new_articles_cte(exists(select(owner.c.id)))
    added = select(func.count()).select_from(new).scalar_subquery()
    return Prepared(update(ALLOC).where(A.id == owner.c.id)
                    .values(lease_expires_at=LEASE, updated_at=NOW,
                            new_article_count=A.new_article_count + added)
                    .returning(added.label("new")))


class _OneStatement:
    """``OneStatementWrites`` for PostgreSQL."""

    def __init__(self) -> None:
        self._upload = {e: _upload(e) for e in (False, True)}
        self._complete = {e: _complete(e) for e in (False, True)}

    def upload(self, conn: Connection, with_epoch: bool, params: dict[str, Any],
               unique: dict[str, tuple[str, ArticleIn]], shared: dict[str, Any]) -> int | None:
        row = self._upload[with_epoch].execute(
            conn, {**params, "b_rows": document(unique, params["b_now"], shared)}).first()
        return None if row is None else int(row.new)

    def complete(self, conn: Connection, with_epoch: bool,
                 params: dict[str, Any]) -> AllocationRow | None:
        first: AllocationRow | None = self._complete[with_epoch].execute(conn, params).first()
        return first


_ONE_STATEMENT = _OneStatement()


class PostgresqlDialect(BaseDialect):
    name = "postgresql"
    claiming = _claim()
    one_statement = _ONE_STATEMENT

    def claim(self, session: Session, params: dict[str, Any]) -> list[ClaimedRow]:
        rows = super().claim(session, params)
        if rows:
            self.facts.remember(rows)  # for one_statement's writes
        return rows

    def package_feeds(self, session: Session, alloc: ClaimedRow) -> dict[str, dict[str, Any]]:
        return {feed["id"]: feed for feed in alloc.package_feeds or []}  # returned by the claim

    def merge_articles(self, conn: Connection, unique: dict[str, tuple[str, ArticleIn]],
                       now: datetime, shared: dict[str, Any]) -> int:
        return int(_MERGE.execute(conn, {"b_rows": document(unique, now, shared),
                                         "b_alloc": shared["allocation_id"]}).scalar() or 0)

    def record_completion(self, session: Session, alloc: AllocationRow, node_id: str,
                          now: datetime, results: list[dict[str, Any]],
                          event: dict[str, Any]) -> None:
        _RECORD_COMPLETION.execute(session.connection(), {
            "b_results": results, "b_now": now, "b_allocation_id": alloc.id,
            "b_schedule_run_id": alloc.schedule_run_id, "b_node_id": node_id,
            "e_created_at": now, **{f"e_{k}": v for k, v in event.items()}})
