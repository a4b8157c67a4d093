"""``cascade nodes``: the child-node lifecycle (list, show, disable, enable, rotate, revoke,
delete), plus the node listing and credential display shared with ``cascade init``.

Secrets appear in exactly two places: the one-time display after ``init --child`` and after
``nodes rotate``. Every other output is built from ``store.nodes.node_dict``, which has no
secret and no hash.
"""

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from cascade_cli.cli.confirm import YesOpt, confirmed
from cascade_cli.cli.context import AppContext, get_ctx
from cascade_cli.cli.lazy import lazy
from cascade_cli.cli.options import JsonOpt
from cascade_cli.clock import isoformat_z
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
    from collections.abc import Callable
    from datetime import datetime

    from sqlalchemy.orm import Session

    from cascade_cli import config, protocol
    from cascade_cli.auth import NodeCredentials
    from cascade_cli.store import events
    from cascade_cli.store import nodes as node_store
    from cascade_cli.store.models import Node
else:
    config = lazy("cascade_cli.config")
    protocol = lazy("cascade_cli.protocol")
    events = lazy("cascade_cli.store.events")
    node_store = lazy("cascade_cli.store.nodes")

NodeArg = Annotated[str, typer.Argument(help="Node name or id.", show_default=False)]


# --- shared helpers (also used by cascade init / list-credentials) -------------------------


def node_views(app: AppContext) -> list[dict[str, Any]]:
    """Every node with what it holds now (``cascade nodes list``, ``list-credentials``)."""
    with app.ready_store().session() as s:
        return node_store.node_views(s, app.clock.now(), app.settings.parent.offline_after)


def render_node_list(app: AppContext, views: list[dict[str, Any]], as_json: bool,
                     wide: bool = False) -> None:
    if as_json:
        print_listing(views)
        return
    out = wide_console(app.out, wide)
    if not views:
        out.print("No child nodes yet. Create one with: cascade init --child NAME")
        return
    now = app.clock.now()
    rows = [(escape(short_id(v["id"], wide)), escape(v["name"]), v["api_key"],
             styled(v["status"]) + (" [yellow](legacy)[/yellow]" if v.get("legacy") else ""),
             relative_time(v["last_heartbeat_at"], now, wide=wide),
             f"{v['running']}/{v['max_capacity']}")
            for v in views]
    out.print(compact_table(f"Child nodes ({len(views)})",
                            ["ID", "NAME", "API KEY", "STATUS", "LAST HEARTBEAT", "RUNNING/CAP"],
                            rows))
    out.print("[dim]Secrets are shown only once, at creation or rotation "
              "(cascade nodes rotate NAME).[/dim]")
    if any(v.get("legacy") for v in views):
        out.print("[dim](legacy): a we-mp-rss child in legacy mode, see docs/migration.md; "
                  "'cascade doctor' lists what is left to switch.[/dim]")


def child_yaml_block(parent_url: str, creds: "NodeCredentials", heartbeat_interval: float,
                     sync_interval: float, capacity: int) -> str:
    """The ready-to-paste config of the child: the ``cascade:`` block, then ``child.capacity``
    set to the node's capacity on the parent (so the child runs as many allocations at once as
    the parent hands it, not the default 2)."""
    return "\n".join([
        "cascade:",
        "  enabled: true",
        "  node_type: child",
        f"  parent_api_url: {parent_url}",
        f"  api_key: {creds.api_key}",
        f"  api_secret: {creds.api_secret}",
        f"  sync_interval: {sync_interval:g}",
        f"  heartbeat_interval: {heartbeat_interval:g}",
        "child:",
        f"  capacity: {capacity}",
    ])


def resolve_parent_url(app: AppContext, parent_url: str | None) -> str:
    if parent_url is None:
        return app.settings.parent_url_for_children()
    url = config.normalise_url(parent_url)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or \
            len(url.split("://", 1)[1]) == 0:
        raise InvalidInput(f"--parent-url: must be an http:// or https:// URL, got "
                           f"\"{parent_url}\"", field="parent_url")
    return url


def warn_if_guessed(app: AppContext, parent_url: str | None, url: str) -> None:
    """Warn (once the node exists) when the URL given to a child is only this host's own
    listen address: right for a child on the same host, silently wrong for every other."""
    settings = app.settings
    if parent_url is None and not (settings.parent.public_url or settings.cascade.parent_api_url):
        app.err.print(f"[yellow]warning:[/yellow] the child's parent_api_url is {url}, this "
                      "host's listen address, which other hosts usually cannot reach. Set "
                      "parent.public_url in the parent's config (or pass --parent-url URL) to "
                      "the address children use.", highlight=False, soft_wrap=True)


