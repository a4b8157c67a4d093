"""Message tasks (not built yet)."""

from __future__ import annotations

import typer

from cascade_cli.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    tasks_app = typer.Typer(help="Manage message tasks.")
    app.add_typer(tasks_app, name="tasks")

    @tasks_app.command("list")
    def list_() -> None:
        raise NotBuiltError("cascade tasks is not built yet")
