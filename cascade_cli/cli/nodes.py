"""Node lifecycle (not built yet)."""

from __future__ import annotations

import typer

from cascade_cli.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    nodes_app = typer.Typer(help="Manage child nodes: disable, enable, rotate, revoke, delete.")
    app.add_typer(nodes_app, name="nodes")

    @nodes_app.command("list")
    def list_() -> None:
        raise NotBuiltError("cascade nodes is not built yet")
