"""Alembic environment: run with a connection handed in by cascade_cli.store.migrate."""

from __future__ import annotations

from alembic import context

from cascade_cli.store.models import Base

config = context.config
target_metadata = Base.metadata

connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through cascade_cli.store.migrate
    raise RuntimeError("run migrations through 'cascade init'")

context.configure(connection=connection, target_metadata=target_metadata,
                  render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
with context.begin_transaction():
    context.run_migrations()
