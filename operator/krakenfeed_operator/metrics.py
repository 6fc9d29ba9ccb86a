"""The operator's Prometheus metrics: reconcile passes and feeds by Ready.

Passes are counted and timed as they end (a few a second at most); the feeds'
Ready conditions are read from the reconciler's last written statuses when
Prometheus scrapes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from krakenfeed.contracts import monitoring as m
from krakenfeed_operator.reconcile import Reconciler

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
READY_STATUSES = ("True", "False", "Unknown")


class _FeedsCollector(Collector):
    def __init__(self, reconciler: Reconciler) -> None:
        self._reconciler = reconciler

    def collect(self) -> Iterable[Metric]:
        ready = self._reconciler.ready_conditions()
        feeds = GaugeMetricFamily(
            m.OPERATOR_FEEDS.name, m.OPERATOR_FEEDS.help, labels=m.OPERATOR_FEEDS.labels
        )
        counts = Counter(ready.values())
        for status in READY_STATUSES:
            feeds.add_metric([status], counts[status])
        yield feeds
        each = GaugeMetricFamily(
            m.OPERATOR_FEED_READY.name,
            m.OPERATOR_FEED_READY.help,
            labels=m.OPERATOR_FEED_READY.labels,
        )
        for (namespace, name), status in sorted(ready.items()):
            each.add_metric([namespace, name], 1.0 if status == "True" else 0.0)
        yield each


class OperatorMetrics:
    def __init__(self, reconciler: Reconciler) -> None:
        self.registry = CollectorRegistry()
        self._passes = PromCounter(
            m.OPERATOR_RECONCILES.name,
            m.OPERATOR_RECONCILES.help,
            m.OPERATOR_RECONCILES.labels,
            registry=self.registry,
        )
        self._seconds = Histogram(
            m.OPERATOR_RECONCILE_SECONDS.name,
            m.OPERATOR_RECONCILE_SECONDS.help,
            registry=self.registry,
            buckets=RECONCILE_BUCKETS,
        )
        self.registry.register(_FeedsCollector(reconciler))
        self._server: Any = None

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Count and time one reconcile pass; an exception counts as an error."""
        started = time.perf_counter()
        result = "error"
        try:
            yield
            result = "ok"
        finally:
            self._seconds.observe(time.perf_counter() - started)
            self._passes.labels(result).inc()

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """``GET /metrics`` on ``port``, from a daemon thread."""
        self._server, _ = start_http_server(port, host, registry=self.registry)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
