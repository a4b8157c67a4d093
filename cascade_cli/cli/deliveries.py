"""deliveries and purge (not built yet)."""

from __future__ import annotations

import typer

from cascade_cli.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    d_app = typer.Typer(help="Webhook notification outbox.")
    app.add_typer(d_app, name="deliveries")

    @d_app.command("list")
    def list_() -> None:
        raise NotBuiltError("cascade deliveries is not built yet")
