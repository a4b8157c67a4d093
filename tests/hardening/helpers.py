"""Set-up for the hardening tests' real ``serve-parent`` processes, done in-process (three
``cascade`` CLI processes would cost seconds per test)."""

from __future__ import annotations

from pathlib import Path

from cascade_cli.clock import SystemClock
from cascade_cli.config import load_settings
from cascade_cli.domain import tokens
from cascade_cli.store import migrate, nodes
from cascade_cli.store.engine import Store
from tests.parent_http.procs import admin_headers, plain_headers


def setup_parent(config: Path, direct_url: str | None = None,
                 children: tuple[str, ...] = ("c1",)) -> tuple[dict[str, str],
                                                             dict[str, dict[str, str]]]:
    """Schema, nodes and an admin token for ``config``'s database (or ``direct_url``):
    (admin headers, {child name: node headers})."""
    settings = load_settings(config, environ={})
    store = Store.from_url(direct_url or settings.database_url)
    try:
        migrate.upgrade(store)
        now = SystemClock().now()
        secret = tokens.ensure_secret(settings.admin_token_secret_file)
        heads = {}
        with store.session() as s:
            for name in children:
                _node, creds = nodes.create_node(s, now, name)
                heads[name] = plain_headers({"api_key": creds.api_key,
                                             "api_secret": creds.api_secret})
            token, _row = tokens.issue(s, now, secret, ttl=3600)
    finally:
        store.dispose()
    return admin_headers(token), heads
