from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from cascade_cli.config import Settings, load_settings
from cascade_cli.store.engine import Store
from cascade_cli.store.models import Article, ScheduleRun, new_id
from tests.notify.receivers import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def fast_settings(tmp_path: Path) -> Settings:
    return load_settings(environ={}, cwd=tmp_path, overrides={
        "data_dir": str(tmp_path / "data"), "parent.notify.timeout": 0.5,
        "parent.notify.max_attempts": 5, "parent.notify.backoff_base": 2,
        "parent.notify.backoff_max": 60})


def add_run(store: Store, now: datetime, task_id: str,
            articles: dict[str, int] | None = None) -> str:
    """A run of the task with ``{feed_id: number of new articles}``."""
    run_id = new_id()
    with store.session() as s:
        s.add(ScheduleRun(id=run_id, task_id=task_id, scheduled_for=now, trigger="manual",
                          status="running", created_at=now))
        for feed_id, n in (articles or {}).items():
            for i in range(n):
                s.add(Article(id=new_id(), feed_id=feed_id, title=f"{feed_id} article {i}",
                              url=f"https://example.org/{feed_id}/{i}",
                              publish_time=now - timedelta(hours=i), schedule_run_id=run_id,
                              created_at=now))
    return run_id
