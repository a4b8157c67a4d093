"""``cascade feeds``: add, list, update, enable, disable, remove, import (YAML or OPML),
status."""

import xml.etree.ElementTree as ET  # noqa: S405 - parsed with a size cap, no DTD/entities
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from cascade_cli.cli.confirm import YesOpt, confirmed
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
from cascade_cli.errors import InvalidInput, UsageError

if TYPE_CHECKING:
    import yaml

    from cascade_cli import protocol
    from cascade_cli.store import feeds as feed_repo
    from cascade_cli.store import tasks as task_repo
else:
    yaml = lazy("yaml")
    protocol = lazy("cascade_cli.protocol")
    feed_repo = lazy("cascade_cli.store.feeds")
    task_repo = lazy("cascade_cli.store.tasks")

MAX_IMPORT_BYTES = 20 * 1024 * 1024


def parse_opml(text: str) -> list[dict[str, Any]]:
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise InvalidInput("OPML with a DOCTYPE or entities is refused (entity expansion)")
    try:
        root = ET.fromstring(text)  # noqa: S314 - DOCTYPE/entities refused above
    except ET.ParseError as exc:
        raise InvalidInput(f"not valid OPML/XML: {exc}") from None
    feeds = []
    for outline in root.iter("outline"):
        url = outline.get("xmlUrl")
        if not url:
            continue
        title = outline.get("title") or outline.get("text") or url
        kind = (outline.get("type") or "rss").lower()
        feeds.append({"mp_name": title, "url": url,
                      "kind": kind if kind in ("rss", "atom", "jsonfeed") else "rss"})
    return feeds


