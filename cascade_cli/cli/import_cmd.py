"""``cascade import we-mp-rss``: bring a we-mp-rss deployment's nodes, feeds and message tasks
over (docs/migration.md)."""

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from cascade_cli.cli.context import get_ctx
from cascade_cli.cli.lazy import lazy
from cascade_cli.console import print_json
from cascade_cli.errors import CascadeError
from cascade_cli.store.constants import DEFAULT_FEED_URL

if TYPE_CHECKING:
    from cascade_cli.domain import templates
    from cascade_cli.store import wemprss
else:
    templates = lazy("cascade_cli.domain.templates")
    wemprss = lazy("cascade_cli.store.wemprss")


app = typer.Typer(name="import", help="Import data from another system (we-mp-rss).",
                  no_args_is_help=True)


@app.command("we-mp-rss")
def we_mp_rss(
    ctx: typer.Context,
    database: Annotated[str, typer.Option(
        "--database", help="URL of we-mp-rss's database (its config.yaml 'db'): "
                           "sqlite:///data/db.db, mysql://user:pw@host/db, "
                           "postgresql://user@host/db. Read only.",
        show_default=False)],
    feed_url_pattern: Annotated[str, typer.Option(
        "--feed-url-pattern",
        help="The RSS URL each 公众号 is fetched from by Cascade children; {id} is the "
             "feed id (we-mp-rss serves /feed/{id}.xml).")] = DEFAULT_FEED_URL,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show what would be imported; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Import nodes (their keys keep working, in legacy mode), feeds and message tasks.
    Safe to run again: what is already here is left as it is."""
    a = get_ctx(ctx)
    pattern = wemprss.check_pattern(feed_url_pattern)
    source = wemprss.read_source(database)
    # Test renders run before the importing transaction (they may take a while and must
    # never hold SQLite's write lock).
    problems: dict[str, str | None] = {}
    for tid, text, message_type in wemprss.task_templates(source):
        try:
            templates.validate_template(text, message_type)
            problems[tid] = None
        except CascadeError as exc:
            problems[tid] = exc.message
    store = a.ready_store()
    now = a.clock.now()
    with store.session() as s:
        summary = wemprss.apply(s, now, source, feed_url_pattern=pattern,
                                template_problems=problems, dry_run=dry_run)
        if dry_run:
            s.rollback()
    if as_json:
        print_json(summary.to_dict())
        return
    out = a.out
    head = "Dry run (nothing changed)" if dry_run else "Imported from we-mp-rss"
    out.print(f"[bold]{head}[/bold]")
    out.print(f"  nodes: {len(summary.nodes_created)} new, "
              f"{len(summary.nodes_existing)} already here")
    out.print(f"  feeds: {summary.feeds_created} new, {summary.feeds_updated} updated, "
              f"{summary.feeds_unchanged} unchanged (url {escape(pattern)})")
    out.print(f"  tasks: {len(summary.tasks_created)} new, "
              f"{len(summary.tasks_existing)} already here")
    for item in summary.skipped:
        out.print(f"  [yellow]skipped {item['kind']} {escape(item['name'])}:[/yellow] "
                  f"{escape(item['reason'])}")
    for name in summary.nodes_created:
        out.print(f"  node [bold]{escape(name)}[/bold]: its we-mp-rss key and secret keep "
                  "working (plain AK-SK, legacy mode). Move it to Cascade credentials "
                  f"with: cascade nodes rotate {escape(name)}")
    if summary.nodes_created and not dry_run:
        out.print("[dim]'cascade doctor' lists the nodes still in legacy mode.[/dim]")
