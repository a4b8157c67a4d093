"""Every command explains itself: --help states the exit codes, every --json says what it does,
every listing command has --json; serve-parent on a held port is one line and exit 1."""

from __future__ import annotations

import socket
from typing import Any

import typer.main

from cascade_cli.cli.main import app
from tests.foundation.test_cli_bad_input import assert_one_clean_error

LISTINGS = {"list-credentials", "allocations", "nodes list", "token list", "feeds list",
            "feeds status", "tasks list", "tasks next", "deliveries list", "init"}


def leaf_commands() -> dict[str, Any]:
    out: dict[str, Any] = {}

    def walk(cmd: Any, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs is None:
            out[" ".join(path)] = cmd
            return
        for name, sub in subs.items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return out


def test_every_command_documents_exit_codes_and_json() -> None:
    commands = leaf_commands()
    assert set(commands) >= LISTINGS
    for path, cmd in commands.items():
        assert "Exit code" in f"{cmd.help} {cmd.epilog}", path
        assert (cmd.help or "").strip(), f"{path} has no help text"
        for param in cmd.params:
            if getattr(param, "opts", None) and param.name != "help":
                assert param.help or param.param_type_name == "argument", (path, param.opts)
        if path in LISTINGS:
            assert any("--json" in getattr(p, "opts", ()) for p in cmd.params), path


def test_help_renders_exit_codes(cli) -> None:  # type: ignore[no-untyped-def]
    for args in (["deliveries", "list"], ["tasks", "next"], ["serve-parent"], ["purge"]):
        r = cli(*args, "--help")
        assert r.exit_code == 0 and "Exit codes:" in r.stdout, r.stdout


def test_serve_parent_on_a_port_in_use_is_one_line(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("init").exit_code == 0
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        r = cli("serve-parent", "--host", "127.0.0.1", "--port", str(port))
    assert_one_clean_error(r, 1, f"cannot listen on 127.0.0.1:{port}")
    assert "--port" in r.stderr
