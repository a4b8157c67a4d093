"""What every command needs, built once per invocation and passed down (no singletons)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import typer

from cascade_cli.clock import Clock, SystemClock
from cascade_cli.config import Settings, load_settings
from cascade_cli.console import make_console

if TYPE_CHECKING:
    from rich.console import Console

    from cascade_cli.store.engine import Store


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
            self._settings = load_settings(self.config_path)
        if not self._warned:
            self._warned = True
            err = make_console(stderr=True)
            for warning in self._settings.warnings:
                err.print(f"[yellow]warning:[/yellow] {warning}")
        return self._settings

    def store(self) -> Store:
        """The parent database, built on first use (commands that need none never connect)."""
        if self._store is None:
            from cascade_cli.store.engine import Store
            from cascade_cli.store.timeouts import DbTimeouts

            s = self.settings
            d = s.model.database
            self._store = Store.from_url(s.database_url, echo=d.echo, pool_size=d.pool_size,
                                         limits=DbTimeouts(connect=d.connect_timeout,
                                                           statement=d.statement_timeout,
                                                           pool=d.pool_timeout))
        return self._store

    def ready_store(self) -> Store:
        """The store, refusing a database whose schema is missing or old (with the fix)."""
        from cascade_cli.store.migrate import require_current

        store = self.store()
        require_current(store)
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