def show_credentials(app: AppContext, node: "Node", creds: "NodeCredentials", parent_url: str,
                     *, title: str, extra: dict[str, Any] | None = None) -> None:
    """The one-time display: a summary, then the block to paste, printed plainly (no
    wrapping, no markup) so it can be copied as it is."""
    out = app.out
    out.print(f"[green]{escape(title)}[/green]")
    out.print(f"  node id:    {node.id}")
    out.print(f"  node name:  {escape(node.name)}")
    out.print(f"  api_key:    {creds.api_key}")
    out.print(f"  api_secret: {creds.api_secret}")
    for label, value in (extra or {}).items():
        out.print(f"  {label}: {escape(str(value))}")
    out.print("[yellow]The secret is shown only this once; the parent keeps only a hash of "
              "it.[/yellow]")
    out.print("Paste this block into the child's config.yaml (or set CASCADE_API_SECRET "
              "instead of writing the secret to the file):")
    typer.echo("")
    cfg = app.settings.cascade
    typer.echo(child_yaml_block(parent_url, creds, cfg.heartbeat_interval, cfg.sync_interval,
                                node.max_capacity))
    typer.echo("")
    out.print("Then on the child host: cascade run-child   (check first: cascade doctor)")


# --- commands ------------------------------------------------------------------------------


app = typer.Typer(
    name="nodes",
    help="Manage child nodes: list, show, set, disable, enable, legacy, rotate, revoke, delete.",
    no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False,
          wide: Annotated[bool, typer.Option(
              "--wide", help="Full ids and ISO times.")] = False) -> None:
    """List child nodes: id, name, key, status, last heartbeat, capacity (never a secret)."""
    a = get_ctx(ctx)
    render_node_list(a, node_views(a), as_json, wide)


@app.command("show")
def show(ctx: typer.Context, node: NodeArg, as_json: JsonOpt = False) -> None:
    """Show one node (never its secret)."""
    a = get_ctx(ctx)
    with a.ready_store().session() as s:
        view = node_store.node_view(s, node_store.get_node(s, node), a.clock.now(),
                                    a.settings.parent.offline_after)
    if as_json:
        print_json(view)
        return
    out = a.out
    for key, value in view.items():
        shown = styled(value) if key == "status" else escape("-" if value in (None, "")
                                                              else str(value))
        out.print(f"{key:28} {shown}")


def _change_node(ctx: typer.Context, node: str, event: str,
                 change: "Callable[[Session, datetime, str], Node]",
                 ) -> tuple[AppContext, dict[str, Any]]:
    """Apply ``change`` to the node, record ``event`` in the same transaction, and return the
    node's view (never its secret)."""
    a = get_ctx(ctx)
    now = a.clock.now()
    with a.ready_store().session() as s:
        n = change(s, now, node)
        events.log_event(s, now, event, node_id=n.id)
        view = node_store.node_dict(n, now, a.settings.parent.offline_after)
    return a, view


def _set_enabled(ctx: typer.Context, node: str, enabled: bool, as_json: bool) -> None:
    a, view = _change_node(ctx, node, "node_enabled" if enabled else "node_disabled",
                           lambda s, now, ident: node_store.set_enabled(s, now, ident, enabled))
    if as_json:
        print_json(view)
    else:
        word = "enabled" if enabled else "disabled"
        a.out.print(f"node [bold]{escape(view['name'])}[/bold] {word}")
        if not enabled:
            a.out.print("[dim]its requests now get 403 node_disabled; its leases expire "
                        "and the work is handed to other nodes[/dim]")


@app.command("disable")
def disable(ctx: typer.Context, node: NodeArg, as_json: JsonOpt = False) -> None:
    """Refuse the node's requests (403 node_disabled) until enabled again."""
    _set_enabled(ctx, node, False, as_json)


@app.command("enable")
def enable(ctx: typer.Context, node: NodeArg, as_json: JsonOpt = False) -> None:
    """Accept the node's requests again."""
    _set_enabled(ctx, node, True, as_json)


