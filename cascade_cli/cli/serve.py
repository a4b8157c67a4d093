"""``cascade serve-parent``: run the parent HTTP daemon."""

import contextlib
import socket
from typing import TYPE_CHECKING, Annotated

import typer

from cascade_cli.cli.context import get_ctx
from cascade_cli.cli.lazy import lazy
from cascade_cli.errors import CascadeError

if TYPE_CHECKING:
    from cascade_cli import logging_setup
    from cascade_cli.parent import daemon
else:
    logging_setup = lazy("cascade_cli.logging_setup")
    daemon = lazy("cascade_cli.parent.daemon")

HELP = ("Run the parent HTTP daemon (API for children and admins, reaper, scheduler, "
        "notifier). SIGTERM/SIGINT stop it cleanly.")


def check_bindable(host: str, port: int) -> None:
    """Refuse an address another process holds with one line (uvicorn would log an ERROR
    after the loops started and exit 3, a code the CLI does not document)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CascadeError(f"cannot listen on {host}:{port}: {exc.strerror}",
                           hint="set parent.host (or --host) to an address of this machine"
                           ) from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(addr)
        except OSError as exc:
            raise CascadeError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="stop the process that holds the port (is a parent already running?), "
                     "or choose another with --port / parent.port") from None


def serve_parent(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(
        "--host", help="Listen address (default parent.host, 0.0.0.0).")] = None,
    port: Annotated[int | None, typer.Option(
        "--port", min=0, max=65535,
        help="Listen port (default parent.port, 8001; 0 picks a free one).")] = None,
    no_scheduler: Annotated[bool, typer.Option(
        "--no-scheduler", help="Do not fire cron schedules in this process.")] = False,
    no_notifier: Annotated[bool, typer.Option(
        "--no-notifier", help="Do not send webhook notifications from this process.")
    ] = False,
) -> None:
    app_ctx = get_ctx(ctx)
    settings = app_ctx.settings
    logging_setup.setup_logging(settings.log.level, settings.log.format,
                                access_log=settings.log.access_log)
    store = app_ctx.ready_store()  # refuses a database without the current schema
    check_bindable(host or settings.parent.host,
                   settings.parent.port if port is None else port)
    opts = daemon.DaemonOptions(host=host or settings.parent.host,
                                port=settings.parent.port if port is None else port,
                                scheduler=not no_scheduler, notifier=not no_notifier)
    with contextlib.suppress(KeyboardInterrupt):  # a signal before the server took over
        daemon.run(store, app_ctx.clock, settings, opts)
