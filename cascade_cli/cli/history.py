"""``cascade runs``, ``cascade runs show ID`` and ``cascade events``: what happened, from the
parent's database (run on the parent host). The queries live in ``store.history``;
``cli.main`` registers ``events`` as a top-level command."""

import json
import math
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from cascade_cli.cli.context import AppContext, get_ctx
from cascade_cli.cli.lazy import lazy
from cascade_cli.cli.options import JsonOpt, WideOpt
from cascade_cli.console import (
    compact_table,
    print_json,
    print_listing,
    relative_time,
    short_id,
    styled,
    wide_console,
)

if TYPE_CHECKING:
    from cascade_cli.store import history
else:
    history = lazy("cascade_cli.store.history")

# An hour between two looks is already more than anyone follows a log at; time.sleep cannot
# take 1e308 (OverflowError) and must not be handed inf or nan.
MAX_FOLLOW_INTERVAL = 3600.0


def _finite(value: float | None) -> float | None:
    """Click's range check lets nan through (every comparison with nan is false)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter("must be a finite number of seconds (0.1 to 3600)")
    return value


def _counts(by_status: dict[str, int]) -> str:
    return " ".join(f"{n} {k}" for k, n in sorted(by_status.items())) or "-"


def _run_outcome(r: dict[str, Any]) -> str:
    """``finished (1/8 feeds failed)``: the run's state and, when any, its failed feeds."""
    text = styled(r["status"])
    if r["failed_feeds"]:
        text += f" [red]({r['failed_feeds']}/{r['feeds_reported']} feeds failed)[/red]"
    return text


def _list_runs(app: AppContext, task: str | None, limit: int, offset: int, wide: bool,
               as_json: bool) -> None:
    now = app.clock.now()
    with app.ready_store().session() as s:
        task_id = history.resolve_task_id(s, task) if task else None
        page = history.list_runs(s, task_id=task_id, limit=limit, offset=offset)
    if as_json:
        print_listing(page.items, total=page.total, limit=limit, offset=offset)
        return
    if not page.items:
        app.out.print("No runs yet. Start one with: cascade dispatch (or give a task a cron)")
        return
    rows = [[short_id(r["id"], wide), escape(r["task_name"] or short_id(r["task_id"], wide)),
             r["trigger"], relative_time(r["created_at"], now, wide=wide), _run_outcome(r),
             _counts(r["allocations_by_status"]), r["new_articles"],
             _counts(r["deliveries"])] for r in page.items]
    out = wide_console(app.out, wide)
    out.print(compact_table(
        f"Runs ({len(page.items)} of {page.total})",
        ["run", "task", "trigger", "started", "status", "allocations", "new", "webhooks"],
        rows, squeeze=["allocations", "webhooks"], width=out.width))
    failed = sum(r["failed_feeds"] for r in page.items)
    if failed:
        app.out.print(f"[red]{failed} failed feeds[/red] in these runs; details: "
                      "cascade runs show RUN")


def _show_run(app: AppContext, ident: str, wide: bool, as_json: bool) -> None:
    now = app.clock.now()
    with app.ready_store().session() as s:
        data = history.run_detail(s, history.resolve_run_id(s, ident))
    if as_json:
        print_json(data)
        return
    out = wide_console(app.out, wide)
    out.print(f"[bold]Run {data['id']}[/bold] of task {escape(data['task_name'] or '')} "
              f"({data['task_id']})")
    out.print(f"  status {_run_outcome(data)}, trigger {data['trigger']}, scheduled for "
              f"{data['scheduled_for']}")
    out.print(f"  started {relative_time(data['created_at'], now)}"
              + (f", finished {relative_time(data['finished_at'], now)}"
                 if data["finished_at"] else ""))
    out.print(f"  new articles {data['new_articles']}, feeds reported "
              f"{data['feeds_reported']}, failed {data['failed_feeds']}")
    out.print(compact_table(
        "Allocations", ["id", "node", "status", "feeds", "try", "articles (new)", "error"],
        [[short_id(a["id"], wide), escape(a["node_name"] or "-"), _alloc_status(a),
          len(a["feed_ids"]), f"{a['attempt']}/{a['max_attempts']}",
          f"{a['article_count']} ({a['new_article_count']})",
          escape(a["error_message"] or "")] for a in data["allocation_list"]],
        squeeze=["error"], width=out.width))
    if data["feed_results"]:
        out.print(compact_table(
            "Feed results", ["feed", "node", "status", "articles (new)", "ms", "error"],
            [[escape(r["feed_id"]), escape(r["node_name"] or "-"), styled(r["status"]),
              f"{r['article_count']} ({r['new_article_count']})", r["duration_ms"] or "",
              escape(r["error"] or "")] for r in data["feed_results"]],
            squeeze=["error"], width=out.width))
    if data["delivery_list"]:
        out.print(compact_table(
            "Webhook deliveries", ["id", "feed", "status", "attempts", "code", "error"],
            [[short_id(d["id"], wide), escape(d["feed_id"] or "-"), styled(d["status"]),
              f"{d['attempts']}/{d['max_attempts']}", d["last_status_code"] or "",
              escape(d["last_error"] or "")] for d in data["delivery_list"]],
            squeeze=["error"], width=out.width))


