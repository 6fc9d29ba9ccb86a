"""The live view, fed by the monitor reading a real broker: given records, an anomaly,
a reconnect and a dead letter on a feed's topics, the table shows each product's
activity, the connection's events, the detector's lag and the anomalies by detector."""

from __future__ import annotations

import sys
import time

from rich.console import Console

from krakenfeed.contracts import (
    Anomaly,
    DeadLetter,
    DeadLetterReason,
    FeedId,
    KrakenFeedSpec,
    QualityEvent,
    QualityKind,
    Severity,
    SourceSpec,
    Stream,
    topic,
)
from krakenfeed.embedded import wait_until
from krakenfeed.kafka import contract_topics, make_application, produce_records
from krakenfeed.local.monitor import FeedMonitor
from krakenfeed.local.supervisor import ChildSpec, Supervisor
from krakenfeed.local.view import LiveView, anomaly_line
from krakenfeed.market import FUTURES, generate_market
from tests.conftest import Kafka

SLEEPS = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_the_view_shows_activity_lag_and_anomalies_read_from_kafka(
    kafka: Kafka, feed: FeedId
) -> None:
    market = generate_market(seed=1, duration_s=60, warmup_s=0, inject=False)
    records = [r for r in market.records if r.product == FUTURES]
    anomaly = Anomaly(
        feed=str(feed), product=FUTURES, detector="price_jump",
        event_time_ms=records[-1].exchange_time_ms or 0, detected_time_ns=0, value=65_000.0,
        baseline_low=64_000.0, baseline_high=64_500.0, score=9.0, severity=Severity.CRITICAL,
    )  # fmt: skip
    reconnect = QualityEvent(
        source="futures", kind=QualityKind.RECONNECT, received_time_ns=1, detail="reconnected"
    )
    refused = DeadLetter(
        source="futures", received_time_ns=2, reason=DeadLetterReason.CROSSED_QUOTE,
        detail="bid > ask", raw="{}", product=FUTURES,
    )  # fmt: skip
    app = make_application(kafka.bootstrap)
    contract_topics(app, kafka.bootstrap, feed, list(Stream))
    with app.get_producer() as producer:
        for stream, kind in ((Stream.TICKER, "Ticker"), (Stream.TRADE, "Trade")):
            produce_records(
                producer, topic(feed, stream), (r for r in records if type(r).__name__ == kind)
            )
        produce_records(producer, topic(feed, Stream.ANOMALIES), [anomaly])
        produce_records(producer, topic(feed, Stream.QUALITY), [reconnect])
        produce_records(producer, topic(feed, Stream.DLQ), [refused])

    spec = KrakenFeedSpec(sources=[SourceSpec(api="futures", products=[FUTURES, "PF_ETHUSD"])])
    supervisor = Supervisor([ChildSpec("ingest-futures", SLEEPS), ChildSpec("detector", SLEEPS)])
    monitor = FeedMonitor(kafka.bootstrap, feed)
    supervisor.start()
    try:
        seen: list[Anomaly] = []
        wait_until(
            lambda: (
                bool(seen.extend(monitor.poll()))
                or (monitor.market_records == len(records) and len(seen) == 1)
            ),
            20,
            "the monitor to read the feed",
        )
        lag, total = monitor.detector_lag()
        view = LiveView(feed, spec, replay_frames=2 * len(records))
        console = Console(record=True, width=200)
        console.print(view.render(supervisor.children, monitor, lag, now=time.monotonic()))
    finally:
        supervisor.stop(["ingest-futures", "detector"])
        monitor.close()
    text = console.export_text()

    assert seen == [anomaly]
    assert (lag, total) == (len(records) + 2, len(records) + 2), "nothing committed yet"
    futures_row = next(line for line in text.splitlines() if f" {FUTURES} " in line)
    assert "streaming (1 reconnects, 1 invalid)" in futures_row
    assert f" {len(records)} " in futures_row
    assert " s ago " in futures_row
    idle_row = next(line for line in text.splitlines() if " PF_ETHUSD " in line)
    assert "-" in idle_row and " 0 " in idle_row
    assert "price_jump 1" in text
    assert f"{len(records)}/{2 * len(records)} frames" in text
    assert "critical" in anomaly_line(anomaly) and "price_jump" in anomaly_line(anomaly)
