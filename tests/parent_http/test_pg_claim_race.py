"""The claim race on PostgreSQL: two ``serve-parent`` processes on one database, 32 concurrent
claimers over several nodes, 2,000 allocations: every allocation is handed out exactly once."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
import pytest
from sqlalchemy import func, select

from cascade_cli.clock import SystemClock
from cascade_cli.config import load_settings
from cascade_cli.domain.dispatch import dispatch
from cascade_cli.protocol import FeedIn, MessageTaskIn
from cascade_cli.store import feeds, nodes, tasks
from cascade_cli.store.engine import Store
from cascade_cli.store.models import CLAIMED, Allocation
from tests.parent_http.procs import ParentProc, init_parent, plain_headers, write_config

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
N_ALLOCS = 2000
N_NODES = 8
N_CLAIMERS = 32


def test_two_parents_32_claimers_2000_allocations(tmp_path, pg_url):
    config = write_config(tmp_path, pg_url, batch_size=1, lease_ttl=600,
                          scheduler={"enabled": False}, notify={"enabled": False})
    names = [f"n{i}" for i in range(N_NODES)]
    init_parent(config)
    settings = load_settings(config, environ={})
    store = Store.from_url(pg_url)
    clock = SystemClock()
    children = {}
    with store.session() as s:
        for name in names:  # room for everything: capacity is not what is tested here
            _node, creds = nodes.create_node(s, clock.now(), name, max_capacity=256)
            children[name] = {"api_key": creds.api_key, "api_secret": creds.api_secret}
        ids = []
        for i in range(N_ALLOCS):
            ids.append(feeds.create_feed(s, clock.now(), FeedIn(
                id=f"R{i}", url=f"https://example.com/{i}.xml")).id)
        task = tasks.create_task(s, clock.now(), MessageTaskIn(name="race", mps_id=ids))
    with store.session() as s:
        result = dispatch(s, clock.now(), settings, task_id=task.id)
    assert result.allocations_created == N_ALLOCS

    with ParentProc(config) as p1, ParentProc(config) as p2:
        got: list[str] = []
        lock = threading.Lock()
        errors: list[str] = []
        start = threading.Barrier(N_CLAIMERS)

        def claimer(i: int) -> None:
            child = children[names[i % N_NODES]]
            url = (p1 if i % 2 else p2).url
            mine: list[str] = []
            empty = 0
            with httpx.Client(base_url=url, headers=plain_headers(child), timeout=60) as c:
                start.wait()
                while empty < 3:
                    r = c.post("/api/v1/cascade/claim-task", params={"max": 4})
                    body = r.json()
                    if r.status_code != 200 or body["code"] != 0:
                        errors.append(r.text)
                        return
                    if body["data"] is None:
                        empty += 1
                        continue
                    mine += [pkg["allocation_id"] for pkg in body["data"]]
            with lock:
                got.extend(mine)

        threads = [threading.Thread(target=claimer, args=(i,)) for i in range(N_CLAIMERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert not errors, errors[:3]

    dupes = [a for a, n in Counter(got).items() if n > 1]
    assert not dupes, f"{len(dupes)} allocations handed out twice"
    assert len(got) == N_ALLOCS
    with store.session() as s:
        rows = s.execute(select(Allocation.status, Allocation.epoch, func.count())
                         .group_by(Allocation.status, Allocation.epoch)).all()
    assert rows == [(CLAIMED, 1, N_ALLOCS)]
    store.dispose()
