"""What the detector exports, and when it is live and ready.

Consumer lag and records consumed come from librdkafka's own statistics, which
the stream's consumer hands over every few seconds from its poll: nothing is
counted per event, and a scrape never waits on the broker. Rows, anomalies and
batch figures come from the PostgreSQL sink, per write.

Ready: the broker and PostgreSQL both answer, and the sink's writes succeed.
Live: the stream's consumer keeps polling, which its statistics prove, and moves
on when records wait for it. A consumer can poll and still fetch nothing: here it
happened when the broker's group coordinator stopped answering, and the topics
held records the detector never read while it stayed live. So when no position
has moved for ``STUCK_S``, the ends of those partitions are asked of the broker
(librdkafka's own figures come from fetches, which a stuck consumer no longer
makes); records beyond the positions make the detector not live, and a restart
resumes it from its commits. Waiting out a PostgreSQL outage is not being stuck.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from krakenfeed.contracts import FeedId
from krakenfeed.contracts import monitoring as m
from krakenfeed.kafka import broker_check, end_offsets
from krakenfeed.monitoring.families import connected, histogram, samples
from krakenfeed.monitoring.probes import Periodic, Probe, postgres_check
from krakenfeed.monitoring.server import HealthServer, serving
from krakenfeed.store import PostgresSink
from krakenfeed.store.connection import connect
from krakenfeed.store.sink import DATABASE_AVAILABLE

log = logging.getLogger(__name__)

BATCH_RECORDS_BUCKETS = (1, 10, 100, 500, 1_000, 2_000, 5_000, 10_000, 50_000)
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
POLL_SILENT_S = 60.0
"""Statistics come every few seconds while the stream polls; a minute without is a hang."""
STUCK_S = 300.0
"""No position moved for five minutes with records beyond them: stuck."""

Partition = tuple[str, str]


@dataclass
class ConsumerStats:
    """The latest librdkafka statistics of the stream's consumer, by topic partition."""

    consumed: dict[Partition, int] = field(default_factory=dict)
    lag: dict[Partition, int] = field(default_factory=dict)
    last_ns: int = field(default_factory=time.monotonic_ns)
    """When statistics last came (monotonic); the start until the first."""
    sources: frozenset[str] = frozenset()
    """The topics the stream reads, whose positions tell whether it moves on (not
    its state's changelogs, which it reads only to recover)."""
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    """The application's next offset on each partition of ``sources``."""
    moved_ns: int = field(default_factory=time.monotonic_ns)
    """When ``positions`` last changed (monotonic)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, stats_json: str) -> None:
        """librdkafka's ``stats_cb``: runs on the stream's thread, inside its poll."""
        stats: dict[str, Any] = json.loads(stats_json)
        consumed: dict[Partition, int] = {}
        lag: dict[Partition, int] = {}
        positions: dict[tuple[str, int], int] = {}
        for topic, about in stats.get("topics", {}).items():
            for partition, numbers in about.get("partitions", {}).items():
                if partition == "-1":  # librdkafka's internal unassigned partition
                    continue
                key = (topic, partition)
                consumed[key] = numbers.get("rxmsgs", 0)
                behind = _lag(numbers)
                if behind is not None:
                    lag[key] = behind
                    if topic in self.sources:
                        positions[(topic, int(partition))] = _position(numbers)
        now = time.monotonic_ns()
        with self._lock:
            # A partition's counter survives its revocation: Prometheus sees no reset.
            self.consumed.update(consumed)
            self.lag = lag
            self.last_ns = now
            if positions != self.positions:
                self.positions = positions
                self.moved_ns = now

    def excuse(self) -> None:
        """The stream was told to wait (PostgreSQL unavailable): count it as moving."""
        with self._lock:
            self.moved_ns = time.monotonic_ns()

    def unmoved(self) -> tuple[float, dict[tuple[str, int], int]]:
        """For how long no position has moved, and the positions."""
        with self._lock:
            return (time.monotonic_ns() - self.moved_ns) / 1e9, dict(self.positions)

    def snapshot(self) -> tuple[dict[Partition, int], dict[Partition, int], int]:
        with self._lock:
            return dict(self.consumed), dict(self.lag), self.last_ns


class StuckWatch(Periodic):
    """Every ``interval_s`` on a thread of its own: when no position has moved for
    ``stuck_after_s`` and PostgreSQL takes writes, whether the broker holds records
    beyond them (``problem``)."""

    def __init__(
        self,
        stats: ConsumerStats,
        sink: PostgresSink,
        ends: Callable[[Iterable[tuple[str, int]]], dict[tuple[str, int], int]],
        stuck_after_s: float = STUCK_S,
        interval_s: float = 10.0,
    ) -> None:
        super().__init__("stuck-watch", interval_s)
        self.problem: str | None = None
        self._stats = stats
        self._sink = sink
        self._ends = ends
        self._stuck_after_s = stuck_after_s

    def tick(self) -> None:
        try:
            problem = self.check()
        except Exception as exc:  # the broker unreachable: readiness says so
            log.debug("stuck watch: %s", exc)
            problem = None
        if problem and not self.problem:
            log.error("%s; not live", problem)
        self.problem = problem

    def check(self) -> str | None:
        if self._sink.health != DATABASE_AVAILABLE:
            self._stats.excuse()
            return None
        unmoved_s, positions = self._stats.unmoved()
        if unmoved_s <= self._stuck_after_s or not positions:
            return None
        ends = self._ends(positions)
        waiting = sum(max(0, ends[tp] - at) for tp, at in positions.items() if at >= 0)
        if not waiting:
            return None
        return (
            f"the detector's consumer has not moved for {unmoved_s:.0f} s"
            f" with {waiting} records waiting on the broker"
        )


def _lag(partition: dict[str, Any]) -> int | None:
    """The partition's end minus the application's position, or None while unknown.

    librdkafka's own ``consumer_lag`` counts from the committed offset, which a
    transactional (exactly-once) consumer never learns: its offsets are committed
    by the producer. The end is the last stable offset under ``read_committed``.
    """
    if partition.get("fetch_state") == "none":  # not assigned to this consumer
        return None
    end: int = partition.get("ls_offset", -1)
    if end < 0:
        end = partition.get("hi_offset", -1)
    position = _position(partition)
    if end < 0 or position < 0:
        return None
    return max(0, end - position)


def _position(partition: dict[str, Any]) -> int:
    """The application's next offset on the partition, or -1 while unknown."""
    position: int = partition.get("app_offset", -1)
    if position < 0:
        # Nothing handed to the application yet: where fetching stands.
        position = partition.get("next_offset", -1)
    return position


