"""init and list-credentials (not built yet)."""

from __future__ import annotations

import typer

from cascade_cli.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    @app.command("init", help="Create or upgrade the database; --child NAME creates a child node. (not built yet)")
    def init() -> None:
        raise NotBuiltError("cascade init is not built yet")

    @app.command("list-credentials", help="List child nodes and their keys, never a secret. (not built yet)")
    def list_credentials() -> None:
        raise NotBuiltError("cascade list-credentials is not built yet")
