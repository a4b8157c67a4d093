"""run-child and demo (not built yet)."""

from __future__ import annotations

import typer

from cascade_cli.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    @app.command("run-child", help="Run a child daemon. (not built yet)")
    def run_child() -> None:
        raise NotBuiltError("cascade run-child is not built yet")

    @app.command("demo", help="Run the whole system locally on demo feeds. (not built yet)")
    def demo() -> None:
        raise NotBuiltError("cascade demo is not built yet")
