"""dispatch and allocations (not built yet)."""

from __future__ import annotations

import typer

from cascade_cli.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    @app.command("dispatch", help="Create runs and allocations now. (not built yet)")
    def dispatch() -> None:
        raise NotBuiltError("cascade dispatch is not built yet")

    @app.command("allocations", help="List allocations. (not built yet)")
    def allocations() -> None:
        raise NotBuiltError("cascade allocations is not built yet")
