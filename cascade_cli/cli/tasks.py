"""``cascade tasks``: message tasks (feeds, cron, webhook, template)."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from cascade_cli.cli.confirm import YesOpt, confirmed
from cascade_cli.cli.context import AppContext, get_ctx
from cascade_cli.cli.lazy import lazy
from cascade_cli.cli.schedule import next_
from cascade_cli.console import (
    compact_table,
    print_json,
    print_listing,
    short_id,
    styled,
    table,
    wide_console,
)
from cascade_cli.errors import UsageError

if TYPE_CHECKING:
    from cascade_cli import protocol
    from cascade_cli.domain import templates  # jinja2
    from cascade_cli.store import feeds as feed_repo
    from cascade_cli.store import tasks as task_repo
else:
    protocol = lazy("cascade_cli.protocol")
    templates = lazy("cascade_cli.domain.templates")
    feed_repo = lazy("cascade_cli.store.feeds")
    task_repo = lazy("cascade_cli.store.tasks")


def _read_template(path: Path | None, text: str | None) -> str | None:
    if path is not None:
        if not path.is_file():
            raise UsageError(f"template file not found: {path}")
        return path.read_text(encoding="utf-8")
    return text


def _show(app_ctx: Any, data: dict[str, Any]) -> None:
    rows = [[k, json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v]
            for k, v in data.items()]
    app_ctx.out.print(table(f"Task {data['name']}", ["field", "value"], rows))


app = typer.Typer(name="tasks",
                  help="Manage message tasks: feeds, cron schedule, webhook, template.",
                  no_args_is_help=True)


@app.command("add")
def add(ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Task name.")],
        feeds: Annotated[str, typer.Option("--feeds", help="Feed ids, comma separated (or a JSON list).")],
        cron: Annotated[str | None, typer.Option("--cron", help="Cron: 5 fields, or 6 with seconds.")] = None,
        webhook: Annotated[str | None, typer.Option("--webhook", help="Webhook URL (WeCom, DingTalk, Feishu, Bark or any JSON endpoint).")] = None,
        message_type: Annotated[int, typer.Option("--message-type", min=0, max=1, help="0 text/markdown, 1 JSON.")] = 0,
        template: Annotated[str | None, typer.Option("--template", help="Message template text (Jinja2, sandboxed).")] = None,
        template_file: Annotated[Path | None, typer.Option("--template-file", help="Read the template from a file.")] = None,
        headers: Annotated[str | None, typer.Option("--headers", help='JSON object, e.g. {"X-Token":"..."}.')] = None,
        cookies: Annotated[str | None, typer.Option("--cookies", help="k=v; k2=v2")] = None,
        overlap: Annotated[str, typer.Option("--overlap", help="skip (default) or allow overlapping runs.")] = "skip",
        misfire: Annotated[str, typer.Option("--misfire", help="skip (default) or run_once after downtime.")] = "skip",
        misfire_grace: Annotated[float | None, typer.Option("--misfire-grace", min=0, help="Seconds a late tick still fires (default parent.scheduler.misfire_grace).")] = None,
        jitter: Annotated[float, typer.Option("--jitter", min=0, max=3600, help="Fire up to this many seconds after each tick (spreads load).")] = 0,
        task_id: Annotated[str | None, typer.Option("--id", help="Task id (generated if absent).")] = None,
        disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled.")] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create a message task. Cron, webhook URL and template are checked now, not at 9 am."""
    app_ctx = get_ctx(ctx)
    data = protocol.parse_model(protocol.MessageTaskIn, {
        "id": task_id, "name": name, "mps_id": feeds, "cron_exp": cron, "web_hook_url": webhook,
        "message_type": message_type, "message_template": _read_template(template_file, template),
        "headers": headers, "cookies": cookies, "status": 0 if disabled else 1,
        "overlap_policy": overlap, "misfire_policy": misfire, "misfire_grace": misfire_grace,
        "jitter": jitter})
    # The test render runs before the transaction: it never holds the write lock.
    checked = (data.message_template, data.message_type)
    templates.validate_template(*checked)
    with app_ctx.ready_store().session() as s:
        # The store refuses a second task of the same name (409 duplicate_name).
        task = task_repo.create_task(s, app_ctx.clock.now(), data, checked=checked)
        out = task_repo.task_dict(task, include_secrets=True)
        problems = feed_repo.feed_problems(s, out["mps_id"])
    _warn_feed_problems(app_ctx, problems)
    if as_json:
        print_json(out)
    else:
        app_ctx.out.print(f"created task [bold]{out['name']}[/bold] (id {out['id']}) with "
                          f"{len(out['mps_id'])} feed(s)")


