"""Doctor output: a Rich table for people, JSON for scripts and monitoring."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade_cli.doctor.runner import Report

_STYLE = {"ok": "green", "warning": "yellow", "failed": "red", "skipped": "dim"}
_MARK = {"ok": "✓ ok", "warning": "! warning", "failed": "✗ failed", "skipped": "- skipped"}


def render_table(report: Report, console: Console, *, verbose: bool = False) -> None:
    where = report.config["path"] or "built-in defaults"
    told = "" if report.role_reason in ("", "cascade.node_type") else \
        f" ({escape(report.role_reason)})"
    console.print(f"cascade doctor: role [bold]{report.role}[/bold]{told}, configuration "
                  f"{escape(where)} ({report.config['reason']})", highlight=False)
    t = Table(show_lines=True, header_style="bold")
    t.add_column("Check", no_wrap=True)
    t.add_column("Status", no_wrap=True)
    t.add_column("What doctor saw", overflow="fold", ratio=3)
    t.add_column("Fix", overflow="fold", ratio=2)
    for r in report.results:
        style = _STYLE[r.status]
        seen = escape(r.summary)
        if r.details and (verbose or r.status in ("warning", "failed")):
            seen += "\n[dim]" + "\n".join(escape(d) for d in r.details[:12]) + "[/dim]"
            if len(r.details) > 12:
                seen += f"\n[dim]... {len(r.details) - 12} more (--json shows all)[/dim]"
        t.add_row(r.name, f"[{style}]{_MARK[r.status]}[/{style}]", seen,
                  escape(r.fix) if r.fix and r.status != "ok" else "")
    console.print(t)
    c = report.counts
    line = (f"{c['ok']} ok, {c['warning']} warning(s), {c['failed']} failed, "
            f"{c['skipped']} skipped")
    if report.config_broken:
        console.print(f"[red]{line}: the configuration could not be loaded, so doctor could only "
                      "run part of its checks (exit 2)[/red]")
    elif report.internal_errors:
        console.print(f"[red]{line}: doctor itself failed on {len(report.internal_errors)} "
                      "check(s) (exit 2)[/red]")
    elif c["failed"]:
        console.print(f"[red]{line}[/red]")
    elif c["warning"]:
        console.print(f"[yellow]{line}[/yellow]")
    else:
        console.print(f"[green]{line}[/green]")
