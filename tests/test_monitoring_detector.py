"""The detector's /metrics, /livez and /readyz on a ``krakenfeed detect`` process,
against the real broker and a PostgreSQL of the test's own, which it stops and
starts: the counters say what PostgreSQL holds, and readiness follows the broker
and PostgreSQL as they go away and come back."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from krakenfeed import pipeline
from krakenfeed.contracts import FeedId, Stream, topic
from krakenfeed.contracts import monitoring as m
from krakenfeed.embedded import EmbeddedKafka, EmbeddedPostgres, free_port, wait_until
from krakenfeed.embedded.run import run_until
from krakenfeed.kafka import end_offsets
from krakenfeed.monitoring.detector import ConsumerStats, StuckWatch, detector_live
from tests.conftest import RETENTION_DAYS, Kafka
from tests.scrape import Scrape, live, ready
from tests.test_detector_e2e import MARKET, _publish

TICKERS = sum(1 for r in MARKET.records if type(r).__name__ == "Ticker")
TRADES = len(MARKET.records) - TICKERS


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A server the test may stop and start again (its data and port kept)."""
    # Not pytest's tmp_path: PostgreSQL runs as its own user, which must reach it.
    root = Path(tempfile.mkdtemp(prefix="krakenfeed-monitoring-"))
    root.chmod(0o755)
    server = EmbeddedPostgres(durable=False, root=root / "pg").start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def detecting(kafka: Kafka, feed: FeedId, url: str, state_dir: Path) -> Iterator[int]:
    """``krakenfeed detect --http-port P`` in the background; yields P."""
    port = free_port()
    log_path = state_dir.parent / f"{feed.name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "krakenfeed", "detect",
                "--namespace", feed.namespace, "--feed", feed.name,
                "--broker", kafka.bootstrap, "--postgres-url", url,
                "--state-dir", str(state_dir),
                "--retention-days", str(RETENTION_DAYS),
                "--http-port", str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(lambda: _answers(port, process, log_path), 30, "the detector's endpoint")
        yield port
        assert process.poll() is None, log_path.read_text()[-3000:]
    finally:
        process.kill()
        process.wait()


def _answers(port: int, process: subprocess.Popen[bytes], log_path: Path) -> bool:
    assert process.poll() is None, log_path.read_text()[-3000:]
    try:
        live(port)
    except OSError:
        return False
    return True


def _anomalies_by_detector(url: str) -> dict[tuple[str, str], int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT detector, product, count(*) FROM anomalies GROUP BY 1, 2"
        ).fetchall()
    return {(detector, product): n for detector, product, n in rows}