def _warn_feed_problems(app_ctx: AppContext, problems: "feed_repo.FeedProblems") -> None:
    """The original's problem 4 ("公众号不存在"), said when the task is saved rather than at
    run time (the admin API says the same in its answer's message)."""
    for line in problems.lines():
        app_ctx.err.print(f"[yellow]warning:[/yellow] {line}: runs skip them "
                          "('cascade feeds add' / 'cascade feeds list')", highlight=False)


@app.command("list")
def list_(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False,
          wide: Annotated[bool, typer.Option(
              "--wide", help="Full ids, webhook URLs and errors.")] = False) -> None:
    """List tasks; a task whose cron or template is broken shows its error."""
    app_ctx = get_ctx(ctx)
    with app_ctx.ready_store().session() as s:
        data = [task_repo.task_dict(t, include_secrets=True) for t in task_repo.list_tasks(s)]
    if as_json:
        print_listing(data)
        return
    if not data:
        app_ctx.out.print("No message tasks yet. Create one with: cascade tasks add NAME "
                          "--feeds ID,...")
        return
    # 8-character ids (tasks show/update/... take them back); the webhook URL and the
    # error share what the other columns leave of the width, cut with an ellipsis.
    out = wide_console(app_ctx.out, wide)
    out.print(compact_table(
        f"Message tasks ({len(data)})",
        ["id", "name", "status", "feeds", "cron", "webhook", "error"],
        [[short_id(d["id"], wide), escape(d["name"]),
          styled("enabled" if d["status"] == 1 else "disabled"), len(d["mps_id"]),
          escape(d["cron_exp"] or "-"), escape(d["web_hook_url"] or "-"),
          escape(d["last_error"] or "")] for d in data],
        squeeze=[] if wide else ["name", "webhook", "error"], width=out.width))


