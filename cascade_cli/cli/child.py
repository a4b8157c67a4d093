"""``cascade run-child`` (the child daemon) and ``cascade demo`` (the whole system, locally)."""

import logging
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from cascade_cli.cli.context import get_ctx
from cascade_cli.cli.lazy import lazy
from cascade_cli.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from cascade_cli import client, config, eventloop, logging_setup
    from cascade_cli.child import metrics as child_metrics
    from cascade_cli.child import spool, transport, worker
    from cascade_cli.config import Settings
    from cascade_cli.demo import runner as demo_runner
else:
    client = lazy("cascade_cli.client")
    config = lazy("cascade_cli.config")
    eventloop = lazy("cascade_cli.eventloop")
    logging_setup = lazy("cascade_cli.logging_setup")
    child_metrics = lazy("cascade_cli.child.metrics")
    spool = lazy("cascade_cli.child.spool")
    transport = lazy("cascade_cli.child.transport")
    worker = lazy("cascade_cli.child.worker")
    demo_runner = lazy("cascade_cli.demo.runner")

NOT_INITIALISED = "级联客户端未初始化"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def check_child_config(settings: "Settings") -> None:
    """Refuse a configuration that cannot run a child, naming every bad key and its fix.

    This is the troubleshooting guide's problem 1 (``级联客户端未初始化``): the original child
    started anyway and failed later with that message; we stop at once and say why.
    """
    problems = config.child_config_problems(settings)
    if not problems:
        return
    source = settings.source
    where = f"{source.path} ({source.reason})" if source.path else \
        "built-in defaults (no config file found: pass --config PATH, set CASCADE_CONFIG, " \
        "or put config.yaml in the current folder)"
    lines = "\n".join(f"  - {key}: {fix}" for key, fix in problems)
    raise ConfigError(
        f"{NOT_INITIALISED} (cascade client not initialised): this configuration cannot run a "
        f"child; {len(problems)} key(s) missing or wrong in {where}:\n{lines}",
        key=problems[0][0],
        hint="on the parent run 'cascade init --child NAME' and paste the printed cascade: "
             "block into this host's config.yaml; 'cascade doctor' checks the result")


def run_child(
    ctx: typer.Context,
    burst: Annotated[bool, typer.Option(
        "--burst", help="Process until no work is left, then exit (cron, tests).")] = False,
    max_allocations: Annotated[int | None, typer.Option(
        "--max-allocations", min=1, metavar="N",
        help="Stop claiming after N allocations; exit when they are done.")] = None,
    log_format: Annotated[LogFormat | None, typer.Option(
        "--log-format", case_sensitive=False,
        help="text (default: log.format) or json (one object per line).")] = None,
) -> None:
    """Run a child daemon: heartbeat, claim allocations, fetch feeds, report results.

    Needs the guide's cascade: block (enabled: true, node_type: child, parent_api_url,
    api_key, api_secret). Without it the command stops with '级联客户端未初始化' and the list
    of keys to fix. First SIGTERM/SIGINT drains (finishes or releases held work within
    child.drain_timeout), a second one exits at once.

    Exit codes: 0 stopped cleanly, 1 refused by the parent or failed, 2 configuration error.
    """
    a = get_ctx(ctx)
    settings = a.settings
    check_child_config(settings)
    logging_setup.setup_logging(settings.log.level,
                                log_format.value if log_format else settings.log.format)
    try:
        held = spool.Spool(settings.spool_path)
    except spool.SpoolBusy:
        raise UsageError(
            f"another run-child already uses the spool {settings.spool_path}",
            hint="give each child process its own child.spool_path (or data_dir)") from None
    except OSError as exc:
        raise ConfigError(f"child.spool_path: cannot open {settings.spool_path}: {exc}",
                          key="child.spool_path") from exc
    c = settings.cascade
    parent = client.AsyncParentClient(
        c.parent_api_url or "", c.api_key or "", c.api_secret or "", auth_mode=c.auth_mode,
        clock=a.clock, timeout=max(10.0, settings.child.fetch_timeout),
        retry_log_level=logging.DEBUG,  # the worker logs an outage once, not every retry
        user_agent=settings.child.user_agent, transport=transport.transport_for_parent(settings.child.transport))
    metrics, metrics_server = None, None
    if settings.child.metrics_port:
        metrics = child_metrics.ChildMetrics()
        where = f"{settings.child.metrics_host}:{settings.child.metrics_port}"
        try:
            metrics_server = metrics.serve(settings.child.metrics_host,
                                           settings.child.metrics_port)
        except OSError as exc:
            held.close()
            raise ConfigError(f"child.metrics_port: cannot serve /metrics on {where}: "
                              f"{exc.strerror or exc}", key="child.metrics_port",
                              hint="choose a free port, or unset child.metrics_port"
                              ) from None
        logging.getLogger("cascade.child").info("metrics on http://%s/metrics", where)
    daemon = worker.ChildWorker(settings, parent, held, burst=burst,
                                max_allocations=max_allocations, metrics=metrics)

    async def main() -> int:
        try:
            return await daemon.run()
        finally:
            await parent.aclose()

    try:
        code = eventloop.run(main())  # uvloop when installed
    finally:
        held.close()
        if metrics_server is not None:
            metrics_server.shutdown()
    raise typer.Exit(code)


def demo(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the summary as JSON alone on standard output.")] = False,
    keep: Annotated[bool, typer.Option(
        "--keep", help="Keep the temporary folder (configs, database, logs).")] = False,
    children: Annotated[int, typer.Option(
        "--children", min=1, max=8, help="Number of child processes.")] = 2,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=5, help="Give up after this many seconds.")] = 120.0,
) -> None:
    """Run the whole system locally and offline: a temporary SQLite parent, bundled sample
    feeds served from a local HTTP server, serve-parent and child processes; dispatch a
    task, watch it, print a summary.

    Exit codes: 0 every allocation completed, 1 something failed or timed out.
    """
    code = demo_runner.run_demo(get_ctx(ctx), as_json=as_json, keep=keep, n_children=children,
                    timeout=timeout)
    raise typer.Exit(code)
