"""Everything checks share, built once per doctor run and memoised (no module state)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cascade_cli.clock import Clock, SystemClock
from cascade_cli.config import ConfigSource, Settings, load_settings, locate_config
from cascade_cli.errors import CascadeError, ConfigError

if TYPE_CHECKING:
    from cascade_cli.store.engine import Store

T = TypeVar("T")


@dataclass
class DoctorContext:
    """Inputs of one doctor run. ``environ``/``cwd`` are injectable so tests need no monkeypatch."""

    config_path: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = field(default_factory=Path.cwd)
    clock: Clock = field(default_factory=SystemClock)
    role_override: str | None = None
    timeout: float = 5.0
    _memo: dict[str, Any] = field(default_factory=dict)

    # --- configuration ---------------------------------------------------------------------

    def memo(self, key: str, build: Callable[[], T]) -> T:
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]  # type: ignore[no-any-return]

    @property
    def source(self) -> ConfigSource:
        return self.memo("source", lambda: locate_config(self.config_path, self.environ, self.cwd))

    def _load(self) -> tuple[Settings | None, ConfigError | None]:
        try:
            return load_settings(self.config_path, environ=self.environ, cwd=self.cwd), None
        except ConfigError as exc:
            return None, exc

    @property
    def settings(self) -> Settings | None:
        """``None`` when the configuration cannot be loaded (see ``config_error``)."""
        return self.memo("settings", self._load)[0]

    @property
    def config_error(self) -> ConfigError | None:
        return self.memo("settings", self._load)[1]

    @property
    def role(self) -> str:
        """parent | child: ``--role``, else ``cascade.node_type``, else a guess from the file."""
        if self.role_override:
            return self.role_override
        if self.settings is not None:
            return self.settings.cascade.node_type
        return self.memo("raw_role", self._raw_role)

    def _raw_role(self) -> str:
        # The file does not validate; still try to read which role it was meant for.
        path = self.source.path
        if path is not None:
            try:
                import yaml

                data = yaml.safe_load(path.read_text(encoding="utf-8"))
                node_type = data.get("cascade", {}).get("node_type")
                if node_type in ("parent", "child"):
                    return str(node_type)
            except Exception:  # noqa: S110 - best effort on a file already known to be broken
                pass
        return "parent"

    # --- parent database -------------------------------------------------------------------

    def store(self) -> Store:
        """The parent's store; raises ``CascadeError`` with the fix when it cannot be opened."""
        def build() -> Store | CascadeError:
            try:
                return self._open_store()
            except CascadeError as exc:
                return exc

        got = self.memo("store", build)
        if isinstance(got, CascadeError):
            raise got
        return got

    def _open_store(self) -> Store:
        from cascade_cli.store.engine import Store, normalise_db_url
        from cascade_cli.store.timeouts import DbTimeouts

        settings = self.settings
        if settings is None:
            raise ConfigError("configuration not loaded")
        url = settings.database_url
        parsed = normalise_db_url(url)
        if parsed.get_backend_name() == "sqlite":
            db = parsed.database
            # Connecting would create an empty SQLite file: doctor must not change anything.
            if db and db != ":memory:" and not Path(db).is_file():
                raise CascadeError(f"database file does not exist: {db}",
                                   hint="run 'cascade init' on the parent (or fix database.url "
                                        "/ data_dir in the configuration)")
        d = settings.model.database
        return Store.from_url(url, echo=False, pool_size=2,
                              limits=DbTimeouts(connect=d.connect_timeout,
                                                statement=d.statement_timeout,
                                                pool=d.pool_timeout))

    def close(self) -> None:
        store = self._memo.get("store")
        if store is not None and not isinstance(store, CascadeError):
            store.dispose()
