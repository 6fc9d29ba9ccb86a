"""The thin end-to-end slice: contract records → real Kafka → real PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from krakenfeed import synthetic
from krakenfeed.contracts import (
    FeedId,
    Stream,
    Ticker,
    Trade,
    decode_record,
    record_timestamp_ms,
    topic,
)
from krakenfeed.embedded import EmbeddedKafka, run_until
from krakenfeed.kafka import contract_topics, make_application, produce_records
from krakenfeed.pipeline import build_detector_app
from krakenfeed.store import migrate
from tests.conftest import RETENTION_DAYS, Kafka
from tests.kafka_reader import read_topic

TICKER_COLUMNS = (
    "feed, product, source, exchange_time_ms, received_time_ns, bid, ask, bid_size, ask_size,"
    " last, volume, mark_price, index_price, premium, funding_rate, relative_funding_rate,"
    " open_interest"
)
TRADE_COLUMNS = (
    "feed, product, source, exchange_time_ms, received_time_ns, side, price, qty,"
    " trade_id, seq, uid"
)


def _expected_ticker_row(feed: FeedId, t: Ticker) -> tuple[Any, ...]:
    return (
        str(feed), t.product, t.source, t.exchange_time_ms, t.received_time_ns, t.bid, t.ask,
        t.bid_size, t.ask_size, t.last, t.volume, t.mark_price, t.index_price, t.premium,
        t.funding_rate, t.relative_funding_rate, t.open_interest,
    )  # fmt: skip


def _expected_trade_row(feed: FeedId, t: Trade) -> tuple[Any, ...]:
    return (
        str(feed), t.product, t.source, t.exchange_time_ms, t.received_time_ns, t.side,
        t.price, t.qty, t.trade_id, t.seq, t.uid,
    )  # fmt: skip


def _rows(
    url: str, table: str, columns: str, order: str = "product, received_time_ns"
) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT {columns} FROM {table} ORDER BY {order}").fetchall()


def _publish(kafka: Kafka, feed: FeedId, tickers: list[Ticker], trades: list[Trade]) -> None:
    app = make_application(kafka.bootstrap)
    declared = contract_topics(app, kafka.bootstrap, feed, (Stream.TICKER, Stream.TRADE))
    with app.get_producer() as producer:
        produce_records(producer, declared[Stream.TICKER].name, tickers)
        produce_records(producer, declared[Stream.TRADE].name, trades)


def test_records_reach_kafka_with_the_contract_key_timestamp_and_order(
    kafka: Kafka, feed: FeedId
) -> None:
    tickers = [
        *synthetic.tickers("PF_XBTUSD", 50),
        *synthetic.tickers("BTC/USD", 50, source="spot"),
    ]
    _publish(kafka, feed, tickers, [])
    messages = read_topic(kafka.bootstrap, topic(feed, Stream.TICKER), len(tickers))
    assert [decode_record(m.value(), Ticker) for m in messages] == tickers
    assert [m.key() for m in messages] == [t.product.encode() for t in tickers]
    assert [m.timestamp()[1] for m in messages] == [record_timestamp_ms(t) for t in tickers]
    # The spot ticker has no exchange time: its Kafka timestamp is the receive time.
    assert messages[-1].timestamp()[1] == tickers[-1].received_time_ns // 1_000_000


def test_consumed_records_become_exactly_one_row_each_even_when_consumed_twice(
    kafka: Kafka, postgres_url: str, feed: FeedId, tmp_path: Path
) -> None:
    tickers = [
        *synthetic.tickers("PF_XBTUSD", 300),
        *synthetic.tickers("BTC/USD", 300, source="spot"),
    ]
    trades = [
        *synthetic.trades("PF_XBTUSD", 300),
        *synthetic.trades("BTC/USD", 300, source="spot"),
    ]
    _publish(kafka, feed, tickers, trades)
    total = len(tickers) + len(trades)
    expected_tickers = sorted(
        (_expected_ticker_row(feed, t) for t in tickers), key=lambda r: (r[1], r[4])
    )
    expected_trades = sorted(
        (_expected_trade_row(feed, t) for t in trades), key=lambda r: (r[1], r[4])
    )

    inserted = []
    anomalies = []
    for group in ("first-pass", "second-pass"):
        app, sink = build_detector_app(
            feed,
            kafka.bootstrap,
            postgres_url,
            group=f"{feed.name}-{group}",
            state_dir=tmp_path / group,
            retention_days=RETENTION_DAYS,
        )
        try:
            run_until(
                app,
                lambda sink=sink: sink.written["Ticker"] + sink.written["Trade"] == total,  # type: ignore[misc]
                60,
                f"{total} market records written",
            )
        finally:
            sink.close()
        inserted.append((sink.rows_inserted, sink.written.total()))
        assert _rows(postgres_url, "ticker", TICKER_COLUMNS) == expected_tickers
        assert _rows(postgres_url, "trades", TRADE_COLUMNS) == expected_trades
        anomalies.append(
            _rows(
                postgres_url,
                "anomalies",
                "product, detector, event_time_ms, value, score",
                order="1, 2, 3",
            )
        )

    (first_new, first_written), (second_new, second_written) = inserted
    assert first_new == first_written >= total, "the first pass found every row new"
    assert second_written == first_written, "the second pass re-read every record"
    assert second_new == 0, "and inserted nothing: every write is an upsert"
    assert anomalies[0] == anomalies[1], "anomalies are deterministic given the input"


def test_migrations_apply_once(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        first = migrate(conn)
        second = migrate(conn)
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
    assert first == ["0001_market_data.sql"]
    assert second == []
    assert versions == [(1,)]


@pytest.mark.managed_broker
def test_records_produced_while_the_broker_is_frozen_arrive_once_after_it_thaws(
    kafka: Kafka, managed_kafka: EmbeddedKafka, feed: FeedId
) -> None:
    app = make_application(kafka.bootstrap)
    trade_topic = contract_topics(app, kafka.bootstrap, feed, (Stream.TRADE,))[Stream.TRADE]
    trades = list(synthetic.trades("PF_XBTUSD", 200))
    with app.get_producer() as producer:
        produce_records(producer, trade_topic.name, trades[:100])
        producer.flush()
        managed_kafka.pause()
        try:
            produce_records(producer, trade_topic.name, trades[100:])
            assert producer.flush(timeout=1.0) > 0, "records were delivered to a frozen broker"
        finally:
            managed_kafka.resume()
        assert producer.flush(timeout=30.0) == 0
    messages = read_topic(kafka.bootstrap, trade_topic.name, len(trades))
    assert [decode_record(m.value(), Trade).seq for m in messages] == [t.seq for t in trades]
