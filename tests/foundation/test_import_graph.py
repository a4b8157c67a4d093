"""The house rules of docs/dev/architecture.md, kept true by walking the import graph.

Every module of ``cascade_cli`` belongs to one layer. An import may only point at the same
layer or at a layer its own layer is allowed to use (``ALLOWED``); anything else is an upward
edge and fails here with the file and line. Cycles between modules fail too, and so does an
import of our own modules inside a function: the CLI's lazy loads for start-up time go through
``cli/lazy.py`` and are declared at the top of each module (``tests/foundation/
test_cli_startup.py`` checks those). SQL stays in the store: outside ``cascade_cli.store`` no
module builds statements with SQLAlchemy or holds SQL text.

The walk reads the source with ``ast`` (nothing is imported), so a violation anywhere, even in
a branch no test runs, is found.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "cascade_cli"

# Layer of each module, by longest matching prefix. Base modules are the shared vocabulary
# (errors, clock, config, wire models, credentials); they import no other layer.
LAYER_PREFIXES: dict[str, str] = {
    "cascade_cli": "base",
    "cascade_cli.store": "store",
    "cascade_cli.domain": "domain",
    "cascade_cli.web": "web",
    "cascade_cli.parent": "parent",
    "cascade_cli.client": "client",
    "cascade_cli.child": "child",
    "cascade_cli.doctor": "doctor",
    "cascade_cli.demo": "demo",
    "cascade_cli.cli": "cli",
    "cascade_cli.__main__": "cli",
    "cascade_cli.healthcheck": "cli",
}

# Which layers each layer may import (besides itself). docs/dev/architecture.md draws this.
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "store": {"base"},
    "domain": {"base", "store"},
    "web": {"base", "store", "domain"},
    "parent": {"base", "store", "domain", "web"},
    "client": {"base"},
    "child": {"base", "client"},
    "doctor": {"base", "store", "domain", "client", "child"},
    "demo": {"base", "store", "domain", "web", "parent", "client", "child"},
    "cli": {"base", "store", "domain", "web", "parent", "client", "child", "doctor", "demo"},
}

# Outside the store, SQLAlchemy may appear only as the ``Session`` type a unit of work passes
# down to store functions.
SQLALCHEMY_ALLOWED_NAMES = {"Session"}
# SQL as text: a statement's keywords in capitals, as SQL is written (the word "select" alone is
# a Jinja filter's name, not SQL). f-strings are checked with their placeholders filled in.
SQL_TEXT = re.compile(r"\bSELECT\b[\s\S]*\bFROM\b|\bINSERT\s+INTO\b|\bUPDATE\s+\S+\s+SET\b"
                      r"|\bDELETE\s+FROM\b|\bPRAGMA\s+\w+|\bCREATE\s+(TABLE|INDEX)\b")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: Path
    line: int
    in_function: bool
    type_only: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> str:
    best = ""
    for prefix in LAYER_PREFIXES:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return LAYER_PREFIXES[best]


def source_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def _resolve(node: ast.ImportFrom | ast.Import, package: str) -> list[str]:
    """The cascade_cli modules an import statement loads (``from x import y`` loads x.y when
    y is a module, else x)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        names = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
    return sorted({n for n in names if n == "cascade_cli" or n.startswith("cascade_cli.")})


