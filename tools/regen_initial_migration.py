"""Regenerate the initial migration from the models (development only, before 1.0).

Usage: python tools/regen_initial_migration.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config

from cascade_cli.store.engine import build_engine

root = Path(__file__).resolve().parent.parent / "cascade_cli" / "store" / "migrations"
versions = root / "versions"
for old in versions.glob("0001_*.py"):
    old.unlink()
with tempfile.TemporaryDirectory() as tmp:
    engine = build_engine(f"sqlite:///{tmp}/empty.db")
    cfg = Config()
    cfg.set_main_option("script_location", str(root))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
for new in versions.glob("0001_*.py"):
    print("wrote", new)
