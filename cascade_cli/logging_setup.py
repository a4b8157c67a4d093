"""Logging for daemons: one line per event, text or JSON, never a secret."""

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


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat().replace(
                "+00:00", "Z"),
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


def setup_logging(level: str = "info", fmt: str = "text") -> None:
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
    for noisy in ("httpx", "httpcore", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
