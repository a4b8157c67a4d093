"""serve-parent (not built yet)."""

from __future__ import annotations

import typer

from cascade_cli.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    @app.command("serve-parent", help="Run the parent HTTP daemon. (not built yet)")
    def serve_parent() -> None:
        raise NotBuiltError("cascade serve-parent is not built yet")
