"""HTTP header times, shared by the child's client and the parent's webhook sender."""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime

from cascade_cli.clock import ensure_utc


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta seconds or an HTTP date.

    ``None`` when absent or unreadable (the caller then uses its own backoff); never negative.
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, (ensure_utc(when) - now).total_seconds())
