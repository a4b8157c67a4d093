"""``cascade --help`` starts fast because the CLI loads parent and child internals only when a
command runs (``cascade_cli/cli/lazy.py``). These tests fail when a heavy package sneaks back
into the start-up, or when a cli module defers an import any other way than the documented
one. (The time itself is measured by ``bench/bench_cli_startup.py``, not asserted here.)"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import cascade_cli.cli.main  # noqa: F401 - fills LAZY_MODULES
from cascade_cli.cli.lazy import LAZY_MODULES, LazyModule

CLI_DIR = Path(__file__).resolve().parents[2] / "cascade_cli" / "cli"

# Packages that must not be loaded to parse the command line or print help.
HEAVY = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "httpx", "jinja2",
         "pydantic", "cryptography", "yaml", "cascade_cli.web", "cascade_cli.domain",
         "cascade_cli.parent", "cascade_cli.child", "cascade_cli.doctor", "cascade_cli.client",
         "cascade_cli.demo", "cascade_cli.config", "cascade_cli.protocol")
# The store package only for its SQLAlchemy-free constants (option help and defaults).
STORE_ALLOWED = {"cascade_cli.store", "cascade_cli.store.constants"}

PROBE = """
import json, sys
from cascade_cli.cli.main import run
if sys.argv[1:] == ["--help"]:
    try:
        run(["--help"])
    except SystemExit:
        pass
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""


def loaded_modules(*args: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                          text=True, timeout=120, env={"COLUMNS": "100", "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    line = proc.stderr.rsplit("\nMODULES ", 1)[1]
    return list(json.loads(line))


def heavy_among(modules: list[str]) -> list[str]:
    return sorted(m for m in modules
                  if any(m == h or m.startswith(h + ".") for h in HEAVY)
                  or (m.startswith("cascade_cli.store") and m not in STORE_ALLOWED))


@pytest.mark.parametrize("args", [(), ("--help",)], ids=["import", "help"])
def test_cli_start_up_loads_no_heavy_package(args: tuple[str, ...]) -> None:
    modules = loaded_modules(*args)
    assert "cascade_cli.cli.main" in modules
    assert heavy_among(modules) == []


def test_the_probe_sees_a_heavy_import() -> None:
    # The check above can fail: a module list with the store's models in it is caught.
    assert heavy_among(["cascade_cli.store.models", "sqlalchemy.orm", "typer"]) == [
        "cascade_cli.store.models", "sqlalchemy.orm"]


def _function_level_imports(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith(
                        "cascade_cli"):
                    found.append((inner.lineno, inner.module or ""))
                elif isinstance(inner, ast.Import):
                    found += [(inner.lineno, a.name) for a in inner.names
                              if a.name.startswith("cascade_cli")]
    return found


def _lazy_pairs(tree: ast.Module) -> tuple[dict[str, str], dict[str, str]]:
    """(name -> module) of the TYPE_CHECKING imports and of the ``lazy("...")`` stand-ins."""
    typed: dict[str, str] = {}
    deferred: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
                and node.test.id == "TYPE_CHECKING"):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.ImportFrom):
                for a in stmt.names:
                    # `from pkg import mod` names module pkg.mod; `from mod import Class`
                    # names no module (a type only).
                    typed[a.asname or a.name] = f"{stmt.module}.{a.name}"
            elif isinstance(stmt, ast.Import):
                for a in stmt.names:
                    typed[a.asname or a.name] = a.name
        for stmt in node.orelse:
            if (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call)
                    and isinstance(stmt.value.func, ast.Name) and stmt.value.func.id == "lazy"):
                arg = stmt.value.args[0]
                assert isinstance(arg, ast.Constant)
                for target in stmt.targets:
                    assert isinstance(target, ast.Name)
                    deferred[target.id] = str(arg.value)
    return typed, deferred


@pytest.mark.parametrize("path", sorted(CLI_DIR.glob("*.py")), ids=lambda p: p.name)
def test_cli_defers_imports_only_through_lazy(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert _function_level_imports(tree) == [], (
        f"{path.name}: import our modules at the top, or (for start-up time) through "
        "cli/lazy.py's TYPE_CHECKING / lazy() pair")
    typed, deferred = _lazy_pairs(tree)
    for name, module in deferred.items():
        assert typed.get(name) == module, (
            f"{path.name}: {name} = lazy({module!r}) needs the twin "
            f"'import {module} as {name}' under TYPE_CHECKING (types and the import graph)")


def test_every_lazy_module_exists() -> None:
    import importlib.util

    assert "cascade_cli.store.nodes" in LAZY_MODULES
    for name in sorted(LAZY_MODULES):
        assert importlib.util.find_spec(name) is not None, name


def test_lazy_module_loads_on_first_use() -> None:
    stand_in = LazyModule("cascade_cli.durations")
    assert "not loaded yet" in repr(stand_in)
    assert stand_in.MAX_SECONDS == 100 * 365 * 86400
    assert "(loaded)" in repr(stand_in)
    with pytest.raises(AttributeError):
        stand_in.no_such_name  # noqa: B018
