"""doctor (not built yet)."""

from __future__ import annotations

import typer

from cascade_cli.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    @app.command("doctor", help="Diagnose this parent or child. (not built yet)")
    def doctor() -> None:
        raise NotBuiltError("cascade doctor is not built yet")
