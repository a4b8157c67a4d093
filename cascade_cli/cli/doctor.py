"""``cascade doctor``: diagnose this parent or child (the troubleshooting guide, automated).

Exit codes: 0 nothing failed, 1 a check failed, 2 doctor itself could not run (configuration
malformed, a check crashed, unknown check name) - it still reports what it could.
"""

from typing import TYPE_CHECKING, Annotated

import typer

from cascade_cli.cli.context import get_ctx
from cascade_cli.cli.lazy import lazy
from cascade_cli.console import make_console, print_json
from cascade_cli.errors import UsageError

if TYPE_CHECKING:
    from cascade_cli import doctor as doctoring
    from cascade_cli.doctor import render
else:
    doctoring = lazy("cascade_cli.doctor")
    render = lazy("cascade_cli.doctor.render")

HELP = """Diagnose this parent or child and print the fix for every problem found.

The role comes from --role, else cascade.node_type, else the keys present (parent_api_url /
api_key: a child; database: / parent: or an existing parent database: the parent); when
nothing tells, doctor says the role is unknown and how to set it.

\b
Checks:
  child:   config, parent address (DNS, TCP, HTTP path), credentials, clock skew, protocol,
           work waiting (without claiming), spool
  parent:  database and schema, nodes, tasks and feeds, pending/expired/stuck allocations,
           failed allocations and failure rates, notifications, the scheduler firing due
           cron runs, offline_after against the heartbeat interval, security
  all:     the role and how it was told, installation (imports, 'cascade' on PATH, which
           config file is found from where)

\b
Exit codes: 0 nothing failed, 1 a check failed, 2 doctor could not run (e.g. malformed config).
"""


def doctor(
    ctx: typer.Context,
    config: Annotated[str | None, typer.Option(
        "--config", "-c", help="Configuration file to diagnose (default: the global "
        "--config, then $CASCADE_CONFIG, then ./config.yaml).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON alone on standard "
                                          "output.")] = False,
    check: Annotated[list[str] | None, typer.Option(
        "--check", help="Run only this check or group (repeatable, or comma separated), "
        "e.g. --check child.http --check parent.tasks, or --check child.")] = None,
    role: Annotated[str | None, typer.Option(
        "--role", help="parent or child (default: cascade.node_type, else inferred from "
        "the keys present).")] = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0.1, max=120, help="Seconds to wait for each network step.")] = 5.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                          help="Show details of passing checks too.")] = False,
) -> None:
    if role is not None and role not in ("parent", "child"):
        raise UsageError(f"--role must be parent or child, got {role!r}")
    app_ctx = get_ctx(ctx)
    dctx = doctoring.DoctorContext(config_path=config or app_ctx.config_path,
                                   clock=app_ctx.clock, role_override=role, timeout=timeout)
    report = doctoring.run_doctor(dctx, check)
    if as_json:
        print_json(report.to_dict())
    else:
        render.render_table(report, make_console(), verbose=verbose)
    raise typer.Exit(report.exit_code)
