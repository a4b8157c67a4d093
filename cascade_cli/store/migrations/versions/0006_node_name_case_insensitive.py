"""nodes.name: names differing only by case (n1, N1) are one name, in the database too

The application refused them before creating a node, but two parent processes could both pass
that check, and nothing stopped the we-mp-rss importer. SQLite and PostgreSQL get a unique
index on lower(name). MySQL/MariaDB need none: their unique index on ``name`` compares by the
column's collation, and the default collations (utf8mb4_general_ci, utf8mb4_0900_ai_ci, ...)
are case-insensitive, so it refuses N1 next to n1 already. MariaDB has no expression indexes.
Where an operator chose a case-sensitive collation (``_bin``, ``_cs``), the column moves to
its character set's ``_general_ci`` one, which gives the same rule.

A database that already holds such names stops the upgrade with their names and the fix,
before anything changes (the whole upgrade runs in one transaction).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 21:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cascade_cli.errors import StoreError

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_INDEX = 'uq_nodes_name_lower'
_INDEX_DIALECTS = ("sqlite", "postgresql")


def _refuse_case_duplicates(conn: sa.Connection) -> None:
    rows = conn.execute(sa.text(
        "SELECT lower(name), name FROM nodes WHERE lower(name) IN "
        "(SELECT lower(name) FROM nodes GROUP BY lower(name) HAVING COUNT(*) > 1) "
        "ORDER BY lower(name), created_at, name")).all()
    if not rows:
        return
    groups: dict[str, list[str]] = {}
    for key, name in rows:
        groups.setdefault(key, []).append(name)
    listed = "; ".join(", ".join(f"'{n}'" for n in names) for names in groups.values())
    # Keep the oldest of each group; the others are renamed (a node's name is only a label:
    # its children authenticate with its key) or deleted.
    renames = " ".join(f"UPDATE nodes SET name = '{n}-{i}' WHERE name = '{n}';"
                       for names in groups.values() for i, n in enumerate(names[1:], 2))
    raise StoreError(
        f"cannot upgrade the schema: nodes whose names differ only by case: {listed}",
        hint="Cascade now treats them as one name. Keep one of each: rename the others in the "
             f"database ({renames}) or delete them with the Cascade version you upgraded from "
             "('cascade nodes delete NAME --yes'), then run 'cascade init' again")


def upgrade() -> None:
    conn = op.get_bind()
    dialect = conn.dialect.name
    if dialect in _INDEX_DIALECTS:
        _refuse_case_duplicates(conn)
        op.create_index(_INDEX, 'nodes', [sa.text('lower(name)')], unique=True)
        return
    if dialect not in ("mysql", "mariadb"):
        return
    collation, charset, length = conn.execute(sa.text(
        "SELECT COLLATION_NAME, CHARACTER_SET_NAME, CHARACTER_MAXIMUM_LENGTH "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_NAME = 'nodes' AND COLUMN_NAME = 'name'")).one()
    if collation.endswith('_ci'):
        return  # the unique index uq_nodes_name already holds the rule
    _refuse_case_duplicates(conn)
    op.execute(f"ALTER TABLE nodes MODIFY name VARCHAR({int(length)}) "
               f"CHARACTER SET {charset} COLLATE {charset}_general_ci NOT NULL")


def downgrade() -> None:
    # MySQL/MariaDB: a column moved to a case-insensitive collation keeps it (what the
    # versions before this one expect on those databases anyway).
    if op.get_bind().dialect.name in _INDEX_DIALECTS:
        op.drop_index(_INDEX, table_name='nodes')
