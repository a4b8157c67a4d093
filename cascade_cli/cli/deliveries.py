"""``cascade deliveries`` (the webhook outbox) and ``cascade purge`` (retention; ``cli.main``
registers it as a top-level command)."""

from typing import TYPE_CHECKING, Annotated

import typer

from cascade_cli.cli.context import get_ctx
from cascade_cli.cli.lazy import lazy
from cascade_cli.console import (
    compact_table,
    print_json,
    print_listing,
    relative_time,
    short_id,
    styled,
    table,
    wide_console,
)
from cascade_cli.errors import UsageError

if TYPE_CHECKING:
    from cascade_cli.domain import notify
    from cascade_cli.store import history, retention
else:
    notify = lazy("cascade_cli.domain.notify")
    history = lazy("cascade_cli.store.history")
    retention = lazy("cascade_cli.store.retention")

STATUSES = ("pending", "delivered", "dead")


app = typer.Typer(name="deliveries", help="Webhook notification outbox: list, retry.",
                  no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context,
          status: Annotated[str | None, typer.Option(
              "--status", help="pending, delivered or dead.")] = None,
          task: Annotated[str | None, typer.Option("--task", help="Task id or name.")] = None,
          limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 50,
          offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
          wide: Annotated[bool, typer.Option(
              "--wide", help="Full ids and ISO times.")] = False,
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List notifications, newest first, with their attempts and last error."""
    if status is not None and status not in STATUSES:
        raise UsageError(f"--status must be one of {', '.join(STATUSES)}, got {status!r}")
    app_ctx = get_ctx(ctx)
    with app_ctx.ready_store().session() as s:
        task_id = history.resolve_delivery_task_id(s, task) if task else None
        rows, total = notify.list_deliveries(s, status=status, task_id=task_id, limit=limit,
                                      offset=offset)
        data = [notify.delivery_dict(d) for d in rows]
    if as_json:
        print_listing(data, total=total, limit=limit, offset=offset)
        return
    out = wide_console(app_ctx.out, wide)
    out.print(compact_table(
        f"Deliveries ({len(data)} of {total})",
        ["id", "status", "task", "feed", "channel", "host", "tries", "next try",
         "last error"],
        [[short_id(d["id"], wide), styled(d["status"]), short_id(d["task_id"], wide),
          d["feed_id"], d["channel"], d["url_host"], f"{d['attempts']}/{d['max_attempts']}",
          relative_time(d["next_attempt_at"], app_ctx.clock.now(), wide=wide),
          d["last_error"] or ""] for d in data], squeeze=["last error"], width=out.width))


@app.command("retry")
def retry(ctx: typer.Context,
          delivery: Annotated[str | None, typer.Argument(
              help="Delivery id (or the 8 characters tables show).")] = None,
          dead: Annotated[bool, typer.Option(
              "--dead", help="Requeue every dead delivery.")] = False,
          task: Annotated[str | None, typer.Option(
              "--task", help="With --dead: only this task's.")] = None,
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Send a dead delivery again (fresh attempt budget), or all of them with --dead."""
    if bool(delivery) == dead:
        raise UsageError("give a delivery ID or --dead (not both)")
    app_ctx = get_ctx(ctx)
    now = app_ctx.clock.now()
    with app_ctx.ready_store().session() as s:
        if delivery:
            notify.retry_delivery(s, now, history.resolve_delivery_id(s, delivery))
            count = 1
        else:
            count = notify.retry_dead(
                s, now, task_id=history.resolve_delivery_task_id(s, task) if task else None)
    if as_json:
        print_json({"requeued": count})
    else:
        app_ctx.out.print(f"requeued {count} deliver{'y' if count == 1 else 'ies'}; "
                          "a running parent sends them within parent.notify.poll_interval")


def purge(ctx: typer.Context,
          older_than: Annotated[str, typer.Option(
              "--older-than", help="Age cut, e.g. 30d, 12h, 2w.")] = "30d",
          articles: Annotated[bool, typer.Option(
              "--articles", help="Also delete articles stored before the cut.")] = False,
          batch: Annotated[int, typer.Option("--batch", min=1, max=100000,
                                             help="Rows per transaction.")] = 1000,
          dry_run: Annotated[bool, typer.Option(
              "--dry-run", help="Count what would go; delete nothing.")] = False,
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Delete old runs, allocations, events and sent notifications (batched, safe live).

    Removes finished runs with their allocations and feed results, events, delivered and
    dead notifications older than the cut, and expired nonces, in batches of separate
    transactions. Articles are kept unless --articles.
    """
    app_ctx = get_ctx(ctx)
    age = retention.parse_duration(older_than)
    report = retention.purge(app_ctx.ready_store(), app_ctx.clock.now(), age, articles=articles,
                      batch=batch, dry_run=dry_run)
    data = report.to_dict()
    if as_json:
        print_json(data)
        return
    verb = "would delete" if dry_run else "deleted"
    app_ctx.out.print(table(f"purge older than {older_than} (before {data['cut']})",
                            ["what", verb], [[k, v] for k, v in report.counts.items()]))
    if not articles:
        app_ctx.out.print("[dim]articles kept (use --articles to delete old ones)[/dim]")

