"""The detector end to end: contract records on the real broker, the quixstreams
app with RocksDB state, anomalies back on Kafka and every row in real PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException

from krakenfeed import pipeline
from krakenfeed.contracts import (
    Anomaly,
    DeadLetter,
    DeadLetterReason,
    FeedId,
    QualityEvent,
    QualityKind,
    Stream,
    Ticker,
    Trade,
    decode_record,
    encode_record,
    record_timestamp_ms,
    topic,
)
from krakenfeed.detect import DetectorConfig, DetectorEngine
from krakenfeed.embedded import run_until
from krakenfeed.kafka import (
    client_closed,
    contract_topics,
    end_offsets,
    make_application,
    produce_records,
)
from krakenfeed.market import generate_market
from krakenfeed.monitoring.detector import ConsumerStats, StuckWatch, detector_live
from krakenfeed.pipeline import build_detector_app, trade_stream_config
from krakenfeed.store import PostgresSink
from tests.conftest import RETENTION_DAYS, Kafka
from tests.kafka_reader import read_topic

MARKET = generate_market(seed=3, duration_s=1200, warmup_s=300, anomaly_every_s=90)


def _expected_anomalies(feed: FeedId) -> list[tuple[Any, ...]]:
    """What the pure engines find in the same records: one engine and one state per
    product for the ticker stream, and likewise for the trade stream."""
    engines = {
        Ticker: DetectorEngine(feed),
        Trade: DetectorEngine(feed, trade_stream_config(DetectorConfig())),
    }
    states: dict[tuple[type, str], Any] = {}
    found: list[Anomaly] = []
    for record in MARKET.records:
        engine = engines[type(record)]
        key = (type(record), record.product)
        state = states.get(key) or states.setdefault(key, engine.new_state(record.product))
        found += engine.process(state, record, record_timestamp_ms(record), 0)
    return sorted(_identity(a) for a in found)


def _identity(a: Anomaly) -> tuple[Any, ...]:
    return (a.product, a.detector, a.event_time_ms, a.value, a.score, a.severity.value)


def _publish(kafka: Kafka, feed: FeedId, extra: list[tuple[Stream, bytes]] = ()) -> None:  # type: ignore[assignment]
    app = make_application(kafka.bootstrap)
    topics = contract_topics(app, kafka.bootstrap, feed, list(Stream))
    with app.get_producer() as producer:
        for stream, value in extra:
            producer.produce(
                topics[stream].name,
                value,
                key=b"PF_XBTUSD",
                timestamp=MARKET.records[0].exchange_time_ms,
            )
        for kind, stream in (("Ticker", Stream.TICKER), ("Trade", Stream.TRADE)):
            produce_records(
                producer,
                topics[stream].name,
                (r for r in MARKET.records if type(r).__name__ == kind),
            )


def _run(
    kafka: Kafka,
    feed: FeedId,
    url: str,
    state_dir: Path,
    group: str,
    markets: int,
    quality: int = 0,
) -> Any:
    app, sink = build_detector_app(
        feed,
        kafka.bootstrap,
        url,
        group=f"{feed.name}-{group}",
        state_dir=state_dir,
        retention_days=RETENTION_DAYS,
    )
    try:
        run_until(
            app,
            lambda: (
                sink.written["Ticker"] + sink.written["Trade"] >= markets
                and sink.written["DeadLetter"] + sink.written["QualityEvent"] >= quality
            ),
            90,
            f"{markets} market records and {quality} quality events in PostgreSQL",
        )
    finally:
        sink.close()
    return sink


def _anomaly_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT product, detector, event_time_ms, value, score, severity FROM anomalies"
            " ORDER BY 1, 2, 3, 4"
        ).fetchall()


def test_the_detector_finds_what_the_engine_finds_and_replays_idempotently(
    kafka: Kafka, postgres_url: str, feed: FeedId, tmp_path: Path
) -> None:
    _publish(kafka, feed)
    expected = _expected_anomalies(feed)
    assert len(expected) >= 8, "the market should contain injected anomalies"
    markets = len(MARKET.records)

    first = _run(kafka, feed, postgres_url, tmp_path / "a", "first", markets)
    assert _anomaly_rows(postgres_url) == expected
    published = read_topic(kafka.bootstrap, topic(feed, Stream.ANOMALIES), len(expected))
    on_kafka = [decode_record(m.value(), Anomaly) for m in published]
    assert sorted(_identity(a) for a in on_kafka) == expected
    assert all(m.key() == a.product.encode() for m, a in zip(published, on_kafka, strict=True))
    assert all(
        m.timestamp()[1] == a.event_time_ms for m, a in zip(published, on_kafka, strict=True)
    )
    assert all(a.feed == str(feed) and a.context for a in on_kafka)

    # A second consumer group re-reads everything with fresh state: same rows, no duplicates.
    second = _run(kafka, feed, postgres_url, tmp_path / "b", "second", markets)
    assert second.rows_inserted == 0
    assert second.written == first.written
    assert _anomaly_rows(postgres_url) == expected
    with psycopg.connect(postgres_url) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM ticker), (SELECT count(*) FROM trades)"
        ).fetchone()
    assert counts == (first.written["Ticker"], first.written["Trade"])


def test_poison_records_go_to_the_dlq_and_quality_events_and_the_loop_keeps_going(
    kafka: Kafka, postgres_url: str, feed: FeedId, tmp_path: Path
) -> None:
    poison = [
        (Stream.TICKER, b'{"source":"futures","product":"PF_XBTUSD","bid":'),
        (Stream.TRADE, b'{"source":"spot","product":"BTC/USD","side":"short"}'),
    ]
    gap = QualityEvent(
        source="futures",
        kind=QualityKind.SEQUENCE_GAP,
        received_time_ns=1,
        detail="seq jumped",
        product="PF_XBTUSD",
        attributes={"missing": 3},
    )
    refused = DeadLetter(
        source="futures",
        received_time_ns=2,
        reason=DeadLetterReason.CROSSED_QUOTE,
        detail="bid > ask",
        raw='{"feed":"ticker"}',
        product="PF_XBTUSD",
    )
    extra = [
        *poison,
        (Stream.QUALITY, encode_record(gap)),
        (Stream.DLQ, encode_record(refused)),
        (Stream.QUALITY, b"not json"),
    ]
    _publish(kafka, feed, extra)
    # Ingest's two events, the undecodable quality record and the two poison records,
    # which come back through the dlq topic.
    _run(kafka, feed, postgres_url, tmp_path, "poison", len(MARKET.records), quality=5)

    # The detector's own dead letters are published to the dlq topic, after the ingest one.
    letters = [
        decode_record(m.value(), DeadLetter)
        for m in read_topic(kafka.bootstrap, topic(feed, Stream.DLQ), 3)
    ]
    detector_letters = sorted((d.reason, d.source, d.stage) for d in letters[1:])
    assert detector_letters == [
        (DeadLetterReason.MALFORMED_JSON, "futures", "detector"),
        (DeadLetterReason.SCHEMA_MISMATCH, "spot", "detector"),
    ]
    assert {d.raw for d in letters[1:]} == {p[1].decode() for p in poison}

    def quality_rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(postgres_url) as conn:
            return conn.execute(
                "SELECT kind, reason, product, attributes->>'stage'"
                " FROM quality_events ORDER BY 1, 2"
            ).fetchall()

    assert quality_rows() == [
        ("dead_letter", "crossed_quote", "PF_XBTUSD", "ingest"),
        ("dead_letter", "malformed_json", None, "detector"),
        ("dead_letter", "malformed_json", None, "detector"),
        ("dead_letter", "schema_mismatch", None, "detector"),
        ("sequence_gap", None, "PF_XBTUSD", None),
    ]
    # A second group replays the poison: the same dead letters, so no new row.
    again = _run(kafka, feed, postgres_url, tmp_path / "again", "again", len(MARKET.records), 5)
    assert again.rows_inserted == 0
    assert len(quality_rows()) == 5


class _OutageAfterFirstWrite(PostgresSink):
    """Takes its database away right after its first committed batch: the outage
    lands mid-stream however fast the stream runs."""

    def __init__(self, admin_url: str, database: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._admin_url = admin_url
        self._database = database
        self.written_at_cut: int | None = None
        self.cut_at = 0.0
        self.health_seen: set[str] = set()

    def write_values(self, items: Any) -> None:
        super().write_values(items)
        if self.written_at_cut is None:
            self.written_at_cut = self.written["Ticker"] + self.written["Trade"]
            self.cut_at = time.monotonic()
            self._allow_connections(False)

    def _allow_connections(self, allow: bool) -> None:
        with psycopg.connect(self._admin_url, autocommit=True) as admin:
            admin.execute(
                f'ALTER DATABASE "{self._database}" ALLOW_CONNECTIONS {str(allow).lower()}'
            )
            if not allow:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (self._database,),
                )

    def restore_after(self, seconds: float) -> bool:
        """Bring the database back once it has been away this long; True once back."""
        if self.written_at_cut is None or time.monotonic() - self.cut_at < seconds:
            return False
        self._allow_connections(True)
        return True


def test_a_postgresql_outage_pauses_the_detector_and_loses_nothing(
    kafka: Kafka,
    postgres_url: str,
    postgres_admin_url: str,
    feed: FeedId,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Statistics well within the watch's second: reading, positions keep moving.
    monkeypatch.setattr(pipeline, "STATS_INTERVAL_MS", 100)
    _publish(kafka, feed)
    database = psycopg.conninfo.conninfo_to_dict(postgres_url)["dbname"]
    markets = len(MARKET.records)
    sink = _OutageAfterFirstWrite(
        postgres_admin_url, database, feed, postgres_url, retention_days=RETENTION_DAYS
    )
    stats = ConsumerStats(sources=pipeline.consumed_topics(feed))
    app, _ = build_detector_app(
        feed,
        kafka.bootstrap,
        group=f"{feed.name}-outage",
        state_dir=tmp_path,
        sink=sink,
        commit_interval=0.05,
        consumer_stats=stats.update,
    )
    # Waiting out the outage with records waiting is not being stuck.
    watch = StuckWatch(stats, sink, end_offsets(kafka.bootstrap), 1.0, interval_s=0.1)
    restored = [False]
    not_live: list[str] = []

    def recovered() -> bool:
        sink.health_seen.add(sink.health)
        not_live.extend(detector_live(stats, watch))
        restored[0] = restored[0] or sink.restore_after(2.0)
        return restored[0] and sink.written["Ticker"] + sink.written["Trade"] >= markets

    watch.start()
    try:
        run_until(app, recovered, 120, "the outage to pass and every record to be written")
    finally:
        watch.stop()
        sink.close()
    assert sink.written_at_cut is not None
    assert 0 < sink.written_at_cut < markets, "the outage hit mid-stream"
    assert sink.health_seen == {"ok", "database unavailable"}
    assert sink.health == "ok"
    assert not_live == []
    with psycopg.connect(postgres_url) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM ticker), (SELECT count(*) FROM trades)"
        ).fetchone()
    tickers = sum(1 for r in MARKET.records if type(r) is Ticker)
    assert counts == (tickers, markets - tickers)
    assert _anomaly_rows(postgres_url) == _expected_anomalies(feed)


def _stale_rows(url: str, feed: FeedId) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT product, event_time_ms, context->>'kind' FROM anomalies"
            " WHERE feed = %s AND detector = 'stale' ORDER BY 1, 2",
            (str(feed),),
        ).fetchall()


def test_a_product_that_goes_quiet_is_reported_on_the_wall_clock_once(
    kafka: Kafka, postgres_url: str, feed: FeedId, tmp_path: Path
) -> None:
    """No record arrives for the quiet product, so only the wall-clock check can
    notice it. When its records resume after the gap, the gap is not reported again."""
    tickers = [r for r in MARKET.records if type(r) is Ticker]
    quiet = [r for r in tickers if r.product == "PF_XBTUSD"]
    busy = [r for r in tickers if r.product == "BTC/USD"]
    silent_after_s = DetectorConfig().stale.silent_after_ms / 1000
    start_ns = 1_900_000_000_000_000_000
    clock = [start_ns]
    app = make_application(kafka.bootstrap)
    topics = contract_topics(app, kafka.bootstrap, feed, list(Stream))

    def publish(records: list[Ticker]) -> None:
        with app.get_producer() as producer:
            produce_records(producer, topics[Stream.TICKER].name, records)

    # Both products, then only the busy one, while the injected clock moves on.
    steps: list[tuple[float, list[Ticker], int]] = [
        (0.0, quiet[:20] + busy[:20], 40),
        (silent_after_s - 10, busy[20:40], 60),
        (silent_after_s + 5, [], 60),
    ]
    resumed = quiet[60:70]
    assert resumed[0].exchange_time_ms - quiet[19].exchange_time_ms > 30_000  # type: ignore[operator]
    detector, sink = build_detector_app(
        feed,
        kafka.bootstrap,
        postgres_url,
        state_dir=tmp_path,
        retention_days=RETENTION_DAYS,
        clock_ns=lambda: clock[0],
        silence_check_s=0.05,
    )

    def scenario() -> bool:
        if steps:
            at_s, records, written = steps[0]
            if sink.written["Ticker"] >= written - len(records):
                steps.pop(0)
                clock[0] = start_ns + int(at_s * 1e9)
                publish(records)
            return False
        if resumed and _stale_rows(postgres_url, feed):
            publish(resumed)
            resumed.clear()
        return not resumed and sink.written["Ticker"] >= 70

    try:
        run_until(detector, scenario, 90, "the silence reported and the product resumed")
    finally:
        sink.close()

    rows = _stale_rows(postgres_url, feed)
    assert rows == [("PF_XBTUSD", quiet[19].exchange_time_ms, "silent")]
    published = read_topic(kafka.bootstrap, topic(feed, Stream.ANOMALIES), 1)
    stale = [a for m in published if (a := decode_record(m.value(), Anomaly)).detector == "stale"]
    assert [(a.product, a.event_time_ms, a.severity.value) for a in stale] == [
        ("PF_XBTUSD", quiet[19].exchange_time_ms, "critical")
    ]


def test_a_closed_kafka_client_is_told_from_a_failure(kafka: Kafka) -> None:
    """The silence watch stops quietly when the Application closes its consumer,
    whichever way confluent-kafka says so, and logs anything else."""
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "closed-check"})
    consumer.close()
    with pytest.raises(RuntimeError) as closed:
        consumer.assignment()
    assert client_closed(closed.value)
    assert client_closed(KafkaException(KafkaError(KafkaError._DESTROY)))
    assert not client_closed(KafkaException(KafkaError(KafkaError._TIMED_OUT)))
    assert not client_closed(ValueError("a bug"))
