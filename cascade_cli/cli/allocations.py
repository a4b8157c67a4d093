"""``cascade dispatch`` and ``cascade allocations`` (run on the parent host); ``cli.main``
registers both as top-level commands."""

import time
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape

from cascade_cli.cli.context import get_ctx
from cascade_cli.cli.lazy import lazy
from cascade_cli.console import (
    compact_table,
    print_json,
    print_listing,
    relative_time,
    short_id,
    styled,
    wide_console,
)
from cascade_cli.errors import EXIT_FAILED
from cascade_cli.store.constants import ALLOCATION_STATES

if TYPE_CHECKING:
    from cascade_cli.domain import dispatch as dispatching
    from cascade_cli.store import allocations as alloc_repo
    from cascade_cli.store import history
else:
    dispatching = lazy("cascade_cli.domain.dispatch")
    alloc_repo = lazy("cascade_cli.store.allocations")
    history = lazy("cascade_cli.store.history")


def _alloc_status(r: dict[str, Any]) -> str:
    """``completed (2/8 failed)`` when some of the allocation's feeds failed."""
    text = styled(r["status"])
    summary = r.get("result_summary")
    if not isinstance(summary, dict):
        return text
    failed = summary.get("failed")
    if failed:
        text += f" [red]({failed}/{summary.get('feeds') or len(r['feed_ids'])} failed)[/red]"
    return text


def _failed_feeds(r: dict[str, Any]) -> int:
    summary = r.get("result_summary")
    return int(summary.get("failed") or 0) if isinstance(summary, dict) else 0


def _when(r: dict[str, Any], now: datetime, wide: bool) -> str:
    """Done: when it finished; held: when its lease runs out; else when it was made."""
    if r["completed_at"]:
        return relative_time(r["completed_at"], now, wide=wide)
    if r["lease_expires_at"]:
        return "lease " + relative_time(r["lease_expires_at"], now, wide=wide)
    return relative_time(r["created_at"], now, wide=wide)


def _alloc_table(rows: list[dict[str, Any]], total: int, now: datetime, wide: bool,
                 width: int) -> Any:
    """Fits 100 columns: 8-character ids, relative times, the error cut to what is left."""
    return compact_table(
        f"Allocations ({len(rows)} of {total})",
        ["id", "task", "node", "status", "feeds", "try", "articles", "when", "error"],
        [[short_id(r["id"], wide), escape(r["task_name"] or short_id(r["task_id"], wide)),
          escape(r["node_name"] or "-"), _alloc_status(r), len(r["feed_ids"]),
          f"{r['attempt']}/{r['max_attempts']}",
          f"{r['article_count']} ({r['new_article_count']})", _when(r, now, wide),
          escape(r["error_message"] or "")] for r in rows],
        squeeze=["error"], width=width)


def dispatch(ctx: typer.Context,
             task: Annotated[str | None, typer.Option("--task", help="Task id or name (default: every enabled task).")] = None,
             force: Annotated[bool, typer.Option("--force", help="Dispatch even if the previous run is unfinished, or the task is disabled.")] = False,
             wide: Annotated[bool, typer.Option("--wide", help="Full run ids.")] = False,
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create a run per task and split its feeds into allocations for the children.

    Prints what was created per task and why anything was skipped. Exit code 1 when
    nothing could be dispatched.
    """
    app_ctx = get_ctx(ctx)
    with app_ctx.ready_store().session() as s:
        result = dispatching.dispatch(s, app_ctx.clock.now(), app_ctx.settings, task_id=task, force=force)
    data = result.to_dict()
    if as_json:
        print_json(data)
    else:
        out = wide_console(app_ctx.out, wide)
        if result.runs:
            # 8-character run ids: 'cascade runs show' and 'allocations --run' take them.
            out.print(compact_table(
                "Dispatched", ["task", "run", "feeds", "allocations", "targeted"],
                [[escape(r.task_name), short_id(r.schedule_run_id, wide), r.feeds,
                  r.allocations,
                  escape(", ".join(f"{k}:{v}" for k, v in r.targeted.items()) or "-")]
                 for r in result.runs],
                squeeze=[] if wide else ["task", "targeted"], width=out.width))
        for w in result.warnings:
            if w["missing_feeds"]:
                out.print(f"[yellow]warning:[/yellow] task {w['task_name']}: feeds not found "
                          f"(公众号不存在): {', '.join(w['missing_feeds'][:20])}")
            if w["disabled_feeds"]:
                out.print(f"[yellow]warning:[/yellow] task {w['task_name']}: feeds disabled: "
                          f"{', '.join(w['disabled_feeds'][:20])}")
        for sk in result.skipped:
            out.print(f"[yellow]skipped[/yellow] {sk.get('task_name') or sk['task_id']}: {sk['reason']}")
        out.print(result.message + f" (online nodes: {result.online_nodes})")
    if not result.runs:
        raise typer.Exit(EXIT_FAILED)


def allocations(ctx: typer.Context,
                task: Annotated[str | None, typer.Option("--task", help="Task id or name.")] = None,
                node: Annotated[str | None, typer.Option("--node", help="Node id or name.")] = None,
                status: Annotated[str | None, typer.Option("--status", help="|".join(ALLOCATION_STATES))] = None,
                run: Annotated[str | None, typer.Option("--run", help="Run id (or the 8 characters tables show).")] = None,
                limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
                offset: Annotated[int, typer.Option(min=0)] = 0,
                watch: Annotated[bool, typer.Option("--watch", help="Refresh live until Ctrl-C.")] = False,
                interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes with --watch.")] = 2.0,
                count: Annotated[int, typer.Option("--count", min=0, help="With --watch: stop after N refreshes (0: until Ctrl-C).")] = 0,
                wide: Annotated[bool, typer.Option("--wide", help="Full ids and ISO times.")] = False,
                as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List allocations, newest first, with counts by status."""
    app_ctx = get_ctx(ctx)
    if status and status not in ALLOCATION_STATES:
        raise typer.BadParameter(f"must be one of {', '.join(ALLOCATION_STATES)}", param_hint="--status")
    store = app_ctx.ready_store()
    with store.session() as s:
        task_id = history.resolve_task_id(s, task) if task else None
        run_id = history.resolve_run_id(s, run) if run else None
        node_id = history.resolve_node_id(s, node) if node else None

    def fetch() -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
        with store.session() as s:
            rows, total = alloc_repo.list_allocations(
                s, task_id=task_id, node_id=node_id, status=status, schedule_run_id=run_id,
                limit=limit, offset=offset)
            counts = alloc_repo.pending_counts(s, app_ctx.clock.now(), app_ctx.settings)
        return rows, total, counts

    out = wide_console(app_ctx.out, wide)

    def render() -> Any:
        rows, total, counts = fetch()
        failed_feeds = sum(_failed_feeds(r) for r in rows)
        summary = (f"pending {counts['pending']}  in progress {counts['in_progress']}  "
                   f"completed today {counts['completed_today']}  failed today "
                   f"{counts['failed_today']}  online nodes {counts['online_nodes']}  "
                   + (f"[red]failed feeds {failed_feeds}[/red]" if failed_feeds
                      else "failed feeds 0"))
        return Group(_alloc_table(rows, total, app_ctx.clock.now(), wide, out.width), summary)

    if as_json:
        rows, total, _ = fetch()
        print_listing(rows, total=total, limit=limit, offset=offset)
        return
    if not watch:
        out.print(render())
        return
    try:
        with Live(render(), console=out, refresh_per_second=4) as live:
            done = 0
            while not count or done < count:
                time.sleep(interval)
                live.update(render())
                done += 1
    except KeyboardInterrupt:
        pass