class DetectorCollector(Collector):
    def __init__(
        self, feed: FeedId, sink: PostgresSink, stats: ConsumerStats, probes: list[Probe]
    ) -> None:
        self._feed = feed.name
        self._sink = sink
        self._stats = stats
        self._probes = probes

    def collect(self) -> Iterable[Metric]:
        feed = self._feed
        consumed, lag, _ = self._stats.snapshot()
        yield samples(m.DETECTOR_CONSUMED, feed, consumed)
        yield samples(m.DETECTOR_LAG, feed, lag)
        yield samples(m.DETECTOR_ANOMALIES, feed, dict(self._sink.anomalies))
        written = {_record_label(kind): n for kind, n in dict(self._sink.written).items()}
        yield samples(m.DETECTOR_ROWS_WRITTEN, feed, written)
        yield connected(feed, {probe.name: probe.problem is None for probe in self._probes})


def _record_label(type_name: str) -> str:
    """``DeadLetter`` → ``dead_letter``."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in type_name).lstrip("_")


def detector_ready(sink: PostgresSink, probes: list[Probe]) -> list[str]:
    problems = [probe.problem for probe in probes if probe.problem is not None]
    if sink.health != DATABASE_AVAILABLE:
        problems.append(f"{m.PEER_POSTGRES}: writes failing ({sink.health})")
    return problems


def detector_live(stats: ConsumerStats, watch: StuckWatch) -> list[str]:
    silent_s = (time.monotonic_ns() - stats.snapshot()[2]) / 1e9
    if silent_s > POLL_SILENT_S:
        return [f"the detector's consumer has not polled for {silent_s:.0f} s"]
    return [watch.problem] if watch.problem else []


def batch_observer(registry: CollectorRegistry, feed: FeedId) -> Callable[[int, float], None]:
    """The sink's ``on_batch``: two histograms, observed once per PostgreSQL write."""
    size = histogram(m.DETECTOR_SINK_BATCH_RECORDS, registry, BATCH_RECORDS_BUCKETS, feed.name)
    seconds = histogram(m.DETECTOR_SINK_BATCH_SECONDS, registry, BATCH_SECONDS_BUCKETS, feed.name)

    def observe(records: int, elapsed_s: float) -> None:
        size.observe(records)
        seconds.observe(elapsed_s)

    return observe


@contextmanager
def serving_detector(
    feed: FeedId,
    broker: str,
    conninfo: str,
    sink: PostgresSink,
    stats: ConsumerStats,
    port: int,
    host: str = "0.0.0.0",
) -> Iterator[HealthServer]:
    """The detector's endpoint on ``port`` (0: a free one) while the block runs.
    Give the Application ``stats.update`` as its ``consumer_stats``."""
    probes = [
        Probe(m.PEER_KAFKA, broker_check(broker)).start(),
        Probe(m.PEER_POSTGRES, postgres_check(conninfo, connect)).start(),
    ]
    watch = StuckWatch(stats, sink, end_offsets(broker)).start()
    registry = CollectorRegistry()
    registry.register(DetectorCollector(feed, sink, stats, probes))
    sink.on_batch = batch_observer(registry, feed)
    try:
        with serving(
            registry,
            lambda: detector_live(stats, watch),
            lambda: detector_ready(sink, probes),
            probes,
            port,
            host,
        ) as server:
            yield server
    finally:
        watch.stop()
        sink.on_batch = None
