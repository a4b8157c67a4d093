"""Issue 18: the schema downgrade docs/migration.md gives an operator (Rollback, step 4) is run
exactly as written, against a Cascade parent's SQLite database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect

from cascade_cli.store import migrate
from cascade_cli.store.engine import Store

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "migration.md"


def _documented_command() -> str:
    lines = [line.strip() for line in DOC.read_text(encoding="utf-8").splitlines()
             if line.strip().startswith('python -c "from cascade_cli')]
    assert len(lines) == 1, lines
    return lines[0]


def test_documented_downgrade_command_works(cli, parent_dir: Path) -> None:
    assert cli("init").exit_code == 0
    db = parent_dir / "state" / "cascade.db"
    env = dict(os.environ)  # CASCADE_* already cleared by the cli fixture
    env.pop("CASCADE_CONFIG", None)  # found as ./config.yaml, as the doc says
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(["bash", "-c", _documented_command()], cwd=parent_dir, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"({migrate.head_revision()!r}, '0004')"

    store = Store.from_url(f"sqlite:///{db}")
    try:
        assert migrate.current_revision(store) == "0004"
        assert "legacy" not in {c["name"] for c in inspect(store.engine).get_columns("nodes")}
    finally:
        store.dispose()
    # and back: cascade init upgrades again
    assert cli("init").exit_code == 0
    store = Store.from_url(f"sqlite:///{db}")
    try:
        assert migrate.current_revision(store) == migrate.head_revision()
    finally:
        store.dispose()
