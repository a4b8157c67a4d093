"""Everything checks share, built once per doctor run and memoised (no module state)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cascade_cli.clock import Clock, SystemClock
from cascade_cli.config import (
    ConfigSource,
    Settings,
    env_overrides,
    load_settings,
    locate_config,
)
from cascade_cli.errors import CascadeError, ConfigError
from cascade_cli.store.engine import Store, normalise_db_url
from cascade_cli.store.timeouts import DbTimeouts

T = TypeVar("T")

# Keys only a child's configuration has, and sections only a parent's has.
CHILD_KEYS = ("parent_api_url", "api_key", "api_secret")
PARENT_KEYS = ("database", "parent")


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
        """parent | child | unknown: ``--role``, else ``cascade.node_type``, else inferred from
        the keys present (see ``role_reason``)."""
        return self.memo("role", self._decide_role)[0]

    @property
    def role_reason(self) -> str:
        """How the role was decided, in words for the operator."""
        return self.memo("role", self._decide_role)[1]

    def _decide_role(self) -> tuple[str, str]:
        # Guessing "parent" on a child host sent operators to 'cascade init', which creates a
        # parent database there: when nothing says which host this is, say so instead.
        if self.role_override:
            return self.role_override, "given with --role"
        raw = self._raw_data()
        block = raw.get("cascade")
        cascade: dict[str, Any] = block if isinstance(block, dict) else {}
        node_type = cascade.get("node_type")
        if node_type in ("parent", "child"):
            return str(node_type), "cascade.node_type"
        child_keys = [f"cascade.{k}" for k in CHILD_KEYS if cascade.get(k)]
        parent_keys = [k for k in PARENT_KEYS if raw.get(k)]
        if child_keys and not parent_keys:
            return "child", ("inferred from " + ", ".join(child_keys)
                             + " (cascade.node_type is not set)")
        if parent_keys and not child_keys:
            return "parent", ("inferred from the " + ", ".join(f"{k}:" for k in parent_keys)
                              + " section(s) (cascade.node_type is not set)")
        if not child_keys and not parent_keys:
            db = self._default_parent_db()
            if db is not None:
                return "parent", f"inferred from the parent database at {db} " \
                                 "(cascade.node_type is not set)"
            return "unknown", "cascade.node_type is not set and no key tells (no " \
                              "parent_api_url/api_key of a child, no database:/parent: section " \
                              "and no parent database)"
        return "unknown", ("cascade.node_type is not set and the keys disagree: "
                           + ", ".join(child_keys) + " (a child) but also "
                           + ", ".join(f"{k}:" for k in parent_keys) + " (a parent)")

    def _raw_data(self) -> dict[str, Any]:
        """The file as written plus the CASCADE_* variables, before validation (the role must
        be told even from a file that does not validate)."""
        def build() -> dict[str, Any]:
            data: dict[str, Any] = {}
            path = self.source.path
            if path is not None and path.is_file():
                # Unreadable or malformed: the config.parse check reports it with the fix;
                # here the role is then told from the environment alone.
                with contextlib.suppress(OSError, UnicodeDecodeError, yaml.YAMLError):
                    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
                    if isinstance(loaded, dict):
                        data = loaded
            for path_, (_var, value) in env_overrides(self.environ).items():
                head, _, rest = path_.partition(".")
                if rest:
                    section = data.setdefault(head, {})
                    if isinstance(section, dict):
                        section[rest.split(".")[0]] = value
                else:
                    data[head] = value
            return data
        return self.memo("raw", build)

    def _default_parent_db(self) -> Path | None:
        settings = self.settings
        if settings is None or settings.model.database.url:
            return None
        db = settings.data_dir / "cascade.db"
        return db if db.is_file() else None

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
