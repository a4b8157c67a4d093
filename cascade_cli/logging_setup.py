"""Logging for daemons: one line per event, text or JSON, never a secret.

Every logger of ours lives under ``cascade.`` (``cascade.parent``, ``cascade.dispatch``,
``cascade.runs``, ``cascade.scheduler``, ``cascade.notify``, ``cascade.nodes``,
``cascade.node``, ``cascade.access``, ``cascade.child``...), so one name filters them all.
Timestamps are UTC with the zone written out (``2026-12-06T20:03:37.123Z``), as the CLI
prints times.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

# Defence in depth: even if a secret reaches a log call by mistake, it does not reach the log.
_SECRET_PATTERNS = [
    re.compile(r"CS[A-Za-z0-9_\-]{20,}"),
    re.compile(r"(AK-SK\s+[A-Za-z0-9_\-]{1,64}:)\S+"),
    re.compile(r"(Bearer\s+)[A-Za-z0-9_\-\.]+"),
    re.compile(r"hmac-sha256\$[0-9a-f]+"),
    re.compile(r"sha256\$[0-9a-f]+"),
]


def redact(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + "***", text)
        else:
            text = pattern.sub("CS***", text) if pattern.pattern.startswith("CS") else \
                pattern.sub("***", text)
    return text


def utc_timestamp(created: float) -> str:
    """``record.created`` as ISO-8601 UTC with milliseconds and a ``Z``."""
    stamp = datetime.fromtimestamp(created, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class RedactingFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        # The server's local time without a zone cannot be lined up with the CLI's, the
        # database's or another host's log.
        return utc_timestamp(record.created)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            payload.update({k: v for k, v in extra.items() if k not in payload})
        if record.exc_info:
            payload["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, ensure_ascii=False, default=str)


def setup_logging(level: str = "info", fmt: str = "text", *, access_log: bool = False) -> None:
    """Log to standard error at ``level``. ``access_log``: one INFO line per HTTP request
    (logger ``cascade.access``); off, that logger stays at WARNING and costs one level
    check per request."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # alembic.runtime.migration tells "Context impl SQLiteImpl" on every schema check.
    # uvicorn.error's INFO lines ("Started server process", "Uvicorn running on") repeat the
    # parent's own startup line under another name; its warnings and errors stay.
    for noisy in ("httpx", "httpcore", "uvicorn.access", "uvicorn.error", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("cascade.access").setLevel(logging.INFO if access_log else logging.WARNING)
