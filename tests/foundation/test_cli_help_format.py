"""--help reads well at a fixed width: a flag shows no type (``--json``, not ``--json <bool>``),
and text breaks only where the terminal's width forces it (never where a source line ended).

The real ``cascade`` command renders a few helps at COLUMNS=100; every command of the
tree is then rendered in-process at 100 columns with the same checks, so commands added later
are held to it too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from cascade_cli.cli.main import app
from tests.foundation.test_cli_help import leaf_commands

BIN = Path(sys.executable).parent
BORDER = "│"
# Flags of the root and of common commands: none may show a value type.
FLAGS = ("--json", "--help", "--version", "--list", "--show-completion", "--install-completion")


def _word(line: str) -> str:
    return line.split()[0] if line.split() else ""


def mid_sentence_breaks(text: str, columns: int) -> list[str]:
    """Line breaks the width did not force: the next line's first word would have fitted.

    Outside panels a paragraph's lines span ``columns - 2`` cells; inside a panel, a row's
    continuation line starts at its help column and may reach the right border."""
    found: list[str] = []
    lines = text.splitlines()
    for prev, line in zip(lines, lines[1:], strict=False):
        if not line.strip() or not prev.strip():
            continue
        if line.lstrip().startswith(BORDER) and prev.lstrip().startswith(BORDER):
            inner = line[line.index(BORDER) + 1:line.rindex(BORDER)]
            start = len(inner) - len(inner.lstrip())
            if start < 10 or not inner.strip():  # a new row, not a continuation
                continue
            p_inner = prev[prev.index(BORDER) + 1:prev.rindex(BORDER)]
            segment = p_inner[start:].rstrip()
            if not segment:
                continue
            avail = cell_len(p_inner[start:]) - 1  # one cell of padding
            word = _word(inner)
            if word.startswith("["):  # typer's [default: ...] / [required] note
                continue
            if cell_len(segment) + 1 + cell_len(word) < avail:
                found.append(f"{prev.rstrip()}\n{line.rstrip()}")
            continue
        if BORDER in line or BORDER in prev or "╭" in line or "╰" in prev:
            continue
        if "  " in prev.strip() or line.startswith("  ") or prev.startswith("  "):  # verbatim
            continue
        if cell_len(prev.strip()) + 1 + cell_len(_word(line)) < columns - 2:
            found.append(f"{prev.rstrip()}\n{line.rstrip()}")
    return found


def typed_flags(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if any(re.search(rf"{re.escape(f)}\b.*<bool>", line) for f in FLAGS)
            or "<bool>" in line]


def test_the_checker_catches_a_source_line_break() -> None:
    bad = ("  Usage: x\n\n Safe to run again: the schema is upgraded and an existing secret\n"
           " is kept.\n")
    assert mid_sentence_breaks(bad, 100)
    long = " " + "word " * 19 + "\n next\n"  # 96 cells: 'next' cannot fit on the line
    assert not mid_sentence_breaks(long, 100)
    row = "│ --desc        <str>  Description of the                        │"
    cont = "│                      child node.                               │"
    assert mid_sentence_breaks(f"{row}\n{cont}\n", 100)  # 'child' fitted on the row
    full = "│ --desc        <str>  Description of the child node which goes   │"
    assert not mid_sentence_breaks(f"{full}\n{cont}\n", 100)


def _cascade() -> str:
    script = BIN / "cascade"
    return str(script) if script.exists() else "cascade"


@pytest.mark.slow
def test_help_of_the_real_command(tmp_path: Path) -> None:
    columns = 100
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
    env.update({"COLUMNS": str(columns), "TERM": "dumb", "NO_COLOR": "1"})
    for args in (["--help"], ["init", "--help"], ["nodes", "list", "--help"]):
        r = subprocess.run([_cascade(), *args], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        assert max(cell_len(line) for line in r.stdout.splitlines()) <= columns
        assert not typed_flags(r.stdout), (args, typed_flags(r.stdout))
        assert not mid_sentence_breaks(r.stdout, columns), (args, mid_sentence_breaks(
            r.stdout, columns))
        if args[0] in ("init", "nodes"):
            json_row = next(line for line in r.stdout.splitlines() if "--json" in line)
            assert "<" not in json_row and "Print JSON" in json_row, json_row
        else:
            assert "--install-completion" in r.stdout  # shell completion is on


def test_every_command_help_at_100_columns() -> None:
    runner = CliRunner()
    bad: dict[str, list[str]] = {}
    paths = [[], *[path.split() for path in leaf_commands()]]
    groups = {p.split()[0] for p in leaf_commands() if " " in p}
    paths += [[g] for g in sorted(groups)]
    for path in paths:
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100", "NO_COLOR": "1"})
        assert r.exit_code == 0, (path, r.output)
        problems = typed_flags(r.stdout) + mid_sentence_breaks(r.stdout, 100)
        if problems:
            bad[" ".join(path) or "cascade"] = problems
    assert not bad, bad


@pytest.mark.slow
def test_shell_completion_completes_commands(tmp_path: Path) -> None:
    """What the installed bash completion script runs on <TAB>: the real command answers
    with the matching subcommands."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
    env.update({"_CASCADE_COMPLETE": "complete_bash", "COMP_WORDS": "cascade nodes r",
                "COMP_CWORD": "2"})
    r = subprocess.run([_cascade()], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == {"rotate", "revoke"}, r.stdout
