"""The domain package holds the rules and the store the SQL (issue 17): no domain module
imports SQLAlchemy at run time (``Session`` only for annotations, under TYPE_CHECKING), and
none reaches up into the web layer or the daemon; the store's run settlement (which used to
queue notifications with domain code) imports nothing of the domain."""

from __future__ import annotations

import ast
from pathlib import Path

import cascade_cli

PACKAGE = Path(cascade_cli.__file__).parent


def _runtime_imports(path: Path) -> list[str]:
    """Modules imported by ``path`` outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append(node.module)
    return found


def _offending(package: str, forbidden: tuple[str, ...],
               names: tuple[str, ...] | None = None) -> dict[str, list[str]]:
    out = {}
    for path in sorted((PACKAGE / package).glob("*.py")):
        if names is not None and path.stem not in names:
            continue
        bad = [m for m in _runtime_imports(path)
               if any(m == f or m.startswith(f + ".") for f in forbidden)]
        if bad:
            out[path.name] = bad
    return out


def test_domain_modules_build_no_sql_and_import_nothing_above_them() -> None:
    assert _offending("domain", ("sqlalchemy", "cascade_cli.web", "cascade_cli.parent",
                                 "cascade_cli.cli")) == {}


def test_store_modules_import_nothing_of_the_domain() -> None:
    """The run, outbox, lease, token and gauge modules (store.tasks still validates cron and
    webhook URLs with domain code: a separate step of issue 17)."""
    assert _offending("store", ("cascade_cli.domain", "cascade_cli.web", "cascade_cli.parent"),
                      ("runs", "deliveries", "leases", "tokens", "gauges", "allocations",
                       "feeds", "nodes", "events", "engine")) == {}


def test_the_check_sees_a_runtime_import(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("from typing import TYPE_CHECKING\nimport sqlalchemy\n"
                      "if TYPE_CHECKING:\n    from sqlalchemy.orm import Session\n"
                      "def f():\n    from cascade_cli.web import app\n", encoding="utf-8")
    assert _runtime_imports(sample) == ["typing", "sqlalchemy", "cascade_cli.web"]
