"""Entry point of the ``cascade`` command and its single error boundary.

Exit codes: 0 success, 1 a check or operation failed, 2 usage or configuration error.
An expected error (``CascadeError``) is one red line plus its fix; anything else is a bug and
shows a traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import click
import typer

from cascade_cli import PROTOCOL_VERSION, __version__
from cascade_cli.cli import (
    allocations,
    child,
    deliveries,
    doctor,
    feeds,
    init_cmd,
    nodes,
    serve,
    tasks,
    token,
)
from cascade_cli.cli.context import AppContext
from cascade_cli.console import make_console
from cascade_cli.errors import EXIT_USAGE, CascadeError

HELP = """Cascade: distribute feed crawling from one parent to many children.

\b
Parent host:  cascade init, init --child NAME, serve-parent, dispatch, allocations, doctor
Child host:   cascade run-child, doctor
Try it all:   cascade demo

\b
Configuration: --config PATH, else $CASCADE_CONFIG, else ./config.yaml, else defaults;
CASCADE_* environment variables override single keys (see config.example.yaml).

\b
Exit codes: 0 success, 1 a check or operation failed, 2 usage or configuration error.
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False,
                  rich_markup_mode="rich", context_settings={"help_option_names": ["-h", "--help"]})


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cascade {__version__} (protocol {PROTOCOL_VERSION})")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[str | None, typer.Option(
        "--config", "-c", help="YAML config file (default: $CASCADE_CONFIG, then ./config.yaml).",
        envvar=None)] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    ctx.obj = AppContext(config_path=config)
    ctx.call_on_close(ctx.obj.close)


for module in (init_cmd, nodes, serve, token, feeds, tasks, allocations, child, doctor,
               deliveries):
    module.register(app)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point: the one place expected errors become exit codes."""
    err = make_console(stderr=True)
    try:
        app(args=argv, standalone_mode=False)
    except CascadeError as exc:
        err.print(f"[red]error:[/red] {exc.message}", markup=True, highlight=False)
        if exc.hint:
            err.print(f"[dim]fix:[/dim] {exc.hint}", highlight=False)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
