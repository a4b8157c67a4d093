"""``cascade init`` (database, admin-token secret, child nodes) and ``cascade list-credentials``.

``cascade init`` is safe to run again: the schema is brought to head by Alembic (nothing is
dropped) and an existing admin-token secret file is kept.
"""

import os
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from cascade_cli.cli.context import AppContext, get_ctx
from cascade_cli.cli.lazy import lazy
from cascade_cli.cli.nodes import (
    child_yaml_block,
    node_views,
    render_node_list,
    resolve_parent_url,
    show_credentials,
    warn_if_guessed,
)
from cascade_cli.cli.options import JsonOpt
from cascade_cli.console import print_json
from cascade_cli.errors import CascadeError, StoreError, UsageError
from cascade_cli.private_file import write_private

if TYPE_CHECKING:
    from cascade_cli.store import events, migrate
    from cascade_cli.store import nodes as node_store
else:
    events = lazy("cascade_cli.store.events")
    migrate = lazy("cascade_cli.store.migrate")
    node_store = lazy("cascade_cli.store.nodes")


def ensure_secret_file(path: Path) -> str:
    """Create the admin-token signing secret (mode 0600) if missing.

    Returns what happened: ``created``, ``kept`` or ``permissions tightened``.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > 0:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                path.chmod(0o600)
                return "permissions tightened to 0600"
            return "kept"
        # O_EXCL (after removing an empty file) so a concurrent init never reads half a key.
        if path.exists():
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_urlsafe(32))
        return "created"
    except FileExistsError:
        return "kept"
    except OSError as exc:
        raise CascadeError(f"cannot write the admin-token secret file {path}: "
                           f"{exc.strerror or exc}",
                           hint="set parent.auth.admin_token_secret_file or data_dir to a "
                                "writable place") from exc


def initialise(app: AppContext) -> dict[str, Any]:
    """Create or upgrade the schema and the admin-token secret; report what was done."""
    settings = app.settings
    store = app.store()
    before, after = migrate.upgrade(store)
    secret_file = settings.admin_token_secret_file
    secret_state = ensure_secret_file(secret_file)
    if before is None:
        schema = f"created (revision {after})"
    elif before != after:
        schema = f"upgraded from {before} to {after}"
    else:
        schema = f"already up to date (revision {after})"
    return {
        "database": store.masked_url,
        "schema_before": before,
        "schema_after": after,
        "schema": schema,
        "admin_token_secret_file": str(secret_file),
        "admin_token_secret": secret_state,
        "config": str(settings.source.path) if settings.source.path else None,
        "config_source": settings.source.reason,
    }


def _print_init_report(app: AppContext, report: dict[str, Any]) -> None:
    out = app.out
    source = report["config"] or "built-in defaults"
    out.print(f"config:   {escape(source)} [dim]({report['config_source']})[/dim]")
    out.print(f"database: {escape(report['database'])}: schema {report['schema']}")
    out.print(f"admin-token secret: {escape(report['admin_token_secret_file'])} "
              f"({report['admin_token_secret']})")


def _create_child(app: AppContext, name: str, description: str, capacity: int | None,
                  parent_url: str | None, as_json: bool, output: Path | None) -> None:
    url = resolve_parent_url(app, parent_url)  # bad input fails before anything is written
    if output is not None and (output.exists() or not output.parent.is_dir()):
        # Checked before the node exists: a secret that cannot be written is a secret lost.
        raise UsageError(f"--output: {output} exists or its folder does not; nothing created",
                         hint="give the path of a new file in an existing folder")
    report = initialise(app)
    if not as_json and report["schema_before"] != report["schema_after"]:
        _print_init_report(app, report)
    cap = app.settings.child.capacity if capacity is None else capacity
    now = app.clock.now()
    with app.store().session() as s:
        node, creds = node_store.create_node(s, now, name, description=description,
                                             max_capacity=cap)
        events.log_event(s, now, "node_created", node_id=node.id,
                  detail={"name": name, "max_capacity": cap})
    warn_if_guessed(app, parent_url, url)
    if output is not None:
        cfg = app.settings.cascade
        write_private(output, f"# Cascade child '{node.name}', made by cascade init --child on "
                              "the parent. Keep it mode 0600: it holds the node's secret.\n"
                      + child_yaml_block(url, creds, cfg.heartbeat_interval, cfg.sync_interval,
                                         node.max_capacity) + "\n")
    if as_json:
        data = {"node_id": node.id, "node_name": node.name, "api_key": creds.api_key,
                "api_secret": creds.api_secret, "parent_api_url": url, "capacity": cap}
        if output is not None:
            data["config_file"] = str(output)
        print_json(data)
        return
    if output is not None:
        # The secret went to the file only: nothing to copy from the screen or scrollback.
        app.out.print(f"[green]Child node '{escape(node.name)}' created[/green] (id {node.id}, "
                      f"key {creds.api_key}, capacity {cap})")
        app.out.print(f"wrote {escape(str(output))} (mode 0600) with its secret: copy it to "
                      "the child host as config.yaml (scp -p keeps the mode), then run "
                      "cascade run-child there (check first: cascade doctor)")
        return
    show_credentials(app, node, creds, url, title=f"Child node '{node.name}' created")


def list_credentials_command(ctx: typer.Context, as_json: bool) -> None:
    a = get_ctx(ctx)
    render_node_list(a, node_views(a), as_json)


def init(
    ctx: typer.Context,
    child: Annotated[str | None, typer.Option(
        "--child", metavar="NAME",
        help="Create a child node NAME and print its credentials once.")] = None,
    desc: Annotated[str, typer.Option("--desc", help="Description of the child node.")]
    = "",
    capacity: Annotated[int | None, typer.Option(
        "--capacity", min=1, max=256,
        help="Allocations the child may hold at once (default: child.capacity).")] = None,
    parent_url: Annotated[str | None, typer.Option(
        "--parent-url", metavar="URL",
        help="Parent URL for the child's config block (default: parent.public_url, "
             "cascade.parent_api_url, or this host's listen address).")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="PATH", dir_okay=False,
        help="With --child: write the child's config.yaml to PATH (mode 0600) instead "
             "of printing the secret.")] = None,
    list_: Annotated[bool, typer.Option(
        "--list", help="List child nodes (same as cascade list-credentials).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create or upgrade the database and admin-token secret; --child NAME adds a child.

    Safe to run again: the schema is upgraded in place and an existing secret is kept.
    --child NAME creates a child node and prints its credentials once, with the block
    for the child's config.yaml (its parent URL comes from parent.public_url, and
    child.capacity is the node's capacity); --output PATH writes that file, mode 0600,
    instead. --list lists the nodes.

    Exit codes: 0 success, 1 operation failed, 2 usage or configuration error.
    """
    a = get_ctx(ctx)
    if list_ and child:
        raise UsageError("--list and --child cannot be used together")
    if list_:
        list_credentials_command(ctx, as_json)
        return
    if child is not None:
        _create_child(a, child, desc, capacity, parent_url, as_json, output)
        return
    if desc or capacity is not None or parent_url or output is not None:
        raise UsageError("--desc, --capacity, --parent-url and --output go with --child NAME")
    try:
        report = initialise(a)
    except StoreError as exc:
        if not exc.hint:
            exc.hint = "check database.url in the configuration (cascade doctor helps)"
        raise
    if as_json:
        print_json(report)
        return
    _print_init_report(a, report)
    a.out.print("Next: cascade init --child NAME   (then cascade serve-parent)")


def list_credentials(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List child nodes with their API keys and status; never a secret.

    Columns: id, name, API key, status (online / offline / disabled / revoked / never
    seen, from the heartbeat age and parent.offline_after), last heartbeat, capacity.

    Exit codes: 0 success, 1 operation failed, 2 usage or configuration error.
    """
    list_credentials_command(ctx, as_json)
