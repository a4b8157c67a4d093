"""How fast the machine was while a benchmark ran, so figures from different days compare.

The development machine is a shared virtual machine: on 2026-11-28 the same code measured
2.2-2.5 times the CPU per allocation it had measured the day before (the planning benchmark,
which is one process doing fixed work, 0.50 s one day and 1.24 s the next). A throughput
figure alone cannot tell a slower program from a slower machine, so every benchmark also
reports:

* ``reference_ms``: the CPU time of a fixed pure-Python workload (JSON, hashing, dicts,
  datetime formatting: the kinds of work the parent and the children do), best of five. Divide
  two runs' figures by their ``reference_ms`` to compare them across days;
* ``steal_pct``: the share of the machine's CPU time the hypervisor gave to other guests
  during the run (``/proc/stat``), when the kernel reports it. Several percent means the
  figures are low for reasons outside the program.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def _workload() -> int:
    doc = {"id": "a" * 32, "title": "标题 title", "n": 0, "tags": ["x", "y", "z"],
           "content": "lorem ipsum " * 40}
    start = datetime(2026, 1, 1, tzinfo=UTC)
    total = 0
    for i in range(4000):
        doc["n"] = i
        text = json.dumps(doc)
        back = json.loads(text)
        total += len(hashlib.sha256(text.encode()).hexdigest()) + len(back)
        total += len((start + timedelta(seconds=i)).isoformat())
        total += sum(k for k in range(50) if k % 3)
    return total


def reference_ms(rounds: int = 5) -> float:
    """CPU milliseconds of the fixed workload (best of ``rounds``): lower is a faster machine."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        _workload()
        best = min(best, time.process_time() - t0)
    return round(best * 1000, 1)


def _cpu_jiffies() -> tuple[int, int] | None:
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    return sum(values), values[7] if len(values) > 7 else 0


class StealMeter:
    """Share of CPU time stolen by the hypervisor between ``start()`` and ``result()``."""

    def __init__(self) -> None:
        self._start: tuple[int, int] | None = None

    def start(self) -> StealMeter:
        self._start = _cpu_jiffies()
        return self

    def pct(self) -> float | None:
        end = _cpu_jiffies()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        return round(100 * (end[1] - self._start[1]) / (end[0] - self._start[0]), 1)


def machine_report(steal: StealMeter | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {"reference_ms": reference_ms()}
    if steal is not None:
        report["steal_pct"] = steal.pct()
    return report
