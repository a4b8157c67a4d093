"""The spool keeps results until acknowledged, across process death."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cascade_cli.child.spool import Spool, SpoolBusy


def test_roundtrip_ack_and_drop(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db")
    assert sp.is_empty()
    sp.add_articles("a1", 3, "F1", [{"title": "文章", "url": f"u{i}"} for i in range(5)])
    sp.add_articles("a2", 1, "F2", [{"title": "x", "url": "y"}])
    sp.add_completion("a1", "t1", 3, [{"feed_id": "F1", "status": "success"}], 5)
    assert sp.allocation_ids() == ["a1", "a2"]
    batch = sp.articles("a1", 2)
    assert [a.article["url"] for a in batch] == ["u0", "u1"] and batch[0].epoch == 3
    sp.ack_articles([a.seq for a in batch], allocation_id="a1", new_count=2)
    assert len(sp.articles("a1", 10)) == 3
    comp = sp.completion("a1")
    assert comp and comp.new_count == 2 and comp.article_count == 5 and comp.task_id == "t1"
    sp.ack_articles([a.seq for a in sp.articles("a1", 10)])
    sp.ack_completion("a1")
    assert sp.allocation_ids() == ["a2"]
    assert sp.drop_allocation("a2") == 1 and sp.is_empty()
    sp.close()


def test_survives_sigkill_mid_write(tmp_path: Path) -> None:
    """A child killed with SIGKILL right after spooling loses nothing that was committed."""
    path = tmp_path / "s.db"
    code = f"""
import os, signal
from cascade_cli.child.spool import Spool
sp = Spool({str(path)!r})
sp.add_articles("a1", 1, "F1", [{{"title": "t", "url": "u%d" % i}} for i in range(100)])
sp.add_completion("a1", "t1", 1, [{{"feed_id": "F1", "status": "success"}}], 100)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=os.getcwd(), timeout=30)
    assert proc.returncode == -9
    sp = Spool(path)
    assert sp.counts() == {"articles": 100, "completions": 1}
    assert sp.completion("a1").article_count == 100
    sp.close()


def test_one_process_per_spool(tmp_path: Path) -> None:
    first = Spool(tmp_path / "s.db")
    with pytest.raises(SpoolBusy):
        Spool(tmp_path / "s.db")
    first.close()
    Spool(tmp_path / "s.db").close()  # free again once closed
