"""The child's own Prometheus metrics, served on ``child.metrics_port`` (off by default).

Counters are bumped once per feed fetched or allocation finished, with their labelled
children looked up once (``labels()`` takes a lock and validates on every call). The server
is prometheus_client's own (a thread); the registry is this child's, not the global one.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

_FETCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)


class ChildMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.claimed = Counter("cascade_child_allocations_claimed_total",
                               "Allocations claimed from the parent", registry=r)
        self.finished = Counter("cascade_child_allocations_total",
                                "Allocations finished, by outcome (completed, spooled, lost, "
                                "released)", ["outcome"], registry=r)
        self.fetches = Counter("cascade_child_feed_fetches_total",
                               "Feed fetches by outcome (success, not_modified, failed)",
                               ["status"], registry=r)
        self.fetch_seconds = Histogram("cascade_child_feed_fetch_seconds",
                                       "Time one feed fetch took", buckets=_FETCH_BUCKETS,
                                       registry=r)
        self.articles = Counter("cascade_child_articles_total", "Articles fetched",
                                registry=r)
        self.held = Gauge("cascade_child_allocations_held", "Allocations held right now",
                          registry=r)
        self._children: dict[tuple[str, str], Any] = {}

    def _child(self, metric: Counter, label: str) -> Any:
        key = (metric._name, label)  # noqa: SLF001 - the family's name, for the cache key
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(label)
        return child

    def feed_fetched(self, status: str, seconds: float, articles: int) -> None:
        self._child(self.fetches, status).inc()
        self.fetch_seconds.observe(seconds)
        if articles:
            self.articles.inc(articles)

    def allocation_finished(self, outcome: str) -> None:
        self._child(self.finished, outcome).inc()

    def serve(self, host: str, port: int) -> Any:
        """Start ``/metrics`` on ``host:port`` in a thread; returns the server (to shut down)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server