@app.command("show")
def show(ctx: typer.Context, task: Annotated[str, typer.Argument(help="Task id or name.")],
         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one task in full."""
    app_ctx = get_ctx(ctx)
    with app_ctx.ready_store().session() as s:
        t = task_repo.get_task(s, task)
        data = task_repo.task_dict(t, include_secrets=True)
        data["webhook_secret"] = t.webhook_secret
    if as_json:
        print_json(data)
    else:
        _show(app_ctx, data)


def _set(ctx: typer.Context, task: str, status: int, as_json: bool) -> None:
    app_ctx = get_ctx(ctx)
    with app_ctx.ready_store().session() as s:
        t = task_repo.set_task_status(s, app_ctx.clock.now(), task, status)
        data = task_repo.task_dict(t, include_secrets=False)
    if as_json:
        print_json(data)
    else:
        app_ctx.out.print(f"task {data['name']} {'enabled' if status else 'disabled'}")


@app.command("enable")
def enable(ctx: typer.Context, task: Annotated[str, typer.Argument(help="Task id or name.")],
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Enable a task (the scheduler fires it, dispatch includes it)."""
    _set(ctx, task, 1, as_json)


@app.command("disable")
def disable(ctx: typer.Context, task: Annotated[str, typer.Argument(help="Task id or name.")],
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Disable a task."""
    _set(ctx, task, 0, as_json)


@app.command("update")
def update_(ctx: typer.Context, task: Annotated[str, typer.Argument(help="Task id or name.")],
            name: Annotated[str | None, typer.Option("--name", help="New task name.")] = None,
            feeds: Annotated[str | None, typer.Option(
                "--feeds", help="New feed ids, comma separated (or a JSON list).")] = None,
            cron: Annotated[str | None, typer.Option(
                "--cron", help="New cron: 5 fields, or 6 with seconds first.")] = None,
            clear_cron: Annotated[bool, typer.Option(
                "--clear-cron", help="Remove the schedule: the task runs only when "
                "dispatched by hand.")] = False,
            webhook: Annotated[str | None, typer.Option(
                "--webhook", help="New webhook URL (http or https).")] = None,
            clear_webhook: Annotated[bool, typer.Option(
                "--clear-webhook", help="Send no notification.")] = False,
            message_type: Annotated[int | None, typer.Option(
                "--message-type", min=0, max=1, help="0 text/markdown, 1 JSON.")] = None,
            template: Annotated[str | None, typer.Option(
                "--template", help="New message template text ('' = the default).")] = None,
            template_file: Annotated[Path | None, typer.Option(
                "--template-file", help="Read the new template from a file.")] = None,
            headers: Annotated[str | None, typer.Option(
                "--headers", help='Webhook headers, a JSON object ({} or \'\' clears them).')] = None,
            cookies: Annotated[str | None, typer.Option(
                "--cookies", help="k=v; k2=v2 ('' clears them).")] = None,
            overlap: Annotated[str | None, typer.Option(
                "--overlap", help="skip or allow overlapping runs.")] = None,
            misfire: Annotated[str | None, typer.Option(
                "--misfire", help="skip or run_once after downtime.")] = None,
            misfire_grace: Annotated[float | None, typer.Option(
                "--misfire-grace", min=0, help="Seconds a late tick still fires.")] = None,
            jitter: Annotated[float | None, typer.Option(
                "--jitter", min=0, max=3600, help="Fire up to this many seconds after "
                "each tick.")] = None,
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Change any field of a task; fields not given keep their value. Checked as a whole
    (cron, webhook, template with its message type) before anything is saved."""
    app_ctx = get_ctx(ctx)
    if cron is not None and clear_cron:
        raise UsageError("--cron and --clear-cron contradict each other")
    if webhook is not None and clear_webhook:
        raise UsageError("--webhook and --clear-webhook contradict each other")
    if template is not None and template_file is not None:
        raise UsageError("give --template or --template-file, not both")
    changes: dict[str, Any] = {}
    for key, value in (("name", name), ("mps_id", feeds), ("message_type", message_type),
                       ("overlap_policy", overlap), ("misfire_policy", misfire),
                       ("misfire_grace", misfire_grace), ("jitter", jitter)):
        if value is not None:
            changes[key] = value
    if clear_cron or cron is not None:
        changes["cron_exp"] = (cron or "").strip() or None
    if clear_webhook or webhook is not None:
        changes["web_hook_url"] = (webhook or "").strip() or None
    if template is not None or template_file is not None:
        changes["message_template"] = _read_template(template_file, template) or None
    if headers is not None:
        changes["headers"] = None if headers.strip() in ("", "{}") else headers
    if cookies is not None:
        changes["cookies"] = cookies.strip() or None
    if not changes:
        raise UsageError("nothing to change", hint="'cascade tasks update --help' lists "
                         "the fields")
    data = protocol.parse_model(protocol.MessageTaskUpdate, changes, where="task")
    store = app_ctx.ready_store()
    with store.session() as s:
        checked = task_repo.template_after(s, task, data)
    templates.validate_template(*checked)  # outside the transaction
    with store.session() as s:
        t = task_repo.update_task(s, app_ctx.clock.now(), task, data, checked=checked)
        out = task_repo.task_dict(t, include_secrets=True)
        problems = feed_repo.feed_problems(s, out["mps_id"])
    _warn_feed_problems(app_ctx, problems)
    if as_json:
        print_json(out)
    else:
        app_ctx.out.print(f"updated task {escape(out['name'])}: "
                          + ", ".join(sorted(data.model_dump(exclude_unset=True))))


@app.command("remove")
def remove(ctx: typer.Context, task: Annotated[str, typer.Argument(help="Task id or name.")],
           yes: YesOpt = False,
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Remove a task and its runs (asks first unless --yes)."""
    app_ctx = get_ctx(ctx)
    store = app_ctx.ready_store()
    with store.session() as s:
        name = task_repo.get_task(s, task).name  # unknown task: fail before asking
    if not confirmed(f"Remove task '{name}' and the history of its runs?", yes):
        return
    with store.session() as s:
        task_repo.delete_task(s, task)
    if as_json:
        print_json({"removed": task})
    else:
        app_ctx.out.print(f"removed task {escape(name)}")

app.command("next")(next_)  # `tasks next` lives with the scheduler
