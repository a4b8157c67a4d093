"""``cascade tasks next``: the next fire times of the cron schedules (``cli/tasks.py`` adds
``next_`` to its ``tasks`` group)."""

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from cascade_cli.cli.context import get_ctx
from cascade_cli.cli.lazy import lazy
from cascade_cli.console import compact_table, print_listing, relative_time, wide_console

if TYPE_CHECKING:
    from cascade_cli.domain import scheduler
else:
    scheduler = lazy("cascade_cli.domain.scheduler")


def next_(ctx: typer.Context,
          task: Annotated[str | None, typer.Argument(
              help="Task id or name (default: every task with a cron expression).")] = None,
          count: Annotated[int, typer.Option("-n", "--count", min=1, max=1000,
                                             help="How many fire times per task.")] = 5,
          as_json: Annotated[bool, typer.Option("--json")] = False,
          wide: Annotated[bool, typer.Option(
              "--wide", help="ISO times only, and whole errors.")] = False) -> None:
    """Show when the scheduler fires the tasks next (times in UTC).

    A 6-field expression has the seconds first ('0 */5 * * * *': every 5 minutes).
    With jitter a tick fires up to task.jitter seconds after its nominal time.
    """
    app_ctx = get_ctx(ctx)
    with app_ctx.ready_store().session() as s:
        rows = scheduler.session_next_runs(s, task, app_ctx.clock.now(), count, app_ctx.settings)
    # Asking for one task whose cron is broken is a failed check (exit 1).
    failed = task is not None and any(r["error"] for r in rows)
    if as_json:
        print_listing(rows)
        if failed:
            raise typer.Exit(1)
        return
    if not rows:
        app_ctx.out.print("no task has a cron expression")
        return
    now = app_ctx.clock.now()
    lines = []
    for r in rows:
        state = "" if r["enabled"] else " (disabled)"
        if r["error"]:
            lines.append([escape(r["task_name"]) + state, escape(r["cron_exp"] or "-"),
                          f"[red]{escape(r['error'])}[/red]"])
            continue
        times = []
        for n in r["next"]:
            # The exact time is the point of this table; how far off it is comes first.
            shown = n["scheduled_for"] if wide else \
                f"{relative_time(n['scheduled_for'], now):>8}  {n['scheduled_for']}"
            if n["jitter_offset"]:
                shown += f" (+{n['jitter_offset']:.1f}s)"
            times.append(shown)
        lines.append([escape(r["task_name"]) + state, escape(r["cron_exp"]),
                      "\n".join(times)])
    out = wide_console(app_ctx.out, wide)
    out.print(compact_table("Next fire times (UTC)", ["task", "cron", "next"], lines,
                            squeeze=[] if wide else ["task", "cron", "next"],
                            width=out.width))
    if failed:
        raise typer.Exit(1)

