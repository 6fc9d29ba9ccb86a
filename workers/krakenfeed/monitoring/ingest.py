"""What the ingest worker exports, and when it is live and ready.

Ready: a WebSocket to Kraken is open and the broker answers. Live: the worker's
monitor thread (which pings, and closes a silent socket so the read loop moves
on) keeps ticking.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from krakenfeed.contracts import DeadLetter, QualityEvent, Stream, Ticker, Trade
from krakenfeed.contracts import monitoring as m
from krakenfeed.ingest.worker import IngestWorker
from krakenfeed.kafka import broker_check
from krakenfeed.monitoring.families import connected, family, samples
from krakenfeed.monitoring.probes import Probe
from krakenfeed.monitoring.server import HealthServer, serving

_STREAM_OF = {
    Ticker.__name__: Stream.TICKER,
    Trade.__name__: Stream.TRADE,
    DeadLetter.__name__: Stream.DLQ,
    QualityEvent.__name__: Stream.QUALITY,
}
MONITOR_SILENT_S = 15.0
"""The monitor thread ticks at least every 0.25 s; this long without a tick is a hang."""


class IngestCollector(Collector):
    """Reads the worker's plain counters at scrape time."""

    def __init__(self, worker: IngestWorker, broker: Probe) -> None:
        self._worker = worker
        self._broker = broker
        self._feed = worker.settings.feed.name

    def collect(self) -> Iterable[Metric]:
        feed = self._feed
        metrics = self._worker.metrics
        # dict() copies in one step under the GIL; the read loop may add keys meanwhile.
        produced: dict[str, int] = {}
        for kind, n in dict(metrics.produced).items():
            stream = _STREAM_OF[kind].value
            produced[stream] = produced.get(stream, 0) + n
        quality = Stream.QUALITY.value
        produced[quality] = produced.get(quality, 0) + metrics.stale_events
        yield samples(m.INGEST_FRAMES, feed, dict(metrics.frames))
        yield samples(m.INGEST_RECORDS, feed, produced)
        yield samples(m.INGEST_INVALID, feed, {str(r): n for r, n in dict(metrics.invalid).items()})
        yield samples(m.INGEST_DUPLICATES, feed, {(): metrics.duplicates})
        yield samples(m.INGEST_RECONNECTS, feed, dict(metrics.reconnects))
        yield samples(m.INGEST_CONNECT_FAILURES, feed, dict(metrics.connect_failures))
        now_ns = time.time_ns()
        ages = family(m.INGEST_LAST_FRAME_AGE)
        assert isinstance(ages, GaugeMetricFamily)
        for product, age_s in metrics.last_frame_age_s(now_ns).items():
            ages.add_metric([feed, product], max(0.0, age_s))
        yield ages
        yield connected(
            feed,
            {m.PEER_KRAKEN: self._worker.connected, m.PEER_KAFKA: self._broker.problem is None},
        )


def ingest_ready(worker: IngestWorker, broker: Probe) -> list[str]:
    problems = [] if worker.connected else [f"kraken: not connected to {worker.url}"]
    if broker.problem is not None:
        problems.append(broker.problem)
    return problems


def ingest_live(worker: IngestWorker) -> list[str]:
    silent_s = (time.monotonic_ns() - worker.monitor_beat_ns) / 1e9
    if silent_s > MONITOR_SILENT_S:
        return [f"the ingest monitor thread has not run for {silent_s:.1f} s"]
    return []


@contextmanager
def serving_ingest(
    worker: IngestWorker, port: int, host: str = "0.0.0.0"
) -> Iterator[HealthServer]:
    """The worker's endpoint on ``port`` (0: a free one) while the block runs."""
    broker = Probe(m.PEER_KAFKA, broker_check(worker.settings.broker)).start()
    registry = CollectorRegistry()
    registry.register(IngestCollector(worker, broker))
    with serving(
        registry,
        lambda: ingest_live(worker),
        lambda: ingest_ready(worker, broker),
        [broker],
        port,
        host,
    ) as server:
        yield server
