"""Plain values of the store that other layers name without loading SQLAlchemy (the CLI's
option help and defaults are built when ``cascade`` starts, see ``cli/lazy.py``)."""

from __future__ import annotations

# Allocation states (PROTOCOL.md "Allocation states").
PENDING = "pending"
CLAIMED = "claimed"
EXECUTING = "executing"
COMPLETED = "completed"
FAILED = "failed"
TIMEOUT = "timeout"
ALLOCATION_STATES = (PENDING, CLAIMED, EXECUTING, COMPLETED, FAILED, TIMEOUT)

# ``cascade import we-mp-rss``: where a Cascade child fetches an imported 公众号's RSS.
DEFAULT_FEED_URL = "http://127.0.0.1:8001/feed/{id}.xml"
