"""Entry point of the ``cascade`` command and its single error boundary.

Exit codes: 0 success, 1 a check or operation failed, 2 usage or configuration error.
An expected error (``CascadeError``) is one red line plus its fix; anything else is a bug and
shows a traceback.
"""

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from cascade_cli import PROTOCOL_VERSION, __version__
from cascade_cli.cli import (
    allocations,
    child,
    config_cmd,
    deliveries,
    doctor,
    feeds,
    history,
    import_cmd,
    init_cmd,
    nodes,
    serve,
    tasks,
    token,
)
from cascade_cli.cli.context import AppContext
from cascade_cli.cli.helptext import show_flags_without_type, tidy_command
from cascade_cli.console import make_console
from cascade_cli.errors import CascadeError

HELP = """Cascade: distribute feed crawling from one parent to many children.

\b
Parent host:  cascade init, init --child NAME, serve-parent, dispatch,
              allocations, doctor
Child host:   cascade run-child, doctor
Try it all:   cascade demo

Configuration: --config PATH, else $CASCADE_CONFIG, else ./config.yaml, else defaults;
CASCADE_* environment variables override single keys (every key: cascade config example).

Exit codes: 0 success, 1 a check or operation failed, 2 usage or configuration error.
"""

def report_error(exc: CascadeError) -> None:
    """One red line (plus the fix) on standard error; never a traceback."""
    err = make_console(stderr=True)
    err.print(f"[red]error:[/red] {escape(exc.message)}", markup=True, highlight=False)
    if exc.hint:
        err.print(f"[dim]fix:[/dim] {escape(exc.hint)}", highlight=False)


EXIT_CODES = "Exit codes: 0 success, 1 operation failed, 2 usage or configuration error."
# Help for options that mean the same everywhere, when a command gives none.
COMMON_HELP = {"--json": "Print JSON alone on standard output (for scripts).",
               "--limit": "Show at most this many rows.",
               "--offset": "Skip this many rows first (paging)."}
# Commands whose exit codes mean something more specific than EXIT_CODES.
SPECIFIC_EXIT_CODES = {
    "serve-parent": "Exit codes: 0 stopped by SIGTERM/SIGINT, 1 could not start (address in "
                    "use, database unreachable or without schema), 2 configuration error.",
}


def _document(cmd: Any, name: str) -> None:
    """Every command's --help states its exit codes and what --json does (one place, so a new
    command cannot forget it)."""
    tidy_command(cmd)  # paragraphs wrap at the terminal's width, not at the source's
    for sub_name, sub in (getattr(cmd, "commands", None) or {}).items():
        _document(sub, sub_name)
    if getattr(cmd, "commands", None) is not None:
        return
    text = f"{cmd.help or ''} {cmd.epilog or ''}"
    if "Exit code" not in text:
        cmd.epilog = SPECIFIC_EXIT_CODES.get(name, EXIT_CODES)
    for param in cmd.params:
        for opt in getattr(param, "opts", ()):
            if opt in COMMON_HELP and not getattr(param, "help", None):
                param.help = COMMON_HELP[opt]


class CascadeGroup(TyperGroup):
    """The root group is the error boundary, so ``cascade``, ``python -m cascade_cli`` and
    typer's ``CliRunner`` all turn an expected error into the same line and exit code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tidy_command(self)
        for name, sub in self.commands.items():
            _document(sub, name)

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except CascadeError as exc:
            report_error(exc)
            raise typer.Exit(exc.exit_code) from None


show_flags_without_type()
# Completion: `cascade --install-completion` (bash, zsh, fish, PowerShell).
app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=True, cls=CascadeGroup,
                  rich_markup_mode="rich", pretty_exceptions_show_locals=False,
                  context_settings={"help_option_names": ["-h", "--help"]})


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


# Top-level commands, in the order `cascade --help` lists them (then the groups).
app.command("init")(init_cmd.init)
app.command("list-credentials")(init_cmd.list_credentials)
app.command("serve-parent", help=serve.HELP)(serve.serve_parent)
app.command("dispatch")(allocations.dispatch)
app.command("allocations")(allocations.allocations)
app.command("run-child")(child.run_child)
app.command("demo")(child.demo)
app.command("doctor", help=doctor.HELP)(doctor.doctor)
app.command("purge")(deliveries.purge)
app.command("events")(history.events)
# Command groups: each module defines its typer app (named) with its commands.
for group in (nodes.app, token.app, feeds.app, tasks.app, deliveries.app, config_cmd.app,
              history.app, import_cmd.app):
    app.add_typer(group)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point (``cascade`` and ``python -m cascade_cli``).

    Typer runs in standalone mode: it turns usage errors (exit 2), ``typer.Exit(code)``,
    aborts and Ctrl-C (130) into exit codes; ``CascadeGroup`` does the same for
    ``CascadeError``. Typer >= 0.2x vendors its own click, so ``click.*`` exceptions must not
    be caught here: they are not the ones typer raises.
    """
    try:
        app(args=argv, prog_name="cascade")
    except CascadeError as exc:  # raised outside a command invocation
        report_error(exc)
        sys.exit(exc.exit_code)
