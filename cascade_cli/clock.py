"""Injectable clock. No module reads the wall clock directly: take a ``Clock``.

All times inside Cascade are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock for tests: time moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def set(self, when: datetime) -> None:
        self._mono += (when - self._now).total_seconds()
        self._now = when


def ensure_utc(value: datetime) -> datetime:
    """Naive datetimes are UTC (PROTOCOL.md); aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def isoformat_z(value: datetime | None) -> str | None:
    """ISO-8601 with an explicit ``Z`` offset, as the protocol requires on output."""
    if value is None:
        return None
    return ensure_utc(value).isoformat().replace("+00:00", "Z")
