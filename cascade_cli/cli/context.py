"""What every command needs, built once per invocation and passed down (no singletons)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import typer

from cascade_cli.cli.lazy import lazy
from cascade_cli.clock import Clock, SystemClock
from cascade_cli.console import make_console

if TYPE_CHECKING:
    from rich.console import Console

    from cascade_cli import config
    from cascade_cli.config import Settings
    from cascade_cli.store import engine, migrate, timeouts
    from cascade_cli.store.engine import Store
else:
    config = lazy("cascade_cli.config")
    engine = lazy("cascade_cli.store.engine")
    migrate = lazy("cascade_cli.store.migrate")
    timeouts = lazy("cascade_cli.store.timeouts")


@dataclass
class AppContext:
    config_path: str | None = None
    clock: Clock = field(default_factory=SystemClock)
    _settings: Settings | None = None
    _store: Store | None = None
    _warned: bool = False

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = config.load_settings(self.config_path)
        if not self._warned:
            self._warned = True
            err = make_console(stderr=True)
            for warning in self._settings.warnings:
                err.print(f"[yellow]warning:[/yellow] {warning}")
        return self._settings

    def store(self) -> Store:
        """The parent database, built on first use (commands that need none never connect)."""
        if self._store is None:
            s = self.settings
            d = s.model.database
            self._store = engine.Store.from_url(
                s.database_url, echo=d.echo, pool_size=d.pool_size,
                limits=timeouts.DbTimeouts(connect=d.connect_timeout,
                                           statement=d.statement_timeout,
                                           pool=d.pool_timeout))
        return self._store

    def ready_store(self) -> Store:
        """The store, refusing a database whose schema is missing or old (with the fix)."""
        store = self.store()
        migrate.require_current(store)
        return store

    @property
    def out(self) -> Console:
        return make_console()

    @property
    def err(self) -> Console:
        return make_console(stderr=True)

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()
            self._store = None


def get_ctx(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    if not isinstance(obj, AppContext):
        obj = AppContext()
        ctx.find_root().obj = obj
    return obj
