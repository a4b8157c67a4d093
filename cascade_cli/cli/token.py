"""``cascade token``: admin bearer tokens for the parent API (issued on the parent host)."""

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from cascade_cli.cli.context import get_ctx
from cascade_cli.cli.lazy import lazy
from cascade_cli.cli.options import JsonOpt, WideOpt
from cascade_cli.console import (
    compact_table,
    print_listing,
    relative_time,
    short_id,
    styled,
    wide_console,
)

if TYPE_CHECKING:
    from cascade_cli.domain import tokens
else:
    tokens = lazy("cascade_cli.domain.tokens")


app = typer.Typer(name="token",
                  help="Admin bearer tokens for the parent API (create, list, revoke).",
                  no_args_is_help=True)


@app.command("create", help="Issue an admin token; prints the token alone on "
                   "standard output (use it as 'Authorization: Bearer TOKEN').")


def create(
    ctx: typer.Context,
    ttl: Annotated[str | None, typer.Option(
        "--ttl", help="Lifetime: seconds or 30m, 24h, 7d (default "
        "parent.auth.admin_token_ttl).")] = None,
    label: Annotated[str, typer.Option("--label", help="A note to recognise it by.")] = "",
) -> None:
    app_ctx = get_ctx(ctx)
    settings = app_ctx.settings
    seconds = tokens.parse_duration(ttl) if ttl is not None \
        else settings.parent.auth.admin_token_ttl
    store = app_ctx.ready_store()
    secret = tokens.ensure_secret(settings.admin_token_secret_file)
    with store.session() as s:
        token, row = tokens.issue(s, app_ctx.clock.now(), secret, ttl=seconds, label=label)
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    app_ctx.err.print(f"[dim]token {row.jti} expires {row.expires_at:%Y-%m-%d %H:%M:%SZ}; "
                      f"revoke with: cascade token revoke {row.jti}[/dim]", highlight=False)


@app.command("list", help="Issued admin tokens (never the tokens themselves).")
def list_(ctx: typer.Context, as_json: JsonOpt = False, wide: WideOpt = False) -> None:
    app_ctx = get_ctx(ctx)
    store = app_ctx.ready_store()
    now = app_ctx.clock.now()
    with store.session() as s:
        views = [tokens.token_dict(t, now) for t in tokens.list_tokens(s)]
    if as_json:
        print_listing(views)
        return
    if not views:
        app_ctx.out.print("No admin tokens yet. Create one with: cascade token create")
        return
    rows = [(short_id(v["jti"], wide), escape(v["label"] or ""), styled(v["status"]),
             relative_time(v["created_at"], now, wide=wide),
             relative_time(v["expires_at"], now, wide=wide),
             relative_time(v["revoked_at"], now, wide=wide)) for v in views]
    out = wide_console(app_ctx.out, wide)
    out.print(compact_table(f"Admin tokens ({len(views)})",
                            ["jti", "label", "status", "created", "expires", "revoked"],
                            rows, squeeze=[] if wide else ["label"], width=out.width))


@app.command("revoke", help="Revoke an admin token at once (by its jti).")
def revoke(ctx: typer.Context,
           jti: Annotated[str, typer.Argument(
               help="The token id from 'token list' (the 8 characters it shows do).")]
           ) -> None:
    app_ctx = get_ctx(ctx)
    store = app_ctx.ready_store()
    with store.session() as s:
        row = tokens.revoke(s, app_ctx.clock.now(), jti)
    app_ctx.out.print(f"revoked admin token {row.jti}")
