"""The thin slice (quixstreams produce → Kafka → persist → PostgreSQL) against a
bare confluent-kafka produce/consume loop moving the same bytes."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from benchmarks.runner import Measurement, Result, Servers, benchmark
from krakenfeed import synthetic
from krakenfeed.contracts import FeedId, Stream, encode_record, record_key, record_timestamp_ms
from krakenfeed.embedded import run_until
from krakenfeed.kafka import PRODUCER_CONFIG, contract_topics, make_application, produce_records
from krakenfeed.pipeline import build_detector_app
from krakenfeed.store import PostgresSink

RECORDS = 100_000


class _TimedSink(PostgresSink):
    """Times the sink from its first record to its last committed batch, which leaves
    the consumer-group join out of the rate."""

    first_add: float | None = None
    last_flush: float = 0.0

    def put(self, topic: str, partition: int, value: Any) -> None:
        if self.first_add is None:
            self.first_add = time.perf_counter()
        super().put(topic, partition, value)

    def flush(self) -> None:
        super().flush()
        self.last_flush = time.perf_counter()


def _krakenfeed(servers: Servers, records: list[Any]) -> tuple[float, float]:
    feed = FeedId("bench", f"slice-{uuid.uuid4().hex[:8]}")
    app = make_application(servers.kafka.bootstrap)
    name = contract_topics(app, servers.kafka.bootstrap, feed, (Stream.TRADE,))[Stream.TRADE].name
    started = time.perf_counter()
    with app.get_producer() as producer:
        produce_records(producer, name, records)
        producer.flush()
    produce_seconds = time.perf_counter() - started

    sink = _TimedSink(feed, servers.postgres.url)
    with tempfile.TemporaryDirectory() as state_dir:
        app, _ = build_detector_app(
            feed,
            servers.kafka.bootstrap,
            servers.postgres.url,
            sink=sink,
            state_dir=Path(state_dir),
        )
        try:
            run_until(app, lambda: sink.written["Trade"] >= len(records), 120, "every trade")
        finally:
            sink.close()
    assert sink.first_add is not None
    return produce_seconds, sink.last_flush - sink.first_add


def _baseline(
    servers: Servers, values: list[tuple[bytes, bytes | None, int]]
) -> tuple[float, float]:
    topic = f"bench.bare.{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": servers.kafka.bootstrap, **PRODUCER_CONFIG})
    started = time.perf_counter()
    for value, key, timestamp in values:
        producer.produce(topic, value, key, timestamp=timestamp)
        producer.poll(0)
    producer.flush()
    produce_seconds = time.perf_counter() - started

    consumer = Consumer(
        {
            "bootstrap.servers": servers.kafka.bootstrap,
            "group.id": topic,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    seen, first = 0, None
    while seen < len(values):
        for message in consumer.consume(num_messages=1000, timeout=1.0):
            if message.error() is None:
                if first is None:
                    first = time.perf_counter()
                seen += 1
    consume_seconds = time.perf_counter() - (first or 0.0)
    consumer.commit(asynchronous=False)
    consumer.close()
    return produce_seconds, consume_seconds


@benchmark("slice")
def slice_throughput(servers: Servers) -> Result:
    records = list(synthetic.trades("PF_XBTUSD", RECORDS))
    encoded = [(encode_record(r), record_key(r), record_timestamp_ms(r)) for r in records]
    base_produce, base_consume = _baseline(servers, encoded)
    kf_produce, kf_consume = _krakenfeed(servers, records)
    n = len(records)
    return Result(
        name="slice",
        description=(
            "contract trades: quixstreams producer with msgspec encoding, then the persist "
            "app consuming into PostgreSQL (COPY + upsert), vs a bare confluent-kafka "
            "producer of pre-encoded bytes and a bare consume loop that stores nothing"
        ),
        measurements=[
            Measurement("produce", "records/s", n / kf_produce, n / base_produce, "bare produce"),
            Measurement(
                "consume → PostgreSQL",
                "records/s",
                n / kf_consume,
                n / base_consume,
                "bare consume",
            ),
        ],
        details={"records": n},
    )
