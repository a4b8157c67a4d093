"""PostgreSQL query plans of the hot statements: their cost must not grow with the table.

A plan is the planner's choice from its estimates, so these tests give it what a deployment
gives it (a few thousand rows, fresh statistics) and read the plan it picks. A sequential
scan of ``allocations`` inside a claim costs a read of every row for every claim: 0.7 ms of a
0.8 ms claim with 3,000 allocations, and more as the table grows.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text

from cascade_cli.config import load_settings
from cascade_cli.domain.dispatch import dispatch
from cascade_cli.store import allocations as alloc_repo
from cascade_cli.store import migrate
from cascade_cli.store.dialects.postgresql import PostgresqlDialect
from cascade_cli.store.engine import Store
from cascade_cli.store.models import Feed
from tests.core.helpers import make_node, make_task

pytestmark = pytest.mark.postgres

N = 3000


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


def _explain(conn: Any, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    row = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).scalar()
    doc = row if isinstance(row, list) else json.loads(row)
    return _plan_nodes(doc[0]["Plan"])


# psycopg prepares a statement on its fifth use, and PostgreSQL may then keep one generic
# plan for every value: both plans must do without the scan.
@pytest.mark.parametrize("plan_mode", ["force_custom_plan", "force_generic_plan"])
def test_claim_probes_allocations_by_key_not_by_scanning(pg_url: str, clock: Any,
                                                         tmp_path: Path, plan_mode: str) -> None:
    settings = load_settings(environ={}, cwd=tmp_path,
                             overrides={"data_dir": str(tmp_path / "data"),
                                        "parent": {"batch_size": 1}})
    store = Store.from_url(pg_url)
    try:
        migrate.upgrade(store)
        now = clock.now()
        ids = [f"F{i}" for i in range(N)]
        with store.session() as s:
            s.execute(insert(Feed), [{"id": f, "mp_name": f, "url": f"https://example.com/{f}",
                                      "kind": "rss", "status": 1, "created_at": now,
                                      "updated_at": now} for f in ids])
        node = make_node(store, now, "child-a", capacity=4)
        task_id = make_task(store, now, ids)
        with store.session() as s:
            assert dispatch(s, now, settings, task_id=task_id).allocations_created == N
        with store.engine.connect() as c:  # statistics, as autovacuum gathers them
            c.exec_driver_sql("ANALYZE")
            c.commit()

        claiming = PostgresqlDialect.claiming
        with store.engine.connect() as conn:
            # the statement and values exactly as the claim sends them
            plan_ = claiming.plan(conn.dialect)
            bound = plan_.bind({
                "b_node": node.id, "b_cutoff": now - timedelta(minutes=5), "b_want": 1,
                "b_capacity": 4, "b_now": now, "b_lease": now + timedelta(minutes=5)})
            conn.exec_driver_sql(f"SET plan_cache_mode = {plan_mode}")
            plan = _explain(conn, plan_.sql, bound)

            scanned = [n for n in plan if n["Node Type"] == "Seq Scan"
                       and n.get("Relation Name") == "allocations"]
            shape = [(n["Node Type"], n.get("Relation Name")) for n in plan]
            assert not scanned, f"the claim scans the allocations table: {shape}"
            # Every probe of allocations is by key, by state or into an index of active
            # allocations only: none reads a node's whole history (its finished
            # allocations) to count what it holds now.
            partial = set(conn.scalars(text(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'allocations' "
                "AND indexdef LIKE '%WHERE%status%'")))
            probes = [(n["Index Name"], n.get("Index Cond", "")) for n in plan
                      if n.get("Relation Name") == "allocations" and "Index Name" in n]
            assert probes and all("status" in cond or "(id)" in cond or name in partial
                                  for name, cond in probes), probes

            # and the claim still claims exactly one allocation
            with store.session() as s:
                claimed = alloc_repo.claim(s, now, s.merge(node), settings, max_count=1)
            assert len(claimed) == 1
    finally:
        store.dispose()
