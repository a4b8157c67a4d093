"""Per-test databases on SQLite, PostgreSQL and MariaDB/MySQL.

PostgreSQL (127.0.0.1:5432, trust auth) and MariaDB (127.0.0.1:3306, root, no password) are
used when reachable. Outside CI a missing server skips with the reason; with CI=true it fails,
so a server that is down can never hide a test.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text

PG_ADMIN_URL = os.environ.get("CASCADE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MYSQL_ADMIN_URL = os.environ.get("CASCADE_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_server(kind: str) -> None:
    host, port = ("127.0.0.1", 5432) if kind == "postgres" else ("127.0.0.1", 3306)
    if not _reachable(host, port):
        reason = f"{kind} server not reachable on {host}:{port}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} - .ci/run must start it (CI=true never skips)")
        pytest.skip(reason)


@contextmanager
def fresh_database(kind: str) -> Iterator[str]:
    """Create an empty database, yield its URL, drop it afterwards."""
    if kind == "sqlite":
        raise ValueError("use tmp_path for sqlite")
    require_server(kind)
    name = f"cascade_t_{uuid.uuid4().hex[:12]}"
    if kind == "postgres":
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    else:
        admin = create_engine(MYSQL_ADMIN_URL)
        with admin.connect() as c:
            c.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        url = MYSQL_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as c:
            if kind == "postgres":
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                c.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
                c.commit()
        admin.dispose()
