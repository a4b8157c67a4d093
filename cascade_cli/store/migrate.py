"""Schema creation and upgrades through Alembic, run by ``cascade init``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from cascade_cli.errors import SchemaOutOfDate, StoreError
from cascade_cli.store import faults
from cascade_cli.store.engine import Store

_MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(store: Store) -> str | None:
    try:
        with store.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except DBAPIError as exc:
        raise faults.translate(exc, store.engine.url, store.masked_url) or StoreError(
            f"database unreachable ({store.masked_url}): "
            f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}",
            hint="check database.url and that the server is running") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"database unreachable ({store.masked_url}): "
                         f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}",
                         hint="check database.url and that the server is running") from exc


def _steps(cfg: Config, store: Store, before: str | None, revision: str) -> list[str]:
    """The revisions to upgrade to, each in its own transaction. One on SQLite and PostgreSQL:
    the whole upgrade commits or changes nothing. One per migration on MySQL/MariaDB, which
    commit every schema change at once whatever the transaction: there the recorded revision
    must follow each migration, or a later one that stops (0006 on names differing only by
    case) would leave an earlier one's change applied but unrecorded, and 'cascade init'
    could not resume."""
    if store.dialect not in ("mysql", "mariadb"):
        return [revision]
    script = ScriptDirectory.from_config(cfg)
    pending = [s.revision for s in script.iterate_revisions(revision, before or "base")]
    return list(reversed(pending))


def upgrade(store: Store, revision: str = "head") -> tuple[str | None, str]:
    """Bring the schema to ``revision`` (head unless a test asks for an older one). Safe to
    run again. Returns (before, after) revisions."""
    before = current_revision(store)
    cfg = _config()
    try:
        for step in _steps(cfg, store, before, revision):
            with store.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, step)
    except SQLAlchemyError as exc:
        raise StoreError(f"schema upgrade failed on {store.masked_url}: "
                         f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}") from exc
    except (CommandError, RevisionError) as exc:
        # e.g. the database was migrated by a newer Cascade: its revision is unknown here.
        raise StoreError(f"schema upgrade failed on {store.masked_url}: {exc}",
                         hint="upgrade Cascade to the version that created this database"
                         ) from exc
    return before, head_revision() if revision == "head" else revision


def downgrade(store: Store, revision: str) -> tuple[str | None, str | None]:
    """Take the schema back to ``revision``, for an operator going back to an older Cascade
    release on the same database (docs/migration.md, Rollback): run it with the newer release
    still installed, which has the migration files that undo its changes. Data of dropped
    columns is lost. Returns (before, after) revisions."""
    before = current_revision(store)
    cfg = _config()
    try:
        steps = [revision]
        if store.dialect in ("mysql", "mariadb"):  # one migration at a time, as in _steps
            script = ScriptDirectory.from_config(cfg)
            steps = [str(s.down_revision or "base")
                     for s in script.iterate_revisions(before or "base", revision)] or steps
        for step in steps:
            with store.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.downgrade(cfg, step)
    except SQLAlchemyError as exc:
        raise StoreError(f"schema downgrade failed on {store.masked_url}: "
                         f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}") from exc
    except (CommandError, RevisionError) as exc:
        raise StoreError(f"schema downgrade to {revision!r} failed on {store.masked_url}: "
                         f"{exc}", hint=f"the schema is at {before}; give an older revision "
                                        "this release knows (docs/migration.md)") from exc
    return before, current_revision(store)


def require_current(store: Store, head: str | None = None) -> None:
    """Refuse to run daemons against a missing or old schema, with the fix. ``head``: the
    head revision, if the caller already knows it (reading it lists the migration files)."""
    current = current_revision(store)
    if current is None:
        raise SchemaOutOfDate(f"database {store.masked_url} has no Cascade schema",
                              hint="run 'cascade init' on the parent first")
    head = head or head_revision()
    if current != head:
        raise SchemaOutOfDate(f"database schema is at {current}, this version needs "
                              f"{head}", hint="run 'cascade init' to upgrade it")