def test_the_counters_match_postgresql_and_readiness_follows_it(
    kafka: Kafka, feed: FeedId, own_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    _publish(kafka, feed)
    url = own_postgres.url
    name = feed.name
    with detecting(kafka, feed, url, tmp_path / "state") as port:

        def written() -> dict[str, float]:
            return Scrape(port).by(m.DETECTOR_ROWS_WRITTEN.name, m.RECORD, feed=name)

        wait_until(
            lambda: written().get("ticker") == TICKERS and written().get("trade") == TRADES,
            90,
            f"{TICKERS} tickers and {TRADES} trades written",
        )

        def trade_lag() -> float:
            lag = Scrape(port).by(m.DETECTOR_LAG.name, m.TOPIC, feed=name)
            return lag.get(topic(feed, Stream.TRADE), -1)

        wait_until(lambda: trade_lag() == 0, 30, "the statistics to show the trades consumed")
        scrape = Scrape(port)
        consumed = scrape.by(m.DETECTOR_CONSUMED.name, m.TOPIC, feed=name, partition="0")
        assert consumed[topic(feed, Stream.TICKER)] == TICKERS
        assert consumed[topic(feed, Stream.TRADE)] == TRADES
        lag = scrape.by(m.DETECTOR_LAG.name, m.TOPIC, feed=name, partition="0")
        assert lag[topic(feed, Stream.TICKER)] == 0
        anomalies = {
            (dict(labels)[m.DETECTOR], dict(labels)[m.PRODUCT]): value
            for labels, value in scrape.samples[m.DETECTOR_ANOMALIES.name].items()
        }
        assert anomalies == _anomalies_by_detector(url)
        assert sum(anomalies.values()) >= 8, "the market holds injected anomalies"
        records = scrape.value(m.DETECTOR_SINK_BATCH_RECORDS.name + "_sum", feed=name)
        assert records == sum(scrape.by(m.DETECTOR_ROWS_WRITTEN.name, m.RECORD).values())
        writes = scrape.value(m.DETECTOR_SINK_BATCH_SECONDS.name + "_count", feed=name)
        assert 1 <= writes == scrape.value(m.DETECTOR_SINK_BATCH_RECORDS.name + "_count", feed=name)
        assert ready(port) == (200, "ok\n")
        assert scrape.value(m.CONNECTED.name, feed=name, peer="postgres") == 1

        own_postgres.stop()
        wait_until(lambda: "postgres" in ready(port)[1], 15, "not ready without PostgreSQL")
        assert ready(port)[0] == 503
        assert Scrape(port).value(m.CONNECTED.name, feed=name, peer="postgres") == 0
        assert live(port) == (200, "ok\n"), "a missing database is no reason to restart"
        # The same market again, which the stalled detector cannot write: lag builds up.
        _publish(kafka, feed)
        wait_until(lambda: trade_lag() > 0, 30, "lag while PostgreSQL is away")
        own_postgres.start()
        wait_until(lambda: ready(port) == (200, "ok\n"), 15, "ready with PostgreSQL back")
        wait_until(lambda: trade_lag() == 0, 60, "the lag worked off")
        rows = written()
        assert (rows["ticker"], rows["trade"]) == (2 * TICKERS, 2 * TRADES)


@pytest.mark.managed_broker
def test_readiness_follows_the_broker(
    kafka: Kafka, managed_kafka: EmbeddedKafka, feed: FeedId, postgres_url: str, tmp_path: Path
) -> None:
    with detecting(kafka, feed, postgres_url, tmp_path / "state") as port:
        wait_until(lambda: ready(port) == (200, "ok\n"), 30, "ready")
        managed_kafka.pause()
        try:
            wait_until(lambda: "kafka" in ready(port)[1], 15, "not ready without the broker")
            assert ready(port)[0] == 503
            assert live(port) == (200, "ok\n")
        finally:
            managed_kafka.resume()
        wait_until(lambda: ready(port) == (200, "ok\n"), 15, "ready with the broker back")


def test_a_consumer_that_polls_but_reads_nothing_while_records_wait_is_not_live(
    kafka: Kafka,
    feed: FeedId,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The stream keeps polling (statistics keep coming) while its partitions read
    # nothing, as when the broker's group coordinator stopped answering: with
    # records waiting on the broker the watch says stuck after stuck_after_s, and
    # liveness fails; reading again, both clear.
    monkeypatch.setattr(pipeline, "STATS_INTERVAL_MS", 200)
    _publish(kafka, feed)
    markets = len(MARKET.records)
    stats = ConsumerStats(sources=pipeline.consumed_topics(feed))
    app, sink = pipeline.build_detector_app(
        feed,
        kafka.bootstrap,
        postgres_url,
        state_dir=tmp_path,
        retention_days=RETENTION_DAYS,
        consumer_stats=stats.update,
    )
    watch = StuckWatch(stats, sink, end_offsets(kafka.bootstrap), 1.0, interval_s=0.2).start()
    consumer = app._processing_context.consumer
    seen: dict[str, list[str]] = {}

    def written() -> int:
        return sink.written["Ticker"] + sink.written["Trade"]

    def sources() -> list[Any]:
        return [tp for tp in consumer.assignment() if tp.topic in stats.sources]

    def step() -> bool:
        problems = detector_live(stats, watch)
        if "paused" not in seen:
            seen.setdefault("reading", []).extend(problems)
            if written() >= markets:
                # The stream's own partitions; its changelogs are paused already.
                consumer.pause(sources())
                seen["paused"] = []
                _publish(kafka, feed)  # the same records again: upserts
        elif "resumed" not in seen:
            if problems:
                seen["paused"] = problems
                consumer.resume(sources())
                seen["resumed"] = []
        else:
            seen["resumed"] = problems
            return not problems and written() >= 2 * markets
        return False

    try:
        run_until(app, step, 90, "stuck, then reading again")
    finally:
        watch.stop()
        sink.close()
    assert seen["reading"] == []
    [problem] = seen["paused"]
    assert problem.startswith("the detector's consumer has not moved for "), problem
    waiting = int(problem.split(" with ")[1].split()[0])
    assert 0 < waiting <= markets, problem
    assert seen["resumed"] == []