class _Walker(ast.NodeVisitor):
    def __init__(self, path: Path, lines: list[str]) -> None:
        self.path = path
        self.lines = lines
        self.module = module_name(path)
        self.package = self.module if path.name == "__init__.py" else self.module.rpartition(".")[0]
        self.depth = 0
        self.type_checking = 0
        self.edges: list[Edge] = []
        self.sqlalchemy: list[tuple[int, str]] = []
        self.sql_text: list[int] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_If(self, node: ast.If) -> None:
        if "TYPE_CHECKING" in ast.unparse(node.test):
            self.type_checking += 1
            for child in node.body:
                self.visit(child)
            self.type_checking -= 1
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _record(self, node: ast.Import | ast.ImportFrom) -> None:
        for target in _resolve(node, self.package):
            self.edges.append(Edge(self.module, target, self.path, node.lineno,
                                   in_function=self.depth > 0,
                                   type_only=self.type_checking > 0))
        top = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "sqlalchemy":
                    self.sqlalchemy.append((node.lineno, a.name))
        elif top.split(".")[0] == "sqlalchemy" and not self.type_checking:
            for a in node.names:
                if a.name not in SQLALCHEMY_ALLOWED_NAMES:
                    self.sqlalchemy.append((node.lineno, f"{top}.{a.name}"))

    def visit_Import(self, node: ast.Import) -> None:
        self._record(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._record(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and SQL_TEXT.search(node.value):
            self.sql_text.append(node.lineno)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        if SQL_TEXT.search(str(text)):
            self.sql_text.append(node.lineno)


def walk() -> list[_Walker]:
    walkers = []
    for path in source_files():
        text = path.read_text(encoding="utf-8")
        w = _Walker(path, text.splitlines())
        w.visit(ast.parse(text, filename=str(path)))
        walkers.append(w)
    return walkers


WALKERS = walk()
EDGES = [e for w in WALKERS for e in w.edges]


def where(e: Edge) -> str:
    return f"{e.path.relative_to(PACKAGE.parent)}:{e.line}"


def test_every_module_has_a_layer() -> None:
    assert {layer_of(m) for m in MODULES} <= set(ALLOWED)


def test_no_upward_import() -> None:
    upward = [f"{where(e)}: {e.source} ({layer_of(e.source)}) imports {e.target} "
              f"({layer_of(e.target)})"
              for e in EDGES
              if layer_of(e.target) != layer_of(e.source)
              and layer_of(e.target) not in ALLOWED[layer_of(e.source)]]
    assert not upward, "upward imports (see docs/dev/architecture.md):\n" + "\n".join(upward)


def test_no_function_level_import_of_our_modules() -> None:
    hidden = [f"{where(e)}: {e.source} imports {e.target} inside a function"
              for e in EDGES
              if e.in_function]
    assert not hidden, (
        "import our own modules at the top of the file (the CLI defers a heavy one with "
        "cli.lazy.lazy(), declared at its top):\n" + "\n".join(hidden))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for e in EDGES:
        if not e.type_only and e.target != e.source:
            graph.setdefault(e.source, set()).add(e.target)
    assert not _cycles(graph), f"import cycles: {_cycles(graph)}"


def test_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a two-module loop is reported."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_sqlalchemy_statements_only_in_the_store() -> None:
    outside = [f"{w.path.relative_to(PACKAGE.parent)}:{line}: {name}"
               for w in WALKERS if layer_of(w.module) != "store"
               for line, name in w.sqlalchemy]
    assert not outside, ("build SQL in a cascade_cli.store function and call it; outside the "
                         "store only the Session type may be imported:\n" + "\n".join(outside))


def test_no_sql_text_outside_the_store() -> None:
    # The child's spool is the child's own SQLite file, not the parent's database: it is the
    # child's store and keeps its SQL to itself (docs/dev/architecture.md).
    outside = [f"{w.path.relative_to(PACKAGE.parent)}:{line}"
               for w in WALKERS
               if layer_of(w.module) != "store" and w.module != "cascade_cli.child.spool"
               for line in w.sql_text]
    assert not outside, "SQL text outside the store:\n" + "\n".join(outside)


ARCHITECTURE = PACKAGE.parent / "docs" / "dev" / "architecture.md"


def diagram_edges() -> dict[str, set[str]]:
    """The ``a --> b`` edges of the mermaid diagram in docs/dev/architecture.md."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    block = text.split("```mermaid", 1)[1].split("```", 1)[0]
    edges: dict[str, set[str]] = {}
    for a, b in re.findall(r"^\s*(\w+)\s*-->\s*(\w+)\s*$", block, re.M):
        edges.setdefault(a, set()).add(b)
    return edges


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(edges.get(start, ()))
    while todo:
        layer = todo.pop()
        if layer not in seen:
            seen.add(layer)
            todo.extend(edges.get(layer, ()))
    return seen


def test_the_documented_diagram_is_the_enforced_rule() -> None:
    edges = diagram_edges()
    assert {layer: reachable(edges, layer) for layer in ALLOWED} == ALLOWED


@pytest.mark.parametrize("text,sql", [
    ("SELECT name FROM sqlite_master", True),
    ("UPDATE runs SET status = 'finished'", True),
    ("DELETE FROM deliveries WHERE id = ?", True),
    ("select", False),
    ("Select the feeds from the list", False),
])
def test_sql_text_pattern(text: str, sql: bool) -> None:
    assert bool(SQL_TEXT.search(text)) is sql


@pytest.mark.parametrize("source,target,ok", [
    ("cascade_cli.store.runs", "cascade_cli.domain.notify", False),
    ("cascade_cli.domain.notify", "cascade_cli.store.runs", True),
    ("cascade_cli.web.app", "cascade_cli.cli.main", False),
    ("cascade_cli.child.worker", "cascade_cli.store.engine", False),
    ("cascade_cli.cli.main", "cascade_cli.web.app", True),
])
def test_layer_rule_examples(source: str, target: str, ok: bool) -> None:
    """The rule itself, on the edges the redesign removed and ones it keeps."""
    allowed = layer_of(source) == layer_of(target) or layer_of(target) in ALLOWED[layer_of(source)]
    assert allowed is ok


def test_walker_sees_hidden_imports_sqlalchemy_and_sql_text() -> None:
    """The walk itself can fail a module: a store module with a function-level import of the
    domain, a query builder and SQL text is seen three times over."""
    w = _Walker(PACKAGE / "store" / "example.py", [])
    w.visit(ast.parse("def f():\n    from cascade_cli.domain import notify\n"
                      "from sqlalchemy import select\nx = 'DELETE FROM runs WHERE 1'\n"))
    assert [(e.target, e.in_function) for e in w.edges] == [("cascade_cli.domain.notify", True)]
    assert w.sqlalchemy == [(3, "sqlalchemy.select")]
    assert w.sql_text == [4]