@app.command("legacy")
def legacy(
    ctx: typer.Context,
    node: NodeArg,
    state: Annotated[str, typer.Argument(help="on or off.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Legacy mode for a we-mp-rss child running the original code (docs/migration.md):
    its packages carry the task's webhook URL, template, headers and cookies."""
    if state.lower() not in ("on", "off"):
        raise InvalidInput(f"expected 'on' or 'off', got {state!r}", field="state",
                           hint=f"cascade nodes legacy {node} on")
    on = state.lower() == "on"
    a, view = _change_node(ctx, node, "node_legacy_on" if on else "node_legacy_off",
                           lambda s, now, ident: node_store.set_legacy(s, now, ident, on))
    if as_json:
        print_json(view)
        return
    name = escape(view["name"])
    if on:
        a.out.print(f"node [bold]{name}[/bold] is in legacy mode: its task packages now "
                    "carry webhook URLs, headers and cookies (the original child needs "
                    "them). Turn it off once it runs 'cascade run-child'.")
    else:
        a.out.print(f"node [bold]{name}[/bold] left legacy mode: it gets the ordinary "
                    "task package (no webhook secrets)")
    if view["plain_legacy_secret"]:
        a.out.print(f"[yellow]its secret is still the one imported from we-mp-rss "
                    f"(plain AK-SK only): cascade nodes rotate {name}[/yellow]")


@app.command("set")
def set_(
    ctx: typer.Context,
    node: NodeArg,
    capacity: Annotated[int | None, typer.Option(
        "--capacity", min=1, max=256, metavar="N",
        help="Allocations the node may hold at once (the parent's limit; keep the child's "
             "child.capacity the same).")] = None,
    description: Annotated[str | None, typer.Option(
        "--description", help="Free text shown by 'nodes show'.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a node's capacity or description (same as PUT /api/v1/cascade/nodes/ID)."""
    a = get_ctx(ctx)
    if capacity is None and description is None:
        raise UsageError("nothing to change", hint="give --capacity N and/or --description "
                         "TEXT")
    data = protocol.parse_model(protocol.NodeUpdate, {k: v for k, v in (("max_capacity", capacity),
                                                      ("description", description))
                                    if v is not None}, where="node")
    now = a.clock.now()
    with a.ready_store().session() as s:
        n = node_store.update_node(s, now, node, data)
        events.log_event(s, now, "node_updated", node_id=n.id,
                  detail=data.model_dump(exclude_unset=True))
        view = node_store.node_view(s, n, now, a.settings.parent.offline_after)
    if as_json:
        print_json(view)
    else:
        a.out.print(f"node [bold]{escape(view['name'])}[/bold]: capacity "
                    f"{view['max_capacity']}, description "
                    f"{escape(str(view.get('description') or '-'))}")


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    node: NodeArg,
    overlap: Annotated[float | None, typer.Option(
        "--overlap", min=0,
        help="Seconds the old secret keeps working (default: "
             "parent.auth.rotation_overlap; 0 = at once).")] = None,
    parent_url: Annotated[str | None, typer.Option(
        "--parent-url", help="Parent URL for the printed config block.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """New secret for a node (same key); prints it once."""
    a = get_ctx(ctx)
    seconds = a.settings.parent.auth.rotation_overlap if overlap is None else overlap
    url = resolve_parent_url(a, parent_url)
    now = a.clock.now()
    with a.ready_store().session() as s:
        n, creds = node_store.rotate_credentials(s, now, node, seconds)
        events.log_event(s, now, "credentials_rotated", node_id=n.id,
                  detail={"overlap_seconds": seconds})
        valid_until = isoformat_z(n.prev_valid_until)
    warn_if_guessed(a, parent_url, url)
    if as_json:
        print_json({"node_id": n.id, "node_name": n.name, "api_key": creds.api_key,
                    "api_secret": creds.api_secret,
                    "previous_secret_valid_until": valid_until, "parent_api_url": url,
                    "capacity": n.max_capacity})
        return
    show_credentials(a, n, creds, url, title=f"New secret for node '{n.name}'",
                     extra={"old secret valid until": valid_until or "revoked now"})


@app.command("revoke")
def revoke(ctx: typer.Context, node: NodeArg, as_json: JsonOpt = False) -> None:
    """Invalidate the node's secrets at once (current and overlapping); rotate to reissue."""
    a = get_ctx(ctx)
    now = a.clock.now()
    with a.ready_store().session() as s:
        n = node_store.revoke_credentials(s, now, node)
        events.log_event(s, now, "credentials_revoked", node_id=n.id)
        view = node_store.node_dict(n, now, a.settings.parent.offline_after)
    if as_json:
        print_json(view)
    else:
        a.out.print(f"credentials of node [bold]{escape(n.name)}[/bold] revoked: its "
                    f"requests now get 401. New ones: cascade nodes rotate {escape(n.name)}")


@app.command("delete")
def delete(
    ctx: typer.Context,
    node: NodeArg,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a node that holds no allocation (asks first unless --yes)."""
    a = get_ctx(ctx)
    store = a.ready_store()
    with store.session() as s:
        name = node_store.get_node(s, node).name  # unknown name: fail before asking
    if not confirmed(f"Delete node '{name}' and its credentials?", yes):
        return
    now = a.clock.now()
    with store.session() as s:
        n = node_store.delete_node(s, node)
        node_id = n.id
        events.log_event(s, now, "node_deleted", detail={"node_id": node_id, "name": name})
    if as_json:
        print_json({"node_id": node_id, "node_name": name, "deleted": True})
    else:
        a.out.print(f"node [bold]{escape(name)}[/bold] deleted")