def _alloc_status(a: dict[str, Any]) -> str:
    """``completed (2/8 failed)`` when some of an allocation's feeds failed."""
    text = styled(a["status"])
    summary = a.get("result_summary") or {}
    failed = summary.get("failed") if isinstance(summary, dict) else None
    if failed:
        text += f" [red]({failed}/{summary.get('feeds', len(a['feed_ids']))} failed)[/red]"
    return text


def _event_line(e: dict[str, Any], wide: bool) -> str:
    who = e["node_name"] or (short_id(e["node_id"], wide) if e["node_id"] else "-")
    parts = [e["created_at"], styled(e["status"]), escape(e["operation"]), f"node={escape(who)}"]
    if e["task_id"]:  # the name operators gave it; the id only for a task deleted since
        task = e.get("task_name") or short_id(e["task_id"], wide)
        parts.append(f"task={escape(task)}")
    if e["allocation_id"]:
        parts.append(f"allocation={short_id(e['allocation_id'], wide)}")
    if e["count"]:
        parts.append(f"count={e['count']}")
    if e["error"]:
        error = e["error"] if wide else e["error"].splitlines()[0][:60]
        parts.append(f"[red]{escape(error)}[/red]")
    return "  ".join(parts)


app = typer.Typer(name="runs", help="Runs of message tasks: what each did (cascade runs, "
                                    "cascade runs show ID).", invoke_without_command=True)


@app.callback()
def runs(ctx: typer.Context,
         task: Annotated[str | None, typer.Option("--task", help="Task id or name.")] = None,
         limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
         offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
         wide: WideOpt = False, as_json: JsonOpt = False) -> None:
    """List runs, newest first: allocations by status, failed feeds, new articles,
    webhook deliveries. 'cascade runs show ID' tells one in full."""
    if ctx.invoked_subcommand is None:
        _list_runs(get_ctx(ctx), task, limit, offset, wide, as_json)


@app.command("list")
def list_(ctx: typer.Context,
          task: Annotated[str | None, typer.Option("--task", help="Task id or name.")] = None,
          limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
          offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
          wide: WideOpt = False, as_json: JsonOpt = False) -> None:
    """List runs (the same as plain 'cascade runs')."""
    _list_runs(get_ctx(ctx), task, limit, offset, wide, as_json)


@app.command("show")
def show(ctx: typer.Context,
         run: Annotated[str, typer.Argument(help="Run id, or the 8 characters tables show.",
                                            show_default=False)],
         wide: WideOpt = False, as_json: JsonOpt = False) -> None:
    """One run in full: allocations, per-feed results and errors, webhook deliveries."""
    _show_run(get_ctx(ctx), run, wide, as_json)


def events(ctx: typer.Context,
           node: Annotated[str | None, typer.Option("--node", help="Node name or id.")]
           = None,
           limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 50,
           follow: Annotated[bool, typer.Option(
               "--follow", "-f", help="Keep printing new events until Ctrl-C (with "
               "--json: one JSON object per line).")] = False,
           interval: Annotated[float, typer.Option(
               "--interval", min=0.1, max=MAX_FOLLOW_INTERVAL, callback=_finite,
               help="Seconds between two looks with --follow (0.1 to 3600).")]
           = 1.0,
           wide: WideOpt = False, as_json: JsonOpt = False) -> None:
    """The event log (the API's /sync-logs): dispatches, claims, completions, lease
    expiries, notifications, node changes; newest last."""
    a = get_ctx(ctx)
    store = a.ready_store()
    with store.session() as s:
        node_id = history.resolve_node_id(s, node) if node else None
        page = history.list_events(s, node_id=node_id, limit=limit)
    items = list(reversed(page.items))  # oldest first, as a log reads
    if as_json and not follow:
        print_listing(items, total=page.total, limit=limit, offset=0)
        return
    def emit(batch: list[dict[str, Any]]) -> None:
        for e in batch:
            if as_json:
                sys.stdout.write(json.dumps(e, ensure_ascii=False, default=str) + "\n")
            else:
                a.out.print(_event_line(e, wide), highlight=False, soft_wrap=True)
        sys.stdout.flush()

    emit(items)
    if not follow:
        if not items:
            a.out.print("No events yet.")
        return
    last = max((e["id"] for e in items), default=0)
    try:
        while True:
            time.sleep(interval)
            with store.session() as s:
                new = history.list_events(s, node_id=node_id, after_id=last,
                                          limit=1000).items
            if new:
                emit(new)
                last = new[-1]["id"]
    except KeyboardInterrupt:
        pass
