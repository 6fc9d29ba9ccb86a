"""Delivery guarantees of the ``krakenfeed detect`` process, against a real broker
and real PostgreSQL: kill -9, SIGTERM, a PostgreSQL outage, a paused broker,
replicas joining and leaving, and replays all end with the rows of one
uninterrupted run, and the anomalies topic holds each anomaly once.

"Equal" compares the rows on their natural keys and deterministic columns: every
column but the feed, ``detected_time_ns`` and ``trace_id``.

The input arrives paced (``Publisher``), so every fault lands mid-stream. Run these
alone with ``pytest -m delivery``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql

from krakenfeed.contracts import (
    Anomaly,
    FeedId,
    Stream,
    Ticker,
    Trade,
    consumer_group,
    decode_record,
    encode_record,
    record_key,
    record_timestamp_ms,
    topic,
)
from krakenfeed.embedded import EmbeddedPostgres
from krakenfeed.kafka import contract_topics, make_application
from krakenfeed.market import FUTURES, SPOT, generate_market
from tests.conftest import RETENTION_DAYS, Kafka, create_database, drop_database

pytestmark = pytest.mark.delivery

MARKETS = 4


def _market() -> list[Ticker | Trade]:
    """MARKETS seeded markets under their own product names, merged in time order:
    about 22k events over 8 products."""
    records: list[Ticker | Trade] = []
    for market in range(MARKETS):
        names = {FUTURES: f"PF_D{market}USD", SPOT: f"D{market}/USD"}
        generated = generate_market(
            seed=100 + market, duration_s=900, warmup_s=300, anomaly_every_s=80
        )
        records += (
            msgspec.structs.replace(record, product=names[record.product])
            for record in generated.records
        )
    records.sort(key=record_timestamp_ms)
    return records


RECORDS = _market()
TICKERS = sum(1 for r in RECORDS if type(r) is Ticker)
TRADES = len(RECORDS) - TICKERS
DETECTOR_CONFIG = '{"stale": {"silent_after_ms": 600000}}'
"""The wall-clock silence check stays on, but no pause here lasts long enough to
make a product silent: its reports depend on the wall clock, not on the input."""

_TABLES = {
    "ticker": "product, source, event_time_ms, exchange_time_ms, received_time_ns, bid, ask,"
    " bid_size, ask_size, last, volume, mark_price, index_price, premium, funding_rate,"
    " relative_funding_rate, open_interest",
    "trades": "product, source, event_time_ms, exchange_time_ms, received_time_ns, side,"
    " price, qty, trade_id, seq, uid",
    "anomalies": "product, detector, event_time_ms, value, baseline_low, baseline_high,"
    " score, severity, context::text",
    "quality_events": "event_id, source, kind, product, exchange_time_ms, received_time_ns,"
    " detail, reason, raw, attributes::text",
}

Rows = dict[str, list[tuple[Any, ...]]]


def _rows(url: str, feed: FeedId) -> Rows:
    """Every table's rows of ``feed``, on the compared columns, sorted."""
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(
                sql.SQL("SELECT {} FROM {} WHERE feed = %s ORDER BY {}").format(
                    sql.SQL(columns),
                    sql.Identifier(table),
                    sql.SQL(", ".join(str(n + 1) for n in range(columns.count(",") + 1))),
                ),
                (str(feed),),
            ).fetchall()
            for table, columns in _TABLES.items()
        }


def _counts(url: str) -> tuple[int, int, int]:
    """Rows in ticker, trades and anomalies; zeros before the detector migrated."""
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM ticker), (SELECT count(*) FROM trades),"
                " (SELECT count(*) FROM anomalies)"
            ).fetchone()
    except (psycopg.errors.UndefinedTable, psycopg.OperationalError):
        return (0, 0, 0)
    assert row is not None
    return (row[0], row[1], row[2])


def _market_rows(url: str) -> int:
    tickers, trades, _ = _counts(url)
    return tickers + trades


