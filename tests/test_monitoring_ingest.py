"""The ingest worker's /metrics, /livez and /readyz, against a real replay server
and the real broker: the counters say what the topics hold, and readiness follows
Kraken and the broker as they go away and come back."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from krakenfeed.contracts import FeedId, QualityKind
from krakenfeed.contracts import monitoring as m
from krakenfeed.embedded import EmbeddedKafka, wait_until
from krakenfeed.ingest.resilience import BackoffPolicy
from krakenfeed.ingest.worker import IngestWorker
from krakenfeed.monitoring.ingest import MONITOR_SILENT_S, serving_ingest
from krakenfeed.replay.faults import Drop, Inject, Refuse
from tests.conftest import Kafka
from tests.scrape import Scrape, live, ready
from tests.test_ingest_e2e import running
from tests.test_ingest_faults import FUTURES, _session, _settings, replay_until_done, serving


def test_the_counters_match_what_reached_the_topics(kafka: Kafka, feed: FeedId) -> None:
    faults = [[Inject("malformed", 10), Drop(after=40)], [Inject("schema", 5)]]
    with serving(_session("futures"), faults) as server:
        worker = IngestWorker(_settings(kafka, feed, "futures", server.url("futures")))
        with serving_ingest(worker, 0, host="127.0.0.1") as endpoint:
            outcome = replay_until_done(kafka, feed, server, worker, dead_letters=2)
            scrape = Scrape(endpoint.port)
    name = feed.name
    produced = scrape.by(m.INGEST_RECORDS.name, m.STREAM, feed=name)
    assert produced["trade"] == len(outcome.trades)
    assert produced["ticker"] == len(outcome.tickers)
    assert produced["dlq"] == len(outcome.dlq) == 2
    assert produced["quality"] == len(outcome.quality)
    invalid = scrape.by(m.INGEST_INVALID.name, m.REASON, feed=name)
    assert invalid == {"malformed_json": 1.0, "schema_mismatch": 1.0}
    reconnects = scrape.by(m.INGEST_RECONNECTS.name, m.CAUSE, feed=name)
    assert reconnects == {"dropped": 1.0}
    assert len(outcome.of_kind(QualityKind.RECONNECT)) == 1
    frames = scrape.by(m.INGEST_FRAMES.name, m.KIND, feed=name)
    assert frames["trade"] > 0 and frames["ticker"] > 0
    assert sum(frames.values()) >= len(outcome.trades) / 100, "frames carry the records"
    assert scrape.value(m.INGEST_DUPLICATES.name, feed=name) == worker.metrics.duplicates > 0
    ages = scrape.by(m.INGEST_LAST_FRAME_AGE.name, m.PRODUCT, feed=name)
    assert set(ages) == set(FUTURES)
    assert all(0 <= age < 60 for age in ages.values())
    # The worker has stopped: no socket to Kraken any more.
    assert scrape.value(m.CONNECTED.name, feed=name, peer="kraken") == 0


@pytest.mark.managed_broker
def test_readiness_follows_kraken_and_the_broker(
    kafka: Kafka, managed_kafka: EmbeddedKafka, feed: FeedId
) -> None:
    refusals = [[Refuse(503)]] * 4
    with serving(_session("futures"), [[Drop(after=60)], *refusals]) as server:
        settings = _settings(
            kafka,
            feed,
            "futures",
            server.url("futures"),
            backoff=BackoffPolicy(base_s=0.4, cap_s=0.4, healthy_s=60),
        )
        worker = IngestWorker(settings)
        with serving_ingest(worker, 0, host="127.0.0.1") as endpoint, running(worker):
            port = endpoint.port
            # Kraken: the drop and four refused upgrades keep it away for a while.
            seen: list[tuple[int, str]] = []
            deadline = time.monotonic() + 30
            while not (worker.metrics.reconnects and ready(port)[0] == 200):
                assert time.monotonic() < deadline, f"no reconnect; readiness said {seen[-3:]}"
                seen.append(ready(port))
                time.sleep(0.01)
            assert any(status == 503 and "kraken" in body for status, body in seen), seen[-3:]
            assert worker.metrics.connect_failures == {"upgrade_503": 4}
            scrape = Scrape(port)
            assert scrape.value(m.CONNECTED.name, feed=feed.name, peer="kraken") == 1
            assert scrape.value(m.CONNECTED.name, feed=feed.name, peer="kafka") == 1
            # The broker: paused, then back.
            managed_kafka.pause()
            try:
                wait_until(lambda: "kafka" in ready(port)[1], 15, "not ready without the broker")
                assert ready(port)[0] == 503
                assert Scrape(port).value(m.CONNECTED.name, feed=feed.name, peer="kafka") == 0
                assert live(port) == (200, "ok\n"), "a missing broker is no reason to restart"
            finally:
                managed_kafka.resume()
            wait_until(lambda: ready(port) == (200, "ok\n"), 15, "ready with the broker back")


def test_a_monitor_thread_that_stopped_ticking_fails_liveness(kafka: Kafka, feed: FeedId) -> None:
    with serving(_session("futures"), []) as server:
        worker = IngestWorker(_settings(kafka, feed, "futures", server.url("futures")))
        with serving_ingest(worker, 0, host="127.0.0.1") as endpoint, running(worker):
            wait_until(lambda: ready(endpoint.port)[0] == 200, 15, "ready")
            assert live(endpoint.port) == (200, "ok\n")
            worker.monitor_beat_ns -= int((MONITOR_SILENT_S + 10) * 1e9)
            status, body = live(endpoint.port)
            assert status == 503 and "monitor thread" in body
            wait_until(lambda: live(endpoint.port)[0] == 200, 5, "the next tick to count again")


def test_a_port_in_use_is_refused_with_the_flag_named(kafka: Kafka, feed: FeedId) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable, "-m", "krakenfeed", "ingest",
                "--namespace", feed.namespace, "--feed", feed.name, "--broker", kafka.bootstrap,
                "--api", "futures", "--products", "PF_XBTUSD", "--url", "ws://127.0.0.1:9",
                "--http-port", str(port),
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"krakenfeed ingest: cannot serve /metrics on 0.0.0.0:{port}")
    assert "(--http-port)" in line and "Traceback" not in result.stderr
