"""Detector: consume → features → detectors → sink, with the real broker and PostgreSQL.

Throughput is measured against a quixstreams pipeline with one stateful ``apply``
reading the same records in the same run. Latency is measured at 1k events/s from
each record's Kafka timestamp to its anomaly on the anomalies topic and to its
committed row.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from benchmarks.runner import Measurement, Result, Servers, benchmark
from krakenfeed.contracts import Anomaly, FeedId, Stream, Ticker, Trade, decode_record, topic
from krakenfeed.embedded import run_until
from krakenfeed.kafka import contract_topics, make_application, produce_records
from krakenfeed.market import generate_market
from krakenfeed.pipeline import build_detector_app
from krakenfeed.store import PostgresSink

THROUGHPUT_SECONDS = 14_400
"""Market time generated for the throughput run: about 80k events."""
LATENCY_RATE = 1_000
LATENCY_SECONDS = 20
LATENCY_WARMUP = 500


class _TimedSink(PostgresSink):
    """Times the sink from its first record to its last commit and, when
    ``per_record``, each market record's Kafka timestamp to the checkpoint that
    committed its row (a row written ahead of its checkpoint counts as committed at
    the checkpoint, which overstates its latency a little)."""

    def __init__(self, *args: Any, per_record: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._per_record = per_record
        self.first_add: float | None = None
        self.last_flush = 0.0
        self.committed: list[tuple[int, float]] = []
        """(Kafka timestamp, wall-clock commit time) in ms, per market record."""
        self._pending: list[int] = []

    def add(self, value: Any, key: Any, timestamp: int, *args: Any, **kwargs: Any) -> None:
        if self.first_add is None:
            self.first_add = time.perf_counter()
            if not self._per_record:
                # Time the first record only: the sink's own add from here on.
                self.add = super().add  # type: ignore[method-assign]
        if self._per_record:
            self._pending.append(timestamp)
        super().add(value, key, timestamp, *args, **kwargs)

    def flush(self) -> None:
        super().flush()
        self.last_flush = time.perf_counter()
        committed_ms = time.time() * 1000
        self.committed += [(t, committed_ms) for t in self._pending]
        self._pending.clear()


def _publish(servers: Servers, feed: FeedId, records: list[Ticker | Trade]) -> None:
    app = make_application(servers.kafka.bootstrap)
    topics = contract_topics(app, servers.kafka.bootstrap, feed, list(Stream))
    with app.get_producer() as producer:
        produce_records(
            producer, topics[Stream.TICKER].name, (r for r in records if type(r) is Ticker)
        )
        produce_records(
            producer, topics[Stream.TRADE].name, (r for r in records if type(r) is Trade)
        )


def _krakenfeed_rate(servers: Servers, records: list[Ticker | Trade]) -> float:
    feed = FeedId("bench", f"detect-{uuid.uuid4().hex[:8]}")
    _publish(servers, feed, records)
    sink = _TimedSink(feed, servers.postgres.url)
    with tempfile.TemporaryDirectory() as state_dir:
        app, _ = build_detector_app(
            feed, servers.kafka.bootstrap, sink=sink, state_dir=Path(state_dir)
        )
        try:
            run_until(
                app,
                lambda: sink.written["Ticker"] + sink.written["Trade"] >= len(records),
                300,
                "every record in PostgreSQL",
            )
        finally:
            sink.close()
    assert sink.first_add is not None
    return len(records) / (sink.last_flush - sink.first_add)


def _baseline_rate(servers: Servers, records: list[Ticker | Trade]) -> float:
    """The same two topics, each through one stateful apply that counts per key."""
    feed = FeedId("bench", f"baseline-{uuid.uuid4().hex[:8]}")
    _publish(servers, feed, records)
    seen = {"count": 0, "first": 0.0, "last": 0.0}

    def count(value: bytes, state: Any) -> bytes:
        if not seen["count"]:
            seen["first"] = time.perf_counter()
        state.set("n", state.get("n", 0) + 1)
        seen["count"] += 1
        seen["last"] = time.perf_counter()
        return value

    with tempfile.TemporaryDirectory() as state_dir:
        app = make_application(
            servers.kafka.bootstrap,
            consumer_group=f"{feed.name}-baseline",
            auto_offset_reset="earliest",
            state_dir=state_dir,
            consumer_extra_config={"session.timeout.ms": 6000},
        )
        topics = contract_topics(app, servers.kafka.bootstrap, feed, [Stream.TICKER, Stream.TRADE])
        for stream in (Stream.TICKER, Stream.TRADE):
            app.dataframe(topics[stream]).apply(count, stateful=True)
        run_until(app, lambda: seen["count"] >= len(records), 300, "every record counted")
    return len(records) / (seen["last"] - seen["first"])


def _latency(servers: Servers) -> tuple[list[float], list[float]]:
    """Records stamped with the wall clock, produced at LATENCY_RATE per second once
    the detector is running; returns the latencies (ms) to the anomalies topic and to
    the committed row."""
    feed = FeedId("bench", f"latency-{uuid.uuid4().hex[:8]}")
    template = generate_market(seed=5, duration_s=3_600, warmup_s=120, anomaly_every_s=80)
    records = template.records[: LATENCY_WARMUP + LATENCY_RATE * LATENCY_SECONDS]
    app = make_application(servers.kafka.bootstrap)
    topics = contract_topics(app, servers.kafka.bootstrap, feed, list(Stream))
    sink = _TimedSink(feed, servers.postgres.url, per_record=True)
    received: list[tuple[int, float]] = []
    done = threading.Event()
    paced_from_ms = [float("inf")]

    def stamped(record: Ticker | Trade) -> Ticker | Trade:
        now_ns = time.time_ns()
        exchange_ms = None if record.exchange_time_ms is None else now_ns // 1_000_000
        return msgspec.structs.replace(
            record, exchange_time_ms=exchange_ms, received_time_ns=now_ns
        )

    def produce(batch: list[Ticker | Trade], rate: float | None) -> None:
        started = time.perf_counter()
        with app.get_producer() as producer:
            for index, record in enumerate(batch):
                if rate is not None:
                    delay = started + index / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                stream = Stream.TICKER if type(record) is Ticker else Stream.TRADE
                produce_records(producer, topics[stream].name, [stamped(record)])

    def read_anomalies() -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": servers.kafka.bootstrap,
                "group.id": f"{feed.name}-reader",
                "fetch.wait.max.ms": 5,
            }
        )
        consumer.assign([TopicPartition(topic(feed, Stream.ANOMALIES), 0, OFFSET_BEGINNING)])
        while not done.is_set():
            for message in consumer.consume(num_messages=100, timeout=0.05):
                if message.error() is None:
                    anomaly = decode_record(message.value(), Anomaly)
                    received.append((anomaly.event_time_ms, time.time() * 1000))
        consumer.close()

    # Warm-up records bring the detector through its group join and state setup;
    # the paced records start once those are written.
    produce(records[:LATENCY_WARMUP], rate=None)
    paced = threading.Thread(target=produce, args=(records[LATENCY_WARMUP:], LATENCY_RATE))
    reader = threading.Thread(target=read_anomalies, daemon=True)
    reader.start()

    def written() -> bool:
        total = sink.written["Ticker"] + sink.written["Trade"]
        if total >= LATENCY_WARMUP and not paced.is_alive() and paced_from_ms[0] == float("inf"):
            paced_from_ms[0] = time.time() * 1000
            paced.start()
        return total >= len(records)

    with tempfile.TemporaryDirectory() as state_dir:
        detector, _ = build_detector_app(
            feed, servers.kafka.bootstrap, sink=sink, state_dir=Path(state_dir)
        )
        try:
            run_until(detector, written, 120, "every paced record written")
        finally:
            sink.close()
            done.set()
            reader.join()
            paced.join()
    start = paced_from_ms[0]
    to_topic = [seen - t for t, seen in received if t >= start]
    to_row = [committed - t for t, committed in sink.committed if t >= start]
    return to_topic, to_row


def _percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
        if len(values) > 1
        else float("nan")
    )


@benchmark("detector")
def detector_throughput(servers: Servers) -> Result:
    records = generate_market(seed=1, duration_s=THROUGHPUT_SECONDS).records
    baseline = _baseline_rate(servers, records)
    rate = _krakenfeed_rate(servers, records)
    anomaly_ms, row_ms = _latency(servers)
    return Result(
        name="detector",
        description=(
            f"{len(records):,} market records: consume → features → detectors → PostgreSQL "
            "sink and anomalies topic, vs one stateful quixstreams apply; latency at "
            f"{LATENCY_RATE} events/s"
        ),
        measurements=[
            Measurement(
                "events", "events/s", rate, baseline, "one stateful apply", target_ratio=0.5
            ),
        ],
        details={
            "records": len(records),
            "anomalies_measured": len(anomaly_ms),
            "to_anomaly_topic_ms": {
                "p50": _percentile(anomaly_ms, 50),
                "p99": _percentile(anomaly_ms, 99),
            },
            "to_committed_row_ms": {"p50": _percentile(row_ms, 50), "p99": _percentile(row_ms, 99)},
        },
    )