def _wait(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class Detector:
    """One ``krakenfeed detect`` process, its output in a log file."""

    def __init__(
        self,
        kafka: Kafka,
        feed: FeedId,
        url: str,
        state_dir: Path,
        name: str,
        *,
        instance_id: str | None = None,
    ) -> None:
        self.name = name
        self.log_path = state_dir.parent / f"{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "krakenfeed", "detect",
            "--namespace", feed.namespace, "--feed", feed.name,
            "--broker", kafka.bootstrap, "--postgres-url", url,
            "--state-dir", str(state_dir),
            "--retention-days", str(RETENTION_DAYS),
            "--detector-config", DETECTOR_CONFIG,
        ]  # fmt: skip
        if instance_id:
            command += ["--instance-id", instance_id]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def terminate(self, timeout: float = 10.0) -> float:
        """SIGTERM; returns the seconds it took to exit, which must be 0."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s of SIGTERM:\n{self.log[-3000:]}"
            ) from None
        assert code == 0, f"{self.name} exited with {code}:\n{self.log[-3000:]}"
        return time.monotonic() - started

    def assert_running(self) -> None:
        assert self.process.poll() is None, (
            f"{self.name} exited with {self.process.returncode}:\n{self.log[-3000:]}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill()


class Publisher(threading.Thread):
    """Produces RECORDS to the feed's ticker and trade topics at about ``rate`` per
    second, keyed and timestamped as ingest does."""

    def __init__(self, kafka: Kafka, feed: FeedId, partitions: int, rate: float) -> None:
        super().__init__(daemon=True)
        app = make_application(kafka.bootstrap)
        topics = contract_topics(app, kafka.bootstrap, feed, list(Stream), partitions)
        self._producer = app.get_producer()
        self._topics = {Ticker: topics[Stream.TICKER].name, Trade: topics[Stream.TRADE].name}
        self._rate = rate
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            started = time.monotonic()
            with self._producer as producer:
                for n, record in enumerate(RECORDS):
                    producer.produce(
                        self._topics[type(record)],
                        value=encode_record(record),
                        key=record_key(record),
                        timestamp=record_timestamp_ms(record),
                    )
                    if n % 500 == 499:
                        ahead = (n + 1) / self._rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.join(timeout=120)
        assert not self.is_alive(), "the publisher did not finish"
        assert self.error is None, f"the publisher failed: {self.error!r}"


@dataclass
class Reference:
    """The rows and anomalies of one uninterrupted run."""

    rows: Rows
    anomalies: list[tuple[Any, ...]]


def _anomaly_identity(a: Anomaly) -> tuple[Any, ...]:
    return (a.product, a.detector, a.event_time_ms, a.value, a.score, a.severity.value)


def _published_anomalies(
    kafka: Kafka, feed: FeedId, expected: int, partitions: int = 1
) -> list[tuple[Any, ...]]:
    """Every anomaly a read_committed consumer finds on the feed's anomalies topic,
    once ``expected`` distinct ones have arrived and no more came for a second."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": "krakenfeed-test-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    name = topic(feed, Stream.ANOMALIES)
    consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in range(partitions)])
    found: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(500, 1.0) if m.error() is None]
            found += (_anomaly_identity(decode_record(m.value(), Anomaly)) for m in batch)
            if not batch and len(set(found)) >= expected:
                break
    finally:
        consumer.close()
    return sorted(found)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: PostgreSQL runs as its own user, which must reach it.
    root = Path(tempfile.mkdtemp(prefix="krakenfeed-delivery-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(kafka: Kafka, postgres_admin_url: str, workdir: Path) -> Iterator[Reference]:
    """One detector, never interrupted, over the whole input published up front."""
    feed = FeedId("test", f"reference-{uuid.uuid4().hex[:8]}")
    url = create_database(postgres_admin_url)
    try:
        yield _reference_run(kafka, feed, url, workdir)
    finally:
        drop_database(postgres_admin_url, url)


def _reference_run(kafka: Kafka, feed: FeedId, url: str, workdir: Path) -> Reference:
    publisher = Publisher(kafka, feed, 1, rate=1e9)
    publisher.start()
    publisher.finish()
    detector = Detector(kafka, feed, url, workdir / "reference", "reference")
    try:
        _wait(lambda: _market_rows(url) == len(RECORDS), 120, "the reference run", 0.2)
        detector.terminate()
    finally:
        detector.stop()
    rows = _rows(url, feed)
    assert len(rows["anomalies"]) >= 10, "the input should raise anomalies"
    assert (len(rows["ticker"]), len(rows["trades"])) == (TICKERS, TRADES)
    anomalies = _published_anomalies(kafka, feed, len(rows["anomalies"]))
    assert len(anomalies) == len(rows["anomalies"]), "each anomaly once on Kafka"
    return Reference(rows, anomalies)


def _finish(
    kafka: Kafka,
    feed: FeedId,
    url: str,
    reference: Reference,
    detectors: list[Detector],
    partitions: int = 1,
    *,
    aborted: bool,
) -> None:
    """Wait for every row, stop the detectors with SIGTERM, and compare.

    ``aborted``: the run aborted Kafka transactions (a kill, an outage). The broker
    here, Tansu, hands a read_committed consumer the records of aborted
    transactions too (a broker that filters them, as Kafka does, shows each
    anomaly once), so the topic is then compared as a set: every anomaly there,
    nothing else. A run that aborted nothing must show each anomaly exactly once.
    """
    expected = (TICKERS, TRADES, len(reference.rows["anomalies"]))
    try:
        _wait(
            lambda: all(n >= e for n, e in zip(_counts(url), expected, strict=True)),
            120,
            f"{expected} rows",
            0.1,
        )
    except TimeoutError as exc:
        logs = "\n".join(f"--- {d.name}:\n{d.log[-4000:]}" for d in detectors)
        raise TimeoutError(f"{exc}; {_counts(url)} arrived\n{logs}") from None
    for detector in detectors:
        detector.terminate()
    rows = _rows(url, feed)
    for table, expected_rows in reference.rows.items():
        extra = set(rows[table]) - set(expected_rows)
        missing = set(expected_rows) - set(rows[table])
        assert not extra and not missing, f"{table}: extra {extra}, missing {missing}"
    assert rows == reference.rows
    published = _published_anomalies(kafka, feed, len(reference.anomalies), partitions)
    if aborted:
        assert sorted(set(published)) == reference.anomalies
    else:
        assert published == reference.anomalies, "each anomaly once on the anomalies topic"


def _committed(kafka: Kafka, feed: FeedId) -> tuple[int, int]:
    """The detector group's committed offsets on the ticker and trade topics."""
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": consumer_group(feed)})
    try:
        partitions = consumer.committed(
            [TopicPartition(topic(feed, stream), 0) for stream in (Stream.TICKER, Stream.TRADE)],
            timeout=10,
        )
    finally:
        consumer.close()
    # A partition without a committed offset reports a negative one.
    return (max(partitions[0].offset, 0), max(partitions[1].offset, 0))


def test_kill_9_at_three_points_and_sigterm_end_with_the_rows_of_an_uninterrupted_run(
    kafka: Kafka, postgres_url: str, feed: FeedId, workdir: Path, reference: Reference
) -> None:
    """SIGTERM, which must commit exactly what is written and exit 0 within 10 s;
    kill -9 mid-stream; kill -9 right after the restarted process wrote its first
    rows; kill -9 of a process whose local state was wiped, so that it came back
    from the changelog alone."""
    base = workdir / feed.name
    state = base / "state"
    publisher = Publisher(kafka, feed, 1, rate=1500)
    detectors: list[Detector] = []

    def start(name: str) -> Detector:
        detectors.append(Detector(kafka, feed, postgres_url, state, name, instance_id="d0"))
        return detectors[-1]

    kill_points: list[int] = []
    try:
        first = start("first")
        publisher.start()
        _wait(lambda: _market_rows(postgres_url) >= 3_000, 60, "3000 rows")
        took = first.terminate()
        assert took < 10
        tickers, trades, _ = _counts(postgres_url)
        assert _committed(kafka, feed) == (tickers, trades), "SIGTERM commits what it wrote"
        assert tickers + trades < len(RECORDS), "SIGTERM came mid-stream"

        second = start("second")
        _wait(lambda: _market_rows(postgres_url) >= tickers + trades + 3_000, 60, "3000 more")
        second.kill()
        kill_points.append(_market_rows(postgres_url))

        third = start("third")
        _wait(lambda: _market_rows(postgres_url) > kill_points[-1], 60, "the restart's rows")
        third.kill()
        kill_points.append(_market_rows(postgres_url))

        shutil.rmtree(state)
        fourth = start("fourth")
        _wait(lambda: _market_rows(postgres_url) >= kill_points[-1] + 3_000, 60, "3000 more")
        fourth.kill()
        kill_points.append(_market_rows(postgres_url))

        last = start("last")
        publisher.finish()
        _finish(kafka, feed, postgres_url, reference, [last], aborted=True)
    finally:
        for detector in detectors:
            detector.stop()
    assert kill_points == sorted(kill_points)
    assert kill_points[0] > 0 and kill_points[-1] < len(RECORDS), f"mid-stream: {kill_points}"


def test_postgresql_stopped_for_10s_mid_stream_loses_nothing_and_the_worker_stays_up(
    kafka: Kafka, feed: FeedId, workdir: Path, reference: Reference
) -> None:
    base = workdir / feed.name
    server = EmbeddedPostgres(durable=False, root=base / "pg")
    server.start()
    url = server.url
    detector = None
    try:
        publisher = Publisher(kafka, feed, 1, rate=1500)
        detector = Detector(kafka, feed, url, base / "state", "detector")
        publisher.start()
        _wait(lambda: _market_rows(url) >= 3_000, 60, "3000 rows")
        server.stop()
        stopped_at = time.monotonic()
        _wait(lambda: "database unavailable" in detector.log, 10, "the health state", 0.1)
        time.sleep(max(0.0, 10 - (time.monotonic() - stopped_at)))
        detector.assert_running()
        server.start()
        publisher.finish()
        _finish(kafka, feed, url, reference, [detector], aborted=True)
    finally:
        if detector is not None:
            detector.stop()
        server.stop()
        shutil.rmtree(base / "pg", ignore_errors=True)
    log = detector.log
    assert "PostgreSQL available again" in log
    assert "Traceback" not in log
    outage_lines = [line for line in log.splitlines() if "WARNING" in line]
    assert len(outage_lines) <= 20, "bounded logs:\n" + "\n".join(outage_lines)


@pytest.mark.managed_broker
def test_the_broker_paused_for_10s_mid_stream_loses_nothing(
    kafka: Kafka, postgres_url: str, feed: FeedId, workdir: Path, reference: Reference
) -> None:
    assert kafka.managed is not None
    publisher = Publisher(kafka, feed, 1, rate=1500)
    detector = Detector(kafka, feed, postgres_url, workdir / feed.name / "state", "detector")
    try:
        publisher.start()
        _wait(lambda: _market_rows(postgres_url) >= 3_000, 60, "3000 rows")
        kafka.managed.pause()
        try:
            paused_at = _market_rows(postgres_url)
            time.sleep(10)
        finally:
            kafka.managed.resume()
        assert paused_at < len(RECORDS), "the pause came mid-stream"
        detector.assert_running()
        publisher.finish()
        _finish(kafka, feed, postgres_url, reference, [detector], aborted=True)
    finally:
        detector.stop()


def _owned(state_dir: Path) -> set[str]:
    """The partitions a replica was assigned: its state has a store for each."""
    return {path.name for path in state_dir.rglob("*") if path.name.isdigit()}


def test_replicas_joining_and_leaving_end_with_the_rows_of_one_replica(
    kafka: Kafka, postgres_url: str, feed: FeedId, workdir: Path, reference: Reference
) -> None:
    """Two replicas share four partitions; a third joins, then one leaves (SIGTERM),
    while the input streams in."""
    partitions = 4
    base = workdir / feed.name
    # 36 s of input: a slow rebalance must not let the stream end before r1 leaves
    # (at 1000/s one run here caught up with all 21,719 records first).
    publisher = Publisher(kafka, feed, partitions, rate=600)

    def replica(name: str) -> Detector:
        return Detector(kafka, feed, postgres_url, base / name, name, instance_id=name)

    replicas = [replica("r1"), replica("r2")]
    try:
        publisher.start()
        _wait(lambda: _market_rows(postgres_url) >= 3_000, 60, "3000 rows")
        replicas.append(replica("r3"))
        # One rebalance at a time: r1 leaves once r3 holds partitions and the
        # stream moved on.
        _wait(lambda: bool(_owned(base / "r3")), 60, "r3 to be assigned partitions", 0.1)
        joined_at = _market_rows(postgres_url)
        _wait(lambda: _market_rows(postgres_url) >= joined_at + 2_000, 60, "2000 more")
        replicas.pop(0).terminate()
        left_at = _market_rows(postgres_url)
        assert left_at < len(RECORDS), "the replica left mid-stream"
        publisher.finish()
        _finish(kafka, feed, postgres_url, reference, replicas, partitions, aborted=False)
    finally:
        for detector in replicas:
            detector.stop()
    for name in ("r1", "r2", "r3"):
        assert _owned(base / name), f"{name} was assigned no partition"
    for detector in replicas:
        assert "Traceback" not in detector.log


def _reset(kafka: Kafka, feed: FeedId, state_dir: Path) -> None:
    """Start the stopped detector group over, as an operator replays its input: its
    state (the changelog topics and the local copy) deleted, its offsets reset to 0.
    State kept across the reset would see the input's start after its end."""
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    group = consumer_group(feed)
    changelogs = [
        name
        for name in admin.list_topics(timeout=10).topics
        if name.startswith("changelog__") and group in name
    ]
    assert changelogs, "the detector keeps its state in changelog topics"
    for future in admin.delete_topics(changelogs, operation_timeout=30).values():
        future.result()
    shutil.rmtree(state_dir)
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": consumer_group(feed),
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.commit(
            offsets=[
                TopicPartition(topic(feed, stream), 0, 0)
                for stream in (Stream.TICKER, Stream.TRADE)
            ],
            asynchronous=False,
        )
    finally:
        consumer.close()
    assert _committed(kafka, feed) == (0, 0)


def test_replaying_the_input_twice_adds_no_row(
    kafka: Kafka, postgres_url: str, feed: FeedId, workdir: Path, reference: Reference
) -> None:
    """The whole input, then the group reset and the whole input again: the second
    pass finds every row already there, and changes none."""
    publisher = Publisher(kafka, feed, 1, rate=1e9)
    publisher.start()
    publisher.finish()
    base = workdir / feed.name
    first = Detector(kafka, feed, postgres_url, base / "state", "first")
    try:
        _finish(kafka, feed, postgres_url, reference, [first], aborted=False)
    finally:
        first.stop()
    before = _rows_as_written(postgres_url)
    _reset(kafka, feed, base / "state")
    second = Detector(kafka, feed, postgres_url, base / "state", "second")
    try:
        _wait(lambda: _committed(kafka, feed) == (TICKERS, TRADES), 120, "the replay", 0.5)
        second.terminate()
    finally:
        second.stop()
    assert _rows(postgres_url, feed) == reference.rows
    assert _rows_as_written(postgres_url) == before, "the replay inserted or changed no row"


def _rows_as_written(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row with every column, detection times included: a row written again
    would show a new one."""
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(
                sql.SQL("SELECT t::text FROM {} t ORDER BY 1").format(sql.Identifier(table))
            ).fetchall()
            for table in _TABLES
        }
