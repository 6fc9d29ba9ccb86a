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
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from benchmarks.runner import Measurement, Result, Servers, benchmark, in_turn
from krakenfeed.contracts import (
    Anomaly,
    FeedId,
    Source,
    Stream,
    Ticker,
    Trade,
    decode_record,
    record_timestamp_ms,
    topic,
)
from krakenfeed.embedded import run_until
from krakenfeed.kafka import (
    ProcessingGuarantee,
    contract_topics,
    make_application,
    produce_records,
)
from krakenfeed.market import FUTURES, SPOT, generate_market
from krakenfeed.pipeline import build_detector_app, detector_application
from krakenfeed.store import EncodedRecord, PostgresSink
from krakenfeed.telemetry import Tracing

THROUGHPUT_SECONDS = 14_400
"""Market time generated for the throughput run: about 80k events."""
THROUGHPUT_ROUNDS = 3
LATENCY_MARKETS = 160
"""Markets of one futures and one spot product each: about 1k events per second."""
LATENCY_RATE = 1_000
LATENCY_SECONDS = 40
"""Market seconds paced in real time: about 150 anomalies raised by a record. Longer
runs do not finish here: in four 100 s runs the detector's consumer stopped receiving
60-70 s into the pacing while its topics held the rest (a fresh consumer read it);
the one librdkafka log that said why showed the broker's (Tansu's) group coordinator
leaving requests unanswered past the session timeout. More anomalies come from more
runs instead."""
LATENCY_RUNS = {"exactly-once": 1, "at-least-once": 3}
"""Runs per guarantee. At least once has the topic target; its p99 over three runs
is not just the slowest of ~150."""
PASSTHROUGH_EVERY = 250
"""The passthrough forwards one market record in this many: about 4 a second, as
many as the detector's anomalies. Forwarding one in 10 made the output hop alone
about 10 ms slower at the median on Tansu."""
LATENCY_WARMUP_S = 75
"""Market seconds before pacing starts: enough for every detector to warm up."""
PACING_DELAY_S = 40
"""Wall seconds from the start of the run to the first paced record: the detector's
group join and its pass through the warm-up must fit in it."""


