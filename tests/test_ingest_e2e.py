"""The ingest worker end to end: the replay server speaks Kraken over a real
WebSocket, the worker produces to the real broker, and the topics are read back."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec

from krakenfeed.contracts import (
    DeadLetter,
    DeadLetterReason,
    FeedId,
    QualityEvent,
    QualityKind,
    Stream,
    Ticker,
    Trade,
    decode_record,
    topic,
)
from krakenfeed.embedded import wait_until
from krakenfeed.ingest.worker import IngestSettings, IngestWorker
from krakenfeed.replay.capture import read_capture
from krakenfeed.replay.server import ReplayServer
from krakenfeed.replay.session import Session, generate_session
from tests import golden_frames as golden
from tests.conftest import Kafka
from tests.kafka_reader import read_topic


@contextmanager
def running(worker: IngestWorker) -> Iterator[list[int]]:
    """Run the worker in a thread; yields the list its exit code lands in."""
    outcome: list[int] = []
    thread = threading.Thread(target=lambda: outcome.append(worker.run()), daemon=True)
    thread.start()
    try:
        yield outcome
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert not thread.is_alive(), "the worker did not stop within 10 s"


def _futures_expectation(session: Session, products: list[str]) -> tuple[list[Any], list[Any]]:
    """(product, exchange ms, bid, ask) per ticker and (product, seq, price, qty, side) per
    trade, in the order Kraken would deliver them to a fresh subscriber."""
    tickers = []
    trades = []
    for product in products:
        snapshot = session.trade_snapshot("futures", product, 0)["trades"]
        trades += [
            (t["product_id"], t["seq"], t["price"], t["qty"], t["side"])
            for t in sorted(snapshot, key=lambda t: t["seq"])
        ]
    for frame in session.frames["futures"]:
        p = frame.payload
        if frame.channel == "ticker":
            tickers.append((p["product_id"], p["time"], p["bid"], p["ask"]))
        else:
            trades.append((p["product_id"], p["seq"], p["price"], p["qty"], p["side"]))
    return tickers, trades


def _per_product(rows: list[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row)
    return grouped


def _settings(
    feed: FeedId, kafka: Kafka, api: Any, products: list[str], url: str
) -> IngestSettings:
    return IngestSettings(
        feed=feed,
        api=api,
        products=tuple(products),
        channels=("ticker", "trade"),
        broker=kafka.bootstrap,
        url=url,
        max_clock_skew_ms=0,
    )


def test_a_futures_session_arrives_on_kafka_exactly(kafka: Kafka, feed: FeedId) -> None:
    products = ["PF_XBTUSD", "PI_XBTUSD"]
    session = generate_session("futures", products, count_per_product_channel=150, seed=7)
    tickers, trades = _futures_expectation(session, products)
    with ReplayServer(session, keep_times=True) as server:
        worker = IngestWorker(_settings(feed, kafka, "futures", products, server.url("futures")))
        with running(worker) as outcome:
            wait_until(
                lambda: (
                    worker.metrics.produced["Ticker"] == len(tickers)
                    and worker.metrics.produced["Trade"] == len(trades)
                ),
                30,
                f"{len(tickers)} tickers and {len(trades)} trades; have {worker.metrics.produced}",
            )
            assert worker.protocol.subscriptions.settled
            assert worker.protocol.subscriptions.active == {
                (c, p) for c in ("ticker", "trade") for p in products
            }
    assert outcome == [0]

    ticker_messages = read_topic(kafka.bootstrap, topic(feed, Stream.TICKER), len(tickers))
    got_tickers = [decode_record(m.value(), Ticker) for m in ticker_messages]
    assert _per_product([(t.product, t.exchange_time_ms, t.bid, t.ask) for t in got_tickers]) == (
        _per_product(tickers)
    )
    assert all(
        m.key() == t.product.encode() for m, t in zip(ticker_messages, got_tickers, strict=True)
    )
    assert all(
        m.timestamp()[1] == t.exchange_time_ms
        for m, t in zip(ticker_messages, got_tickers, strict=True)
    )
    assert all(t.mark_price is not None and t.index_price is not None for t in got_tickers)
    # Without an OTLP endpoint the worker traces nothing: no header on any record.
    assert all(m.headers() is None for m in ticker_messages)

    trade_messages = read_topic(kafka.bootstrap, topic(feed, Stream.TRADE), len(trades))
    got_trades = [decode_record(m.value(), Trade) for m in trade_messages]
    assert _per_product([(t.product, t.seq, t.price, t.qty, t.side) for t in got_trades]) == (
        _per_product(trades)
    )
    assert all(
        m.key() == t.product.encode() for m, t in zip(trade_messages, got_trades, strict=True)
    )
    assert worker.metrics.invalid.total() == 0


def test_a_spot_session_arrives_on_kafka_exactly(kafka: Kafka, feed: FeedId) -> None:
    products = ["BTC/USD", "ETH/USD"]
    session = generate_session("spot", products, count_per_product_channel=120, seed=3)
    expected_trades: list[Any] = []
    expected_tickers: list[Any] = []
    for product in products:
        snapshot = session.trade_snapshot("spot", product, 0)["data"]
        expected_trades += [
            (t["symbol"], t["trade_id"], t["price"], t["qty"])
            for t in sorted(snapshot, key=lambda t: t["trade_id"])
        ]
        opening = session.ticker_snapshot("spot", product, 0)
        if opening is not None:
            expected_tickers += [(t["symbol"], t["bid"], t["ask"]) for t in opening["data"]]
    for frame in session.frames["spot"]:
        for item in frame.payload["data"]:
            if frame.channel == "trade":
                expected_trades.append(
                    (item["symbol"], item["trade_id"], item["price"], item["qty"])
                )
            else:
                expected_tickers.append((item["symbol"], item["bid"], item["ask"]))

    with ReplayServer(session, keep_times=True) as server:
        worker = IngestWorker(_settings(feed, kafka, "spot", products, server.url("spot")))
        with running(worker) as outcome:
            wait_until(
                lambda: (
                    worker.metrics.produced["Ticker"] == len(expected_tickers)
                    and worker.metrics.produced["Trade"] == len(expected_trades)
                ),
                30,
                f"{len(expected_tickers)} tickers and {len(expected_trades)} trades",
            )
    assert outcome == [0]

    trade_messages = read_topic(kafka.bootstrap, topic(feed, Stream.TRADE), len(expected_trades))
    trades = [decode_record(m.value(), Trade) for m in trade_messages]
    assert _per_product([(t.product, t.trade_id, t.price, t.qty) for t in trades]) == _per_product(
        expected_trades
    )
    assert all(
        m.timestamp()[1] == t.exchange_time_ms for m, t in zip(trade_messages, trades, strict=True)
    )
    ticker_messages = read_topic(kafka.bootstrap, topic(feed, Stream.TICKER), len(expected_tickers))
    tickers = [decode_record(m.value(), Ticker) for m in ticker_messages]
    assert _per_product([(t.product, t.bid, t.ask) for t in tickers]) == _per_product(
        expected_tickers
    )
    # The spot ticker has no exchange time: the Kafka timestamp is the receive time.
    assert all(t.exchange_time_ms is None for t in tickers)
    assert all(
        m.timestamp()[1] == t.received_time_ns // 1_000_000
        for m, t in zip(ticker_messages, tickers, strict=True)
    )


def test_a_rejected_product_is_reported_and_the_others_keep_flowing(
    kafka: Kafka, feed: FeedId
) -> None:
    session = generate_session("futures", ["PF_XBTUSD"], count_per_product_channel=40, seed=1)
    products = ["PF_XBTUSD", "PF_NOTAREALTHING"]
    with ReplayServer(session, keep_times=True) as server:
        worker = IngestWorker(_settings(feed, kafka, "futures", products, server.url("futures")))
        with running(worker):
            wait_until(
                lambda: (
                    worker.metrics.produced["Ticker"] == 40
                    and worker.metrics.produced["QualityEvent"] == 2
                ),
                30,
                f"40 tickers and 2 rejections; have {worker.metrics.produced}",
            )
    events = [
        decode_record(m.value(), QualityEvent)
        for m in read_topic(kafka.bootstrap, topic(feed, Stream.QUALITY), 2)
    ]
    assert sorted((e.kind, e.product, e.attributes["channel"]) for e in events) == [
        (QualityKind.SUBSCRIPTION_REJECTED, "PF_NOTAREALTHING", "ticker"),
        (QualityKind.SUBSCRIPTION_REJECTED, "PF_NOTAREALTHING", "trade"),
    ]
    assert all("PF_NOTAREALTHING" in e.detail for e in events)
    assert worker.protocol.subscriptions.rejected.keys() == {
        ("ticker", "PF_NOTAREALTHING"),
        ("trade", "PF_NOTAREALTHING"),
    }
    tickers = read_topic(kafka.bootstrap, topic(feed, Stream.TICKER), 40)
    assert {m.key() for m in tickers} == {b"PF_XBTUSD"}


def test_sigterm_stops_the_worker_with_everything_flushed(kafka: Kafka, feed: FeedId) -> None:
    session = generate_session("futures", ["PF_XBTUSD"], count_per_product_channel=2000, seed=5)
    with ReplayServer(session, keep_times=True, pace=50.0) as server:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "krakenfeed",
                "ingest",
                "--namespace",
                feed.namespace,
                "--feed",
                feed.name,
                "--api",
                "futures",
                "--products",
                "PF_XBTUSD",
                "--url",
                server.url("futures"),
                "--max-clock-skew-ms",
                "0",
            ],
            env={**os.environ, "KRAKENFEED_BROKER": kafka.bootstrap},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            # Mid-stream: some records are on Kafka, many more are still to come.
            read_topic(kafka.bootstrap, topic(feed, Stream.TICKER), 1, exact=False)
            process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            code = process.wait(timeout=10)
            stopped_in = time.monotonic() - started
        finally:
            process.kill()
            output, _ = process.communicate()
    assert code == 0, output
    assert stopped_in < 5.0, f"took {stopped_in:.1f}s to stop"
    summary = re.search(r"produced (\{.*?\})", output)
    assert summary, output
    produced = msgspec.json.decode(summary.group(1).replace("'", '"'))
    assert 0 < produced["Ticker"] < 2000, "the worker should have stopped mid-stream"
    read_topic(kafka.bootstrap, topic(feed, Stream.TICKER), produced["Ticker"])
    read_topic(kafka.bootstrap, topic(feed, Stream.TRADE), produced["Trade"])


# Each invalid frame, spelled as Kraken's futures ticker would be, with the reason code
# the worker must give it on the dlq topic.
_INVALID_FRAMES = {
    DeadLetterReason.MALFORMED_JSON: '{"feed":"ticker","product_id":"PF_XBTUSD","bid":644',
    DeadLetterReason.CROSSED_QUOTE: golden.FUTURES_TICKER.replace('"bid":64401.0', '"bid":64500.0'),
    DeadLetterReason.SCHEMA_MISMATCH: golden.FUTURES_TICKER.replace('"ask":64402.0', '"ask":"x"'),
    DeadLetterReason.NON_POSITIVE: golden.FUTURES_TICKER.replace(
        '"bid_size":0.1239', '"bid_size":-1'
    ),
    DeadLetterReason.UNKNOWN_PRODUCT: golden.FUTURES_TICKER.replace("PF_XBTUSD", "PF_ETHUSD"),
}


def test_invalid_frames_reach_the_dlq_with_their_reason_and_valid_ones_keep_flowing(
    kafka: Kafka, feed: FeedId, tmp_path: Path
) -> None:
    clean = generate_session("futures", ["PF_XBTUSD"], ["ticker"], count_per_product_channel=20)
    frames = list(clean.frames["futures"])
    for position, text in enumerate(_INVALID_FRAMES.values()):
        valid = frames[position * 3]
        frames.insert(position * 3 + 1, replace(valid, payload={}, verbatim=text))
    session = Session(start_ns=clean.start_ns, frames={"futures": frames}, initial=clean.initial)
    capture = tmp_path / "frames.jsonl.gz"
    with ReplayServer(session, keep_times=True) as server:
        settings = replace(
            _settings(feed, kafka, "futures", ["PF_XBTUSD"], server.url("futures")),
            channels=("ticker",),
            capture=capture,
        )
        worker = IngestWorker(settings)
        with running(worker):
            wait_until(
                lambda: (
                    worker.metrics.produced["Ticker"] == 20
                    and worker.metrics.produced["DeadLetter"] == len(_INVALID_FRAMES)
                ),
                30,
                "20 tickers and the dead letters",
            )
    letters = [
        decode_record(m.value(), DeadLetter)
        for m in read_topic(kafka.bootstrap, topic(feed, Stream.DLQ), len(_INVALID_FRAMES))
    ]
    assert {letter.reason: letter.raw for letter in letters} == _INVALID_FRAMES
    assert all(letter.source == "futures" and letter.detail for letter in letters)
    assert all(letter.received_time_ns > 0 for letter in letters)
    read_topic(kafka.bootstrap, topic(feed, Stream.TICKER), 20)
    # --capture kept every frame the worker received, invalid ones included, verbatim.
    captured = [frame.frame for frame in read_capture(capture)]
    assert set(_INVALID_FRAMES.values()) <= set(captured)
    assert captured[0] == golden.FUTURES_INFO
