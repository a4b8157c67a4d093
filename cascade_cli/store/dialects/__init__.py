"""Per-database code behind one interface (``base.Dialect``): one module per database.

``for_name`` picks the implementation once, when a ``Store`` is made; every session of that
store carries it (``of(session)``), with the store's ``FactsMemory``.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from cascade_cli.store.alloc_facts import FactsMemory
from cascade_cli.store.dialects.base import (
    AllocationRow,
    ClaimedRow,
    Dialect,
    StatusRow,
    UploadOwnerRow,
)
from cascade_cli.store.dialects.mysql import MysqlDialect
from cascade_cli.store.dialects.postgresql import PostgresqlDialect
from cascade_cli.store.dialects.sqlite import SqliteDialect

__all__ = ["AllocationRow", "ClaimedRow", "Dialect", "StatusRow", "UploadOwnerRow",
           "SESSION_KEY", "for_name", "of"]

# The key of a session's ``info`` that holds its store's dialect (see ``Store``).
SESSION_KEY = "cascade.dialect"

_BY_NAME: dict[str, type[SqliteDialect | PostgresqlDialect | MysqlDialect]] = {
    "sqlite": SqliteDialect, "postgresql": PostgresqlDialect, "mysql": MysqlDialect,
    "mariadb": MysqlDialect}


def for_name(name: str, facts: FactsMemory | None = None) -> Dialect:
    """The implementation for SQLAlchemy's dialect ``name``."""
    try:
        return _BY_NAME[name](facts)
    except KeyError:
        raise ValueError(f"no Cascade dialect for the database {name!r}") from None


def of(session: Session) -> Dialect:
    """The dialect of the store that made ``session``."""
    dialect: Dialect = session.info[SESSION_KEY]
    return dialect