class _TimedSink(PostgresSink):
    """Times the sink from its first record to its last commit and, when
    ``per_record``, each market record's Kafka timestamp to the PostgreSQL commit of
    its row (rows are written ahead of their checkpoint, as upserts)."""

    def __init__(self, *args: Any, per_record: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._per_record = per_record
        self.first_add: float | None = None
        self.last_flush = 0.0
        self.committed: list[tuple[int, float]] = []
        """(Kafka timestamp, wall-clock commit time) in ms, per market record."""

    def put(self, topic: str, partition: int, value: Any) -> None:
        if self.first_add is None:
            self.first_add = time.perf_counter()
        super().put(topic, partition, value)

    def write_values(self, items: Iterable[Any]) -> None:
        if not self._per_record:
            return super().write_values(items)
        items = list(items)
        # A market record's row: its event time is its Kafka timestamp.
        times = [
            value.event_time_ms
            for item in items
            for value in (item if type(item) is list else (item,))
            if type(value) is EncodedRecord
        ]
        super().write_values(items)
        committed_ms = time.time() * 1000
        self.committed += [(t, committed_ms) for t in times]

    def flush(self) -> None:
        super().flush()
        self.last_flush = time.perf_counter()


def publish(servers: Servers, feed: FeedId, records: list[Ticker | Trade]) -> None:
    app = make_application(servers.kafka.bootstrap)
    topics = contract_topics(app, servers.kafka.bootstrap, feed, list(Stream))
    with app.get_producer() as producer:
        produce_records(
            producer, topics[Stream.TICKER].name, (r for r in records if type(r) is Ticker)
        )
        produce_records(
            producer, topics[Stream.TRADE].name, (r for r in records if type(r) is Trade)
        )


def _krakenfeed_rate(
    servers: Servers,
    records: list[Ticker | Trade],
    guarantee: ProcessingGuarantee = "exactly-once",
) -> float:
    feed = FeedId("bench", f"detect-{uuid.uuid4().hex[:8]}")
    publish(servers, feed, records)
    sink = _TimedSink(feed, servers.postgres.url)
    _detect_until_written(servers, feed, sink, guarantee, len(records), 300)
    assert sink.first_add is not None
    return len(records) / (sink.last_flush - sink.first_add)


def _detect_until_written(
    servers: Servers,
    feed: FeedId,
    sink: _TimedSink,
    guarantee: ProcessingGuarantee,
    markets: int,
    timeout: float,
    tracing: Tracing | None = None,
) -> None:
    """Run the detector on ``feed`` until ``markets`` market records are in PostgreSQL."""
    with tempfile.TemporaryDirectory() as state_dir:
        app, _ = build_detector_app(
            feed,
            servers.kafka.bootstrap,
            sink=sink,
            state_dir=Path(state_dir),
            processing_guarantee=guarantee,
            tracing=tracing,
        )
        try:
            run_until(
                app,
                lambda: sink.written["Ticker"] + sink.written["Trade"] >= markets,
                timeout,
                f"{markets} market records in PostgreSQL",
            )
        finally:
            sink.close()


def _baseline_rate(servers: Servers, records: list[Ticker | Trade]) -> float:
    """The same two topics, each through one stateful apply that counts per key."""
    feed = FeedId("bench", f"baseline-{uuid.uuid4().hex[:8]}")
    publish(servers, feed, records)
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


def realtime_market(
    markets: int = LATENCY_MARKETS, source: Source | None = None, seconds: int = LATENCY_SECONDS
) -> tuple[list[Ticker | Trade], int]:
    """``markets`` seeded markets, each under its own product names, merged into
    one stream (LATENCY_MARKETS: about LATENCY_RATE events per second of market
    time), and the market time at which pacing starts: everything before it is
    warm-up, and ``seconds`` of market follow it. With ``source``, only that API's
    product of each market."""
    records: list[Ticker | Trade] = []
    start_ms = 1_786_046_338_000
    end_ms = start_ms + (LATENCY_WARMUP_S + seconds) * 1000
    for market in range(markets):
        names = {FUTURES: f"PF_B{market:03d}USD", SPOT: f"B{market:03d}/USD"}
        # The generator schedules an anomaly every 80 s or so, where its episode
        # (up to 70 s) fits: the market runs 70 s past the paced part, whose
        # end cuts what is past it.
        generated = generate_market(
            seed=1_000 + market,
            start_ms=start_ms,
            duration_s=LATENCY_WARMUP_S + seconds + 70,
            warmup_s=LATENCY_WARMUP_S,
            anomaly_every_s=80,
        )
        records += (
            msgspec.structs.replace(record, product=names[record.product])
            for record in generated.records
            if record_timestamp_ms(record) < end_ms and source in (None, record.source)
        )
    records.sort(key=record_timestamp_ms)
    return records, start_ms + LATENCY_WARMUP_S * 1000


def _latency(
    servers: Servers, guarantee: ProcessingGuarantee = "exactly-once", passthrough: bool = False
) -> tuple[list[float], list[float], Counter[str], float]:
    """Latencies (ms) from the Kafka timestamp of a record to the anomaly it raised
    on the anomalies topic, and to the PostgreSQL commit of its row.

    The market runs in real time: every record's times are shifted so that pacing
    starts PACING_DELAY_S after the run starts, and each record is produced when
    the wall clock reaches its timestamp. The warm-up (LATENCY_WARMUP_S of market)
    is produced at once, and the detector works through it before pacing starts.
    Only records and anomalies from the paced part are measured, and on the topic
    only anomalies raised by a record (see ``record_triggered``).

    With ``passthrough`` the detector is replaced by the floor under it: the
    detector's own Application (its consumer, producer and checkpoint settings)
    with no work, forwarding every PASSTHROUGH_EVERY-th record unchanged, with its
    timestamp, to the anomalies topic. Everything else is the same run: the same
    pacer, broker, hops and reader. It has no rows.
    """
    feed = FeedId("bench", f"latency-{uuid.uuid4().hex[:8]}")
    market, paced_from = realtime_market()
    shift_ms = int(time.time() * 1000 + PACING_DELAY_S * 1000) - paced_from
    records = [shifted(record, shift_ms) for record in market]
    paced_from += shift_ms
    split = next(i for i, r in enumerate(records) if record_timestamp_ms(r) >= paced_from)
    app = make_application(servers.kafka.bootstrap)
    topics = contract_topics(app, servers.kafka.bootstrap, feed, list(Stream))
    sink = None if passthrough else _TimedSink(feed, servers.postgres.url, per_record=True)
    forwarded = [0]
    received: list[tuple[bytes, int, float]] = []
    done = threading.Event()

    def processed() -> int:
        """Records the detector (or the passthrough) is through with."""
        return forwarded[0] if sink is None else sink.written["Ticker"] + sink.written["Trade"]

    def produce(batch: list[Ticker | Trade], paced: bool) -> None:
        with app.get_producer() as producer:
            for record in batch:
                if paced:
                    delay = record_timestamp_ms(record) / 1000 - time.time()
                    if delay > 0:
                        time.sleep(delay)
                stream = Stream.TICKER if type(record) is Ticker else Stream.TRADE
                produce_records(producer, topics[stream].name, [record])

    slack: list[float] = []
    """Seconds between the detector finishing the warm-up and the first paced record
    (negative: it was still busy, and the first latencies include its backlog)."""

    def pace() -> None:
        while processed() < split and not done.is_set():
            time.sleep(0.05)
        slack.append(paced_from / 1000 - time.time())
        produce(records[split:], paced=True)

    produce(records[:split], paced=False)
    pacer = threading.Thread(target=pace)
    reader = threading.Thread(
        target=read_topic,
        args=(servers.kafka.bootstrap, topic(feed, Stream.ANOMALIES), done, received),
        daemon=True,
    )
    reader.start()
    pacer.start()
    try:
        timeout = LATENCY_WARMUP_S + LATENCY_SECONDS + 120
        if sink is None:
            _pass_through(servers, feed, guarantee, forwarded, len(records), timeout)
        else:
            _detect_until_written(servers, feed, sink, guarantee, len(records), timeout)
    finally:
        done.set()
        reader.join()
        pacer.join()
    to_topic = [
        seen - timestamp
        for value, timestamp, seen in received
        if timestamp >= paced_from
        and (passthrough or record_triggered(decode_record(value, Anomaly)))
    ]
    committed = sink.committed if sink else []
    to_row = [at - t for t, at in committed if t >= paced_from]
    detectors = Counter(
        decode_record(value, Anomaly).detector
        for value, timestamp, _ in received
        if timestamp >= paced_from and not passthrough
    )
    return to_topic, to_row, detectors, slack[0]


def _pass_through(
    servers: Servers,
    feed: FeedId,
    guarantee: ProcessingGuarantee,
    forwarded: list[int],
    markets: int,
    timeout: float,
) -> None:
    """Run the passthrough (see ``_latency``) until it has read ``markets`` records,
    counting them in ``forwarded[0]``."""

    def sample(value: bytes, key: Any, timestamp_ms: int, headers: Any) -> bool:
        forwarded[0] += 1
        return forwarded[0] % PASSTHROUGH_EVERY == 0

    with tempfile.TemporaryDirectory() as state_dir:
        app = detector_application(
            servers.kafka.bootstrap,
            f"{feed.name}-passthrough",
            processing_guarantee=guarantee,
            state_dir=Path(state_dir),
        )
        topics = contract_topics(app, servers.kafka.bootstrap, feed, list(Stream))
        for stream in (Stream.TICKER, Stream.TRADE):
            sdf = app.dataframe(topics[stream]).filter(sample, metadata=True)
            sdf.to_topic(topics[Stream.ANOMALIES])
        run_until(app, lambda: forwarded[0] >= markets, timeout, f"{markets} records forwarded")


@dataclass
class _Pooled:
    """Latencies of one kind of run, pooled over its runs."""

    to_topic: list[float] = field(default_factory=list)
    to_row: list[float] = field(default_factory=list)
    detectors: Counter[str] = field(default_factory=Counter)
    slack: list[float] = field(default_factory=list)

    def add(
        self, to_topic: list[float], to_row: list[float], detectors: Counter[str], slack_s: float
    ) -> None:
        self.to_topic += to_topic
        self.to_row += to_row
        self.detectors += detectors
        self.slack.append(round(slack_s, 2))


def _latencies(servers: Servers, guarantee: ProcessingGuarantee) -> dict[str, Any]:
    """``_latency`` over this guarantee's runs, pooled, as the result's details. At
    least once (which has the topic target), the passthrough runs as often, in turn
    with the detector (A-B-B-A)."""
    kinds = ["detector", "passthrough"] if guarantee == "at-least-once" else ["detector"]
    pooled = {kind: _Pooled() for kind in kinds}
    for order in in_turn(kinds, LATENCY_RUNS[guarantee]):
        for kind in order:
            pooled[kind].add(*_latency(servers, guarantee, passthrough=kind == "passthrough"))
    detector = pooled["detector"]
    details: dict[str, Any] = {
        "runs": LATENCY_RUNS[guarantee],
        "anomalies_measured": len(detector.to_topic),
        "paced_anomalies_by_detector": dict(detector.detectors),
        "warmup_done_before_pacing_s": detector.slack,
        "to_anomaly_topic_ms": _percentiles(detector.to_topic),
        "to_committed_row_ms": _percentiles(detector.to_row),
    }
    if "passthrough" in pooled:
        floor = pooled["passthrough"]
        details["passthrough"] = {
            "records_measured": len(floor.to_topic),
            "warmup_done_before_pacing_s": floor.slack,
            "to_anomaly_topic_ms": _percentiles(floor.to_topic),
        }
    return details


def _percentiles(values: list[float]) -> dict[str, float]:
    return {p: round(percentile(values, q), 1) for p, q in _PERCENTILES}


_PERCENTILES = (("p50", 50), ("p90", 90), ("p99", 99))


def read_anomalies(
    bootstrap: str, feed: FeedId, done: threading.Event, received: list[tuple[Anomaly, float]]
) -> None:
    """Append each anomaly of ``feed`` with the wall-clock time it was read (ms), once
    ``done``."""
    read: list[tuple[bytes, int, float]] = []
    read_topic(bootstrap, topic(feed, Stream.ANOMALIES), done, read)
    received += [(decode_record(value, Anomaly), seen) for value, _, seen in read]


def read_topic(
    bootstrap: str, name: str, done: threading.Event, received: list[tuple[bytes, int, float]]
) -> None:
    """Append each record of topic ``name`` (one partition) as its value, its Kafka
    timestamp and the wall-clock time it was read (ms), until ``done``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{name}-reader",
            "fetch.wait.max.ms": 5,
            # The detector publishes in exactly-once transactions.
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(name, 0, OFFSET_BEGINNING)])
    while not done.is_set():
        # poll, not consume(num_messages=…): consume waits for its whole batch.
        message = consumer.poll(0.05)
        if message is not None and message.error() is None:
            received.append((message.value(), message.timestamp()[1], time.time() * 1000))
    consumer.close()


def record_triggered(anomaly: Anomaly) -> bool:
    """Whether the anomaly's event time is that of the record that raised it. Not
    so for the likelihood detector (the end of the interval it scored, which it
    scores when a later trade arrives) nor for a silence noticed on the wall clock
    (the product's last event time, ``silent_after_ms`` before the report)."""
    return anomaly.detector != "likelihood" and anomaly.context.get("kind") != "silent"


def shifted(record: Ticker | Trade, shift_ms: int) -> Ticker | Trade:
    exchange_ms = record.exchange_time_ms
    return msgspec.structs.replace(
        record,
        exchange_time_ms=None if exchange_ms is None else exchange_ms + shift_ms,
        received_time_ns=record.received_time_ns + shift_ms * 1_000_000,
    )


def percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
        if len(values) > 1
        else float("nan")
    )


@benchmark("detector")
def detector_throughput(servers: Servers) -> Result:
    records = generate_market(seed=1, duration_s=THROUGHPUT_SECONDS).records
    runs: dict[str, Callable[[], float]] = {
        "baseline": lambda: _baseline_rate(servers, records),
        "exactly-once": lambda: _krakenfeed_rate(servers, records, "exactly-once"),
        "at-least-once": lambda: _krakenfeed_rate(servers, records, "at-least-once"),
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    # Each figure is the median of its rounds, run in A-B-C-C-B-A order.
    for order in in_turn(list(runs), THROUGHPUT_ROUNDS):
        for name in order:
            rates[name].append(runs[name]())
    baseline, rate, at_least_once = (statistics.median(r) for r in rates.values())
    # Under exactly-once an anomaly is visible when its checkpoint commits; under
    # at-least-once as soon as it is produced.
    latency = {guarantee: _latencies(servers, guarantee) for guarantee in LATENCY_RUNS}
    return Result(
        name="detector",
        description=(
            f"{len(records):,} market records: consume → features → detectors → PostgreSQL "
            "sink and anomalies topic, vs one stateful quixstreams apply (medians of "
            f"{THROUGHPUT_ROUNDS} rounds); latency at {LATENCY_RATE} events/s "
            f"({LATENCY_MARKETS * 2} products in real time for {LATENCY_SECONDS} s)"
        ),
        measurements=[
            Measurement(
                "events", "events/s", rate, baseline, "one stateful apply", target_ratio=0.5
            ),
            Measurement("events, exactly-once", "events/s", rate, at_least_once, "at-least-once"),
            *(
                Measurement(
                    f"record → anomaly on its topic, {q}, at-least-once, 1k events/s",
                    "ms",
                    latency["at-least-once"]["to_anomaly_topic_ms"][q],
                    latency["at-least-once"]["passthrough"]["to_anomaly_topic_ms"][q],
                    "passthrough: the same Application with no work",
                    higher_is_better=False,
                )
                for q in ("p50", "p99")
            ),
        ],
        details={
            "records": len(records),
            "events_per_s_each_round": {
                name: [round(r) for r in each] for name, each in rates.items()
            },
            **latency,
        },
    )
