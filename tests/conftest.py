"""Shared fixtures: clocks, settings, and migrated stores on every supported database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cascade_cli.clock import FakeClock
from cascade_cli.config import Settings, load_settings
from cascade_cli.store import migrate
from cascade_cli.store.engine import Store
from tests.dbservers import fresh_database

if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("COLUMNS") == "80":
    # pytest-xdist gives its workers COLUMNS=80; a plain run leaves it unset. Tests that read
    # captured tables expect the unset case (the CLI then renders 200 wide); tests that need
    # a width set their own.
    del os.environ["COLUMNS"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Defaults with the data dir in tmp_path (no config file, no user environment)."""
    return load_settings(environ={}, cwd=tmp_path, overrides={"data_dir": str(tmp_path / "data")})


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cascade.db'}"


@contextmanager
def migrated_store(url: str) -> Iterator[Store]:
    s = Store.from_url(url)
    migrate.upgrade(s)
    try:
        yield s
    finally:
        s.dispose()


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    """A migrated SQLite store (the default database)."""
    with migrated_store(sqlite_url) as s:
        yield s


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mysql", marks=pytest.mark.mysql)])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL on each of SQLite, PostgreSQL and MariaDB."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'any.db'}"
        return
    with fresh_database(request.param) as url:
        yield url


@pytest.fixture
def any_store(any_db_url: str) -> Iterator[Store]:
    with migrated_store(any_db_url) as s:
        yield s


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database("postgres") as url:
        yield url


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    """A migrated PostgreSQL store (tests of PostgreSQL's own paths)."""
    with migrated_store(pg_url) as s:
        yield s
