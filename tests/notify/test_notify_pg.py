"""Two notifiers (separate engines = two parent processes) share one PostgreSQL outbox."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime

import pytest

from cascade_cli.clock import FakeClock
from cascade_cli.domain.notify import Notifier
from cascade_cli.store import migrate
from cascade_cli.store.engine import Store
from cascade_cli.store.models import Delivery, MessageTask, new_id
from tests.notify.receivers import Receiver

pytestmark = pytest.mark.postgres


def test_each_delivery_sent_once_by_two_notifiers(pg_url, fast_settings):
    clock = FakeClock(datetime(2026, 4, 1, tzinfo=UTC))
    rec = Receiver().start()
    stores = [Store.from_url(pg_url, pool_size=4) for _ in range(2)]
    try:
        migrate.upgrade(stores[0])
        with stores[0].session() as s:
            s.add(MessageTask(id="t-pg", name="t", mps_id=[], created_at=clock.now(),
                              updated_at=clock.now()))
            for i in range(40):
                s.add(Delivery(id=new_id(), idempotency_key=f"run:{i}", task_id="t-pg",
                               url=rec.url, body="{}", status="pending",
                               next_attempt_at=clock.now(), created_at=clock.now(),
                               updated_at=clock.now()))
        notifiers = [Notifier(st, clock, fast_settings) for st in stores]
        barrier = threading.Barrier(2)

        def work(n: Notifier) -> None:
            barrier.wait()
            while n.deliver_due(limit=5):
                pass

        threads = [threading.Thread(target=work, args=(n,)) for n in notifiers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for n in notifiers:
            n.close()
        keys = Counter(r.headers["idempotency-key"] for r in rec.requests)
        assert len(keys) == 40 and set(keys.values()) == {1}
    finally:
        rec.stop()
        for st in stores:
            st.dispose()
