"""Feeds (not built yet)."""

from __future__ import annotations

import typer

from cascade_cli.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    feeds_app = typer.Typer(help="Manage feeds (公众号 / RSS sources).")
    app.add_typer(feeds_app, name="feeds")

    @feeds_app.command("list")
    def list_() -> None:
        raise NotBuiltError("cascade feeds is not built yet")
