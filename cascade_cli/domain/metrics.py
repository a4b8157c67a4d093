"""Prometheus metrics, one ``CollectorRegistry`` per app (no global registry, tests stay apart)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from cascade_cli.store import gauges

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.allocations = Gauge("cascade_allocations", "Allocations by status", ["status"],
                                 registry=r)
        self.online_nodes = Gauge("cascade_online_nodes", "Nodes with a recent heartbeat",
                                  registry=r)
        self.claims = Counter("cascade_claims_total", "Allocations handed out by claims",
                              registry=r)
        self.lease_expiries = Counter("cascade_lease_expiries_total",
                                      "Expired leases handled by the reaper", ["outcome"],
                                      registry=r)
        self.auth_failures = Counter("cascade_auth_failures_total",
                                     "Refused authentication attempts", ["reason"], registry=r)
        # The process's CPU, memory and open files (process_*) and the Python version
        # (python_info), as a default registry would have them.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.scheduler_ticks = Counter("cascade_scheduler_ticks_total",
                                       "Cron ticks handled, by what happened (fired, "
                                       "catch_up, skipped_overlap, misfire_skipped, ...)",
                                       ["action"], registry=r)
        self.deliveries = Counter("cascade_webhook_deliveries_total",
                                  "Webhook delivery attempts by outcome (delivered, retry, "
                                  "dead)", ["outcome"], registry=r)
        self.feed_fetches = Counter("cascade_feed_fetches_total",
                                    "Per-feed fetch outcomes reported by children (success, "
                                    "not_modified, failed)", ["status"], registry=r)
        self.requests = Counter("cascade_http_requests_total", "HTTP requests",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("cascade_http_request_duration_seconds",
                                 "HTTP request latency", ["method", "route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)

        # The labelled children per (method, route, status): ``labels()`` validates and
        # looks them up under a lock on every call, a noticeable cost on every request.
        self._per_request: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._per_status: dict[str, Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._per_request.get(key)
        if children is None:
            children = (self.requests.labels(method, route, str(status)),
                        self.latency.labels(method, route))
            self._per_request[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def record_feed_results(self, statuses: dict[str, int]) -> None:
        """Counts per status of one completion's feed results (labelled children cached:
        this runs once per completion, on the hot path)."""
        for status, n in statuses.items():
            child = self._per_status.get(status)
            if child is None:
                child = self._per_status[status] = self.feed_fetches.labels(status)
            child.inc(n)

    def record_reap(self, result: dict[str, Any]) -> None:
        for outcome in ("requeued", "timed_out"):
            n = result.get(outcome)
            if isinstance(n, int) and n > 0:
                self.lease_expiries.labels(outcome).inc(n)

    def refresh_from_db(self, s: Session, now: datetime, offline_after: float) -> None:
        """Gauges that describe database state are read at scrape time."""
        for status, n in gauges.allocations_by_status(s).items():
            self.allocations.labels(status).set(n)
        self.online_nodes.set(gauges.online_nodes(s, now - timedelta(seconds=offline_after)))

    def render(self) -> bytes:
        return generate_latest(self.registry)
