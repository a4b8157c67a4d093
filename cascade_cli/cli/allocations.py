"""``cascade dispatch`` and ``cascade allocations`` (run on the parent host)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live

from cascade_cli.cli.context import get_ctx
from cascade_cli.console import print_json, styled, table
from cascade_cli.errors import EXIT_FAILED
from cascade_cli.parent.dispatch import dispatch as run_dispatch
from cascade_cli.store import allocations as alloc_repo
from cascade_cli.store.models import ALLOCATION_STATES


def _alloc_table(rows: list[dict[str, Any]], total: int) -> Any:
    return table(f"Allocations ({len(rows)} of {total})",
                 ["id", "task", "node", "status", "feeds", "attempt", "articles (new)", "lease / done", "error"],
                 [[r["id"], r["task_name"] or r["task_id"], r["node_name"] or "-",
                   styled(r["status"]), len(r["feed_ids"]), f"{r['attempt']}/{r['max_attempts']}",
                   f"{r['article_count']} ({r['new_article_count']})",
                   r["completed_at"] or r["lease_expires_at"] or "-",
                   (r["error_message"] or "")[:50]] for r in rows])


def register(app: typer.Typer) -> None:
    @app.command("dispatch")
    def dispatch(ctx: typer.Context,
                 task: Annotated[str | None, typer.Option("--task", help="Task id or name (default: every enabled task).")] = None,
                 force: Annotated[bool, typer.Option("--force", help="Dispatch even if the previous run is unfinished, or the task is disabled.")] = False,
                 as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """Create a run per task and split its feeds into allocations for the children.

        Prints what was created per task and why anything was skipped. Exit code 1 when
        nothing could be dispatched.
        """
        app_ctx = get_ctx(ctx)
        with app_ctx.ready_store().session() as s:
            result = run_dispatch(s, app_ctx.clock.now(), app_ctx.settings, task_id=task, force=force)
        data = result.to_dict()
        if as_json:
            print_json(data)
        else:
            out = app_ctx.out
            if result.runs:
                out.print(table("Dispatched", ["task", "run", "feeds", "allocations", "targeted"],
                                [[r.task_name, r.schedule_run_id, r.feeds, r.allocations,
                                  ", ".join(f"{k}:{v}" for k, v in r.targeted.items()) or "-"]
                                 for r in result.runs]))
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

    @app.command("allocations")
    def allocations(ctx: typer.Context,
                    task: Annotated[str | None, typer.Option("--task", help="Task id.")] = None,
                    node: Annotated[str | None, typer.Option("--node", help="Node id or name.")] = None,
                    status: Annotated[str | None, typer.Option("--status", help="|".join(ALLOCATION_STATES))] = None,
                    run: Annotated[str | None, typer.Option("--run", help="schedule_run_id.")] = None,
                    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
                    offset: Annotated[int, typer.Option(min=0)] = 0,
                    watch: Annotated[bool, typer.Option("--watch", help="Refresh live until Ctrl-C.")] = False,
                    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes with --watch.")] = 2.0,
                    count: Annotated[int, typer.Option("--count", min=0, help="With --watch: stop after N refreshes (0: until Ctrl-C).")] = 0,
                    as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """List allocations, newest first, with counts by status."""
        app_ctx = get_ctx(ctx)
        if status and status not in ALLOCATION_STATES:
            raise typer.BadParameter(f"must be one of {', '.join(ALLOCATION_STATES)}", param_hint="--status")
        store = app_ctx.ready_store()

        def fetch() -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
            with store.session() as s:
                rows, total = alloc_repo.list_allocations(
                    s, task_id=task, node_id=node, status=status, schedule_run_id=run,
                    limit=limit, offset=offset)
                counts = alloc_repo.pending_counts(s, app_ctx.clock.now(), app_ctx.settings)
            return rows, total, counts

        def render() -> Any:
            rows, total, counts = fetch()
            summary = (f"pending {counts['pending']}  in progress {counts['in_progress']}  "
                       f"completed today {counts['completed_today']}  failed today "
                       f"{counts['failed_today']}  online nodes {counts['online_nodes']}")
            return Group(_alloc_table(rows, total), summary)

        if as_json:
            rows, total, _ = fetch()
            print_json({"list": rows, "total": total, "page": {"limit": limit, "offset": offset}})
            return
        if not watch:
            app_ctx.out.print(render())
            return
        try:
            with Live(render(), console=app_ctx.out, refresh_per_second=4) as live:
                done = 0
                while not count or done < count:
                    time.sleep(interval)
                    live.update(render())
                    done += 1
        except KeyboardInterrupt:
            pass
