"""Cron expressions: parsing, validation and fire times (croniter underneath).

Accepted forms
  * 5 fields: ``minute hour day-of-month month day-of-week`` (classic crontab), and the
    ``@hourly`` / ``@daily`` / ``@weekly`` / ``@monthly`` / ``@yearly`` aliases.
  * 6 fields: ``second minute hour day-of-month month day-of-week`` - seconds FIRST.

Why seconds first: the original system (APScheduler / Quartz conventions, which its users' task
definitions were written for) read a 6-field expression with the seconds in front, so
``0 */5 * * * *`` means "every five minutes at second 0". croniter's own 6-field mode puts the
seconds LAST; we always pass ``second_at_beginning=True`` so stored expressions keep their
original meaning. A 7th (year) field is refused. There is no guessing: the same text always
means the same schedule.

Expressions are evaluated in UTC unless a time zone is given (``parent.scheduler.timezone`` when
the configuration has it). Every function returns aware UTC datetimes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from cascade_cli.errors import InvalidInput

_ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_EPSILON = timedelta(microseconds=1)

FIELD_HELP = ("use 5 fields 'minute hour day month weekday' (e.g. '0 9 * * *') or 6 fields with "
              "the seconds first 'second minute hour day month weekday' (e.g. '0 */5 * * * *')")


class InvalidCron(InvalidInput):
    """A cron expression that cannot be used; the message says why and how to write one."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="cron_exp", code="invalid_cron", hint=FIELD_HELP)


@dataclass(frozen=True)
class CronSpec:
    expr: str  # normalised (single spaces)
    has_seconds: bool

    def _iter(self, start: datetime, tz: tzinfo) -> croniter:
        return croniter(self.expr, start.astimezone(tz), second_at_beginning=self.has_seconds)

    def next_after(self, after: datetime, tz: tzinfo = UTC) -> datetime:
        """The first fire time strictly after ``after``."""
        return self._iter(after, tz).get_next(datetime).astimezone(UTC)

    def prev_at_or_before(self, when: datetime, tz: tzinfo = UTC) -> datetime | None:
        """The last fire time at or before ``when`` (None if there is none)."""
        try:
            return self._iter(when + _EPSILON, tz).get_prev(datetime).astimezone(UTC)
        except CroniterBadDateError:
            return None


def timezone_for(name: str | None) -> tzinfo:
    if not name or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"unknown time zone {name!r}", field="timezone",
                           hint="use an IANA name such as 'Asia/Shanghai' or 'UTC'") from exc


@functools.lru_cache(maxsize=1024)
def parse_cron(expr: str | None) -> CronSpec:
    """Validate ``expr``; raise ``InvalidCron`` with a readable reason."""
    if expr is None or not str(expr).strip():
        raise InvalidCron("cron expression is empty")
    text = " ".join(str(expr).split())
    if text.startswith("@"):
        if text.lower() not in _ALIASES:
            raise InvalidCron(f"invalid cron expression {text!r}: unknown alias "
                              f"(known: {', '.join(sorted(_ALIASES))})")
        spec = CronSpec(text.lower(), False)
    else:
        fields = text.split(" ")
        if len(fields) not in (5, 6):
            raise InvalidCron(f"invalid cron expression {text!r}: {len(fields)} fields, "
                              "expected 5 or 6")
        spec = CronSpec(text, len(fields) == 6)
    try:
        # Constructing validates the fields; one get_next proves it can ever fire
        # ('0 0 31 2 *' is syntactically fine but never happens).
        spec.next_after(datetime(2026, 1, 1, tzinfo=UTC))
    except CroniterBadDateError as exc:
        raise InvalidCron(f"invalid cron expression {text!r}: it never fires") from exc
    except (CroniterError, ValueError, KeyError, TypeError, IndexError) as exc:
        reason = str(exc).replace(f"[{text}] ", "").strip() or type(exc).__name__
        raise InvalidCron(f"invalid cron expression {text!r}: {reason}") from exc
    return spec


def validate_cron(expr: str | None) -> str:
    """Return the normalised expression or raise ``InvalidCron`` (used by task validation)."""
    return parse_cron(expr).expr


def next_fire_times(expr: str, after: datetime, n: int = 5, *, tz: tzinfo = UTC
                    ) -> list[datetime]:
    """The next ``n`` fire times strictly after ``after``, as aware UTC datetimes."""
    spec = parse_cron(expr)
    it = spec._iter(after, tz)
    return [it.get_next(datetime).astimezone(UTC) for _ in range(max(0, n))]
