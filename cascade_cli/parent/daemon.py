"""``cascade serve-parent``: the HTTP app on uvicorn plus the background loops.

Loops: the reaper (every ``parent.reaper_interval``), the Scheduler (``parent.scheduler.enabled``)
and the Notifier (``parent.notify.enabled``). Signals only set flags (uvicorn's handler, plus
waking long polls so they answer "no work" at once); the loops and the server then wind down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

from cascade_cli import PROTOCOL_VERSION, __version__, eventloop
from cascade_cli.clock import Clock
from cascade_cli.config import Settings
from cascade_cli.domain.notify import Notifier
from cascade_cli.domain.presence import Presence, log_transitions
from cascade_cli.domain.reaper import reap_expired
from cascade_cli.domain.scheduler import Scheduler
from cascade_cli.store.engine import Store
from cascade_cli.web import adapters, http_protocol
from cascade_cli.web.app import AppState, create_app

log = logging.getLogger("cascade.parent")


@dataclass(frozen=True)
class DaemonOptions:
    host: str
    port: int
    scheduler: bool = True
    notifier: bool = True
    graceful_timeout: float = 10.0


class _Server(uvicorn.Server):
    """uvicorn's server that also ends open long polls as soon as a signal arrives."""

    on_exit: Callable[[], None] | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.on_exit is not None:
            self.on_exit()
        super().handle_exit(sig, frame)


async def reaper_loop(state: AppState, stop: asyncio.Event) -> None:
    interval = state.settings.parent.reaper_interval
    offline_after = state.settings.parent.offline_after
    presence = Presence()
    log.info("reaper started (every %gs)", interval)
    while not stop.is_set():
        try:
            snapshot = await state.db.run(
                lambda s, now: Presence.read(s, now, offline_after))
            log_transitions(presence.changes(snapshot), offline_after)
            result = await state.db.run(
                lambda s, now: reap_expired(s, now, state.settings))
            state.metrics.record_reap(result)
            if result.get("requeued"):
                state.waiters.notify()  # requeued work is claimable at once
            if result.get("requeued") or result.get("timed_out"):
                log.info("reaper: %s requeued, %s timed out", result.get("requeued"),
                         result.get("timed_out"))
        except Exception:  # a database outage must not kill the loop
            log.exception("reaper pass failed; retrying in %gs", interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
    log.info("reaper stopped")


def startup_line(opts: DaemonOptions, port: int, store: Store) -> str:
    shown = opts.host if ":" not in opts.host else f"[{opts.host}]"
    return (f"cascade parent {__version__} listening on http://{shown}:{port} "
            f"(database {store.masked_url}, protocol {PROTOCOL_VERSION})")


async def serve(store: Store, clock: Clock, settings: Settings, opts: DaemonOptions,
                announce: Callable[[str], None]) -> None:
    app = create_app(store, clock, settings)
    state: AppState = app.state.cascade
    eventloop.freeze_long_lived()  # the app lives as long as the process (see eventloop)
    config = uvicorn.Config(app, host=opts.host, port=opts.port, log_config=None,
                            access_log=False, lifespan="off", server_header=False,
                            timeout_graceful_shutdown=max(1, round(opts.graceful_timeout)),
                            limit_concurrency=None, backlog=2048,
                            http=http_protocol.protocol_class(),
                            # X-Forwarded-For/-Proto only from the configured reverse proxies
                            # (uvicorn's default trusts 127.0.0.1: any local client could then
                            # pick the address the auth-failure throttle counts).
                            proxy_headers=bool(settings.parent.trusted_proxies),
                            forwarded_allow_ips=list(settings.parent.trusted_proxies))
    server = _Server(config)
    loop = asyncio.get_running_loop()
    def on_exit() -> None:
        loop.call_soon_threadsafe(state.waiters.shutdown)

    server.on_exit = on_exit

    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(reaper_loop(state, stop))]
    if opts.scheduler and settings.parent.scheduler.enabled:
        # A cron run wakes this process's long-polling children at once, like an API dispatch.
        scheduler = Scheduler(store, clock, settings, on_dispatch=state.waiters.notify_threadsafe,
                              metrics=state.metrics)
        tasks.append(asyncio.create_task(scheduler.run(stop)))
    if opts.notifier and settings.parent.notify.enabled:
        notifier = Notifier(store, clock, settings, metrics=state.metrics)
        tasks.append(asyncio.create_task(notifier.run(stop)))

    async def announce_when_bound() -> None:
        while not server.started and not server.should_exit:
            await asyncio.sleep(0.02)
        if server.started:
            announce(startup_line(opts, adapters.bound_port(server, opts.port), store))

    tasks.append(asyncio.create_task(announce_when_bound()))

    def _after_serve(signum: int, frame: Any) -> None:
        server.handle_exit(signum, frame)

    # uvicorn restores these after serve() and re-raises the signal it caught: keep that
    # re-raise harmless (the server is already stopping) instead of a KeyboardInterrupt.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _after_serve)
    try:
        await server.serve()
    finally:
        state.waiters.shutdown()
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=opts.graceful_timeout)
        for t in pending:
            t.cancel()
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                log.error("background task failed: %r", t.exception())
    log.info("parent stopped")


def run(store: Store, clock: Clock, settings: Settings, opts: DaemonOptions,
        announce: Callable[[str], None] | None = None) -> None:
    def _print(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def _early_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # A SIGTERM before uvicorn installs its own handlers still ends the process cleanly.
    signal.signal(signal.SIGTERM, _early_term)
    eventloop.run(serve(store, clock, settings, opts, announce or _print))
