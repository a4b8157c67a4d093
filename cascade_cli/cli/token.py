"""Admin tokens (not built yet)."""

from __future__ import annotations

import typer

from cascade_cli.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    token_app = typer.Typer(help="Admin bearer tokens for the parent API.")
    app.add_typer(token_app, name="token")

    @token_app.command("create")
    def create() -> None:
        raise NotBuiltError("cascade token create is not built yet")