def parse_feed_file(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise UsageError(f"file not found: {path}")
    if path.stat().st_size > MAX_IMPORT_BYTES:
        raise UsageError(f"{path} is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MiB")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() in (".opml", ".xml") or text.lstrip().startswith("<"):
        return parse_opml(text)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: malformed YAML: {exc}") from None
    if isinstance(data, dict):
        data = data.get("feeds", [])
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise UsageError(f"{path}: expected a list of feeds (or 'feeds:' with a list), each "
                         "with at least 'url'")
    return data


app = typer.Typer(name="feeds",
                  help="Manage feeds (公众号 through an RSS bridge, RSS/Atom/JSON Feed).",
                  no_args_is_help=True)


@app.command("add")
def add(ctx: typer.Context,
        url: Annotated[str, typer.Argument(help="Source URL (or the argument of a command fetcher).")],
        feed_id: Annotated[str | None, typer.Option("--id", help="Feed id, e.g. MP_WXS_123 (generated if absent).")] = None,
        name: Annotated[str, typer.Option("--name", help="Display name (mp_name).")] = "",
        kind: Annotated[str, typer.Option(help="rss | atom | jsonfeed | command | plug-in name.")] = "rss",
        preferred_node: Annotated[str | None, typer.Option("--node", help="Preferred node (name or id).")] = None,
        disabled: Annotated[bool, typer.Option("--disabled", help="Add it disabled.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Add one feed."""
    app_ctx = get_ctx(ctx)
    data = protocol.parse_model(protocol.FeedIn, {
        "id": feed_id, "mp_name": name, "url": url, "kind": kind,
        "preferred_node": preferred_node, "status": 0 if disabled else 1}, where="feed")
    with app_ctx.ready_store().session() as s:
        feed = feed_repo.create_feed(s, app_ctx.clock.now(), data)
        out = feed_repo.feed_dict(feed, 0)
    if as_json:
        print_json(out)
    else:
        app_ctx.out.print(f"added feed [bold]{out['id']}[/bold] ({out['mp_name']}) {out['url']}")


@app.command("list")
def list_(ctx: typer.Context,
          limit: Annotated[int, typer.Option(min=1, max=100000)] = 200,
          offset: Annotated[int, typer.Option(min=0)] = 0,
          as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
          wide: Annotated[bool, typer.Option(
              "--wide", help="Full ids and URLs.")] = False) -> None:
    """List feeds with their article counts."""
    app_ctx = get_ctx(ctx)
    with app_ctx.ready_store().session() as s:
        rows, total = feed_repo.list_feeds(s, limit=limit, offset=offset)
        counts = feed_repo.article_counts(s, [f.id for f in rows])
        data = [feed_repo.feed_dict(f, counts.get(f.id, 0)) for f in rows]
    if as_json:
        print_listing(data, total=total, limit=limit, offset=offset)
        return
    if not data:
        app_ctx.out.print("No feeds yet. Add one with: cascade feeds add URL")
        return
    # The URL takes what the other columns leave (cut with an ellipsis, in full with
    # --wide or --json) instead of folding every row over several lines.
    out = wide_console(app_ctx.out, wide)
    out.print(compact_table(
        f"Feeds ({len(data)} of {total})", ["id", "name", "kind", "status", "articles", "url"],
        [[escape(short_id(d["id"], wide)), escape(d["mp_name"]), escape(d["kind"]),
          styled("enabled" if d["status"] == 1 else "disabled"), d["article_count"],
          escape(d["url"])] for d in data],
        squeeze=[] if wide else ["name", "url"], width=out.width))


@app.command("update")
def update(ctx: typer.Context,
           feed_id: Annotated[str, typer.Argument(help="Feed id.")],
           url: Annotated[str | None, typer.Option("--url", help="New source URL.")] = None,
           name: Annotated[str | None, typer.Option("--name", help="New display name (mp_name).")] = None,
           kind: Annotated[str | None, typer.Option("--kind", help="rss | atom | jsonfeed | command | plug-in name.")] = None,
           preferred_node: Annotated[str | None, typer.Option("--node", help="Preferred node (name or id).")] = None,
           clear_node: Annotated[bool, typer.Option("--clear-node", help="Remove the preferred node (any node may fetch it).")] = False,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Change a feed's URL, name, kind or preferred node (same as PUT /feeds/ID)."""
    if preferred_node is not None and clear_node:
        raise UsageError("--node and --clear-node contradict each other")
    changes: dict[str, Any] = {k: v for k, v in (("url", url), ("mp_name", name),
                                                 ("kind", kind),
                                                 ("preferred_node", preferred_node))
                               if v is not None}
    if clear_node:
        changes["preferred_node"] = None
    if not changes:
        raise UsageError("nothing to change",
                         hint="give --url, --name, --kind, --node or --clear-node")
    _save(ctx, feed_id, changes, as_json, "updated")


@app.command("enable")
def enable(ctx: typer.Context, feed_id: Annotated[str, typer.Argument(help="Feed id.")],
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Enable a feed: dispatch includes it again."""
    _save(ctx, feed_id, {"status": 1}, as_json, "enabled")


@app.command("disable")
def disable(ctx: typer.Context, feed_id: Annotated[str, typer.Argument(help="Feed id.")],
            as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Disable a feed: runs skip it; its articles and task membership are kept."""
    _save(ctx, feed_id, {"status": 0}, as_json, "disabled")


def _save(ctx: typer.Context, feed_id: str, changes: dict[str, Any], as_json: bool,
          word: str) -> None:
    app_ctx = get_ctx(ctx)
    data = protocol.parse_model(protocol.FeedUpdate, changes, where="feed")
    with app_ctx.ready_store().session() as s:
        feed = feed_repo.update_feed(s, app_ctx.clock.now(), feed_id, data)
        out = feed_repo.feed_dict(feed)
        naming = task_repo.tasks_naming(s, [feed_id]).get(feed_id, [])
    if as_json:
        print_json(out)
        return
    app_ctx.out.print(f"{word} feed [bold]{escape(out['id'])}[/bold] "
                      f"({escape(out['mp_name'])}) {escape(out['url'])}")
    if word == "disabled" and naming:
        app_ctx.err.print(f"[yellow]warning:[/yellow] task(s) {escape(', '.join(naming))} "
                          "still name it: their runs skip it until 'cascade feeds enable "
                          f"{escape(feed_id)}'", highlight=False)


@app.command("remove")
def remove(ctx: typer.Context, feed_ids: Annotated[list[str], typer.Argument(help="Feed ids.")],
           yes: YesOpt = False,
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Remove feeds (their stored articles are kept). Asks first unless --yes."""
    app_ctx = get_ctx(ctx)
    store = app_ctx.ready_store()
    with store.session() as s:
        for fid in feed_ids:
            feed_repo.get_feed(s, fid)  # an unknown id fails before the question
        naming = task_repo.tasks_naming(s, feed_ids)
    for fid, names in naming.items():
        app_ctx.err.print(f"[yellow]warning:[/yellow] feed {escape(fid)} is named by "
                          f"task(s) {escape(', '.join(names))}: their runs will skip it "
                          f"(drop it with 'cascade tasks update NAME --feeds ...')",
                          highlight=False)
    if not confirmed(f"Remove {len(feed_ids)} feed(s): {', '.join(feed_ids)}?", yes):
        return
    with store.session() as s:
        for fid in feed_ids:
            feed_repo.delete_feed(s, fid)
    if as_json:
        print_json({"removed": feed_ids, "still_named_by": naming})
    else:
        app_ctx.out.print(f"removed {len(feed_ids)} feed(s)")


@app.command("import")
def import_(ctx: typer.Context,
            path: Annotated[Path, typer.Argument(help="YAML list of feeds, or an OPML file.")],
            skip_existing: Annotated[bool, typer.Option(help="Skip ids that exist instead of failing.")] = True,
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Import feeds from YAML (list of feed objects) or OPML. All or nothing."""
    app_ctx = get_ctx(ctx)
    entries = parse_feed_file(path)
    parsed = [protocol.parse_model(protocol.FeedIn, e, where=f"{path.name} entry {i + 1}")
              for i, e in enumerate(entries)]
    added, skipped = [], []
    with app_ctx.ready_store().session() as s:
        now = app_ctx.clock.now()
        existing_urls = {f.url for f in feed_repo.list_feeds(s, limit=10**9)[0]}
        for data in parsed:
            if skip_existing and ((data.id and feed_repo.feed_exists(s, data.id))
                                  or (not data.id and data.url in existing_urls)):
                skipped.append(data.id or data.url)
                continue
            feed = feed_repo.create_feed(s, now, data)
            existing_urls.add(feed.url)
            added.append(feed.id)
    if as_json:
        print_json({"added": added, "skipped": skipped})
    else:
        app_ctx.out.print(f"imported {len(added)} feed(s), skipped {len(skipped)} existing")


@app.command("status")
def status(ctx: typer.Context,
           limit: Annotated[int, typer.Option(min=1, max=100000)] = 200,
           as_json: Annotated[bool, typer.Option("--json")] = False,
           wide: Annotated[bool, typer.Option(
               "--wide", help="Full ids, ISO times and whole errors.")] = False) -> None:
    """Per feed: articles, newest article, last fetch outcome."""
    app_ctx = get_ctx(ctx)
    with app_ctx.ready_store().session() as s:
        data = feed_repo.feed_status(s, app_ctx.clock.now(), app_ctx.settings, limit=limit)
    if as_json:
        print_listing(data, limit=limit)
        return
    if not data:
        app_ctx.out.print("No feeds yet. Add one with: cascade feeds add URL")
        return
    now = app_ctx.clock.now()
    out = wide_console(app_ctx.out, wide)
    out.print(compact_table(
        f"Feed status ({len(data)})",
        ["feed", "name", "articles", "newest", "fetched", "last", "error"],
        [[escape(short_id(d["feed_id"], wide)), escape(d["mp_name"]), d["article_count"],
          relative_time(d["latest_article_time"], now, wide=wide),
          relative_time(d["last_fetched_at"], now, wide=wide),
          styled(d["last_status"]) if d["last_status"] else "-",
          escape(d["last_error"] or "")] for d in data],
        squeeze=[] if wide else ["name", "error"], width=out.width))
