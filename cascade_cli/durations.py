"""The one parser for durations a person types: ``--ttl``, ``--older-than``.

``3600`` (seconds), ``45s``, ``90m``, ``12h``, ``7d``, ``2w``, decimals (``1.5h``) and
combinations (``1d12h``). Bounded: at least ``MIN_SECONDS``; a value beyond ``MAX_SECONDS``
is refused with the limit instead of overflowing ``datetime`` arithmetic later
(``--ttl 100000000w`` used to end in an OverflowError traceback).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from cascade_cli.errors import InvalidInput

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# 100 years: far beyond any sensible token lifetime or retention age, far within what
# datetime arithmetic on "now" can hold (years 1..9999).
MAX_SECONDS = 100 * 365 * 86400
# A second: shorter is a typo, not a lifetime (``--ttl 0.0000001`` made a token that had
# expired before it was printed) nor a useful retention age.
MIN_SECONDS = 1.0
_PART = re.compile(r"\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*([smhdw])", re.IGNORECASE)
_NUMBER = re.compile(r"\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*")
EXAMPLES = "3600, 45s, 90m, 12h, 7d, 2w or 1d12h"


def parse_seconds(text: str, *, field: str, max_seconds: float = MAX_SECONDS,
                  min_seconds: float = MIN_SECONDS) -> float:
    """``text`` as a number of seconds from ``min_seconds`` to ``max_seconds``;
    ``InvalidInput`` (naming ``field``) otherwise."""
    raw = text or ""
    total: float
    plain = _NUMBER.fullmatch(raw)
    if plain:
        total = float(plain.group(1))
    else:
        total, pos = 0.0, 0
        for m in _PART.finditer(raw):
            if m.start() != pos:
                break
            total += float(m.group(1)) * UNITS[m.group(2).lower()]
            pos = m.end()
        if pos == 0 or raw[pos:].strip():
            raise InvalidInput(f"{field}: not a duration: {text!r} (use e.g. {EXAMPLES})",
                               field=field)
    if not math.isfinite(total) or total <= 0:
        raise InvalidInput(f"{field}: a duration must be positive, got {text!r}", field=field)
    if total < min_seconds:
        raise InvalidInput(f"{field}: {text!r} is too short (at least {min_seconds:g} s)",
                           field=field)
    if total > max_seconds:
        raise InvalidInput(f"{field}: {text!r} is too long (at most {_human(max_seconds)})",
                           field=field)
    return total


def parse_timedelta(text: str, *, field: str, max_seconds: float = MAX_SECONDS,
                    min_seconds: float = MIN_SECONDS) -> timedelta:
    return timedelta(seconds=parse_seconds(text, field=field, max_seconds=max_seconds,
                                           min_seconds=min_seconds))


def _human(seconds: float) -> str:
    days = seconds / 86400
    if days >= 365 and days % 365 == 0:
        return f"{int(days // 365)} years"
    return f"{int(days)} days" if days >= 1 else f"{seconds:g} s"
