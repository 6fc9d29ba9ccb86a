"""The PostgreSQL sink on a real PostgreSQL: records handed over as their contract
JSON land exactly as decoded records do, and writes behind the stream never let a
checkpoint pass an unwritten row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from krakenfeed.contracts import FeedId, Ticker, Trade, encode_record
from krakenfeed.kafka import SinkBackpressureError
from krakenfeed.store import EncodedRecord, PostgresSink

DAY_MS = 1_786_000_000_000
"""2026-08-06, inside the test database's retention (see conftest)."""

TICKERS = [
    Ticker(
        source="futures", product="PF_XBTUSD", exchange_time_ms=DAY_MS + 1,
        received_time_ns=(DAY_MS + 2) * 1_000_000 + 17, bid=64401.1, ask=64402.3,
        bid_size=0.1 + 0.2, ask_size=1e-300, last=64401.5, volume=1.7976931348623157e308,
        mark_price=64401.7, index_price=64400.9, premium=-0.000123, funding_rate=1e-5,
        relative_funding_rate=-2.5e-9, open_interest=123456.789,
    ),
    Ticker(
        source="spot", product="BTC/USD", exchange_time_ms=None,
        received_time_ns=(DAY_MS + 5) * 1_000_000 + 999_999, bid=64397.4, ask=64400.6,
        bid_size=0.5754, ask_size=0.1986, last=None, volume=None,
    ),
]  # fmt: skip
TRADES = [
    Trade(
        source="futures", product="PF_XBTUSD", exchange_time_ms=DAY_MS + 7,
        received_time_ns=(DAY_MS + 8) * 1_000_000, side="buy", price=64423.0,
        qty=0.007899999999999999, seq=45_000, uid='a\\b\t"c"\nd ü €',
    ),
    Trade(
        source="spot", product="BTC/USD", exchange_time_ms=DAY_MS + 86_400_000,
        received_time_ns=(DAY_MS + 86_400_001) * 1_000_000, side="sell", price=64000.5,
        qty=2.0, trade_id=99,
    ),
]  # fmt: skip


def encoded(record: Ticker | Trade) -> EncodedRecord:
    return EncodedRecord.of(record, encode_record(record))


def rows(url: str, table: str, feed: FeedId) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        result = conn.execute(
            sql.SQL("SELECT * FROM {} WHERE feed = %s ORDER BY event_time_ms").format(
                sql.Identifier(table)
            ),
            (str(feed),),
        ).fetchall()
    # Everything but the feed, which differs on purpose.
    return [row[1:] for row in result]


@pytest.fixture
def make_sink(postgres_url: str) -> Iterator[Any]:
    sinks: list[PostgresSink] = []

    def make(**kwargs: Any) -> tuple[FeedId, PostgresSink]:
        feed = FeedId("sink", uuid.uuid4().hex[:10])
        sink = PostgresSink(feed, postgres_url, retention_days=36_500, **kwargs)
        sink.setup()
        sinks.append(sink)
        return feed, sink

    yield make
    for sink in sinks:
        sink.close()


def add_all(sink: PostgresSink, values: list[Any], partition: int = 0) -> None:
    for offset, value in enumerate(values):
        sink.add(value, None, 0, [], "topic", partition, offset)


def test_records_sent_as_json_land_exactly_as_decoded_records_do(
    make_sink: Any, postgres_url: str
) -> None:
    as_json_feed, as_json = make_sink()
    as_rows_feed, as_rows = make_sink()
    add_all(as_json, [[encoded(record)] for record in [*TICKERS, *TRADES]])
    add_all(as_rows, [[record] for record in [*TICKERS, *TRADES]])
    as_json.flush()
    as_rows.flush()

    for table in ("ticker", "trades"):
        written = rows(postgres_url, table, as_json_feed)
        assert len(written) == 2
        assert written == rows(postgres_url, table, as_rows_feed)
    assert as_json.written == as_rows.written == {"Ticker": 2, "Trade": 2}
    # The awkward values survived the JSON round trip.
    with psycopg.connect(postgres_url) as conn:
        uid, bid_size, ask_size = conn.execute(
            "SELECT t.uid, k.bid_size, k.ask_size FROM trades t, ticker k"
            " WHERE t.feed = %(feed)s AND t.seq IS NOT NULL"
            " AND k.feed = %(feed)s AND k.source = 'futures'",
            {"feed": str(as_json_feed)},
        ).fetchone() or (None, None, None)
    assert uid == 'a\\b\t"c"\nd ü €'
    assert (bid_size, ask_size) == (0.1 + 0.2, 1e-300)


def test_json_spread_over_lines_and_tabs_is_written_as_its_record(
    make_sink: Any, postgres_url: str
) -> None:
    feed, sink = make_sink()
    pretty = json.dumps(json.loads(encode_record(TRADES[0])), indent="\t").encode()
    assert b"\n" in pretty and b"\t" in pretty
    add_all(sink, [[EncodedRecord.of(TRADES[0], pretty)]])
    sink.flush()
    expected_feed, expected = make_sink()
    add_all(expected, [[TRADES[0]]])
    expected.flush()
    assert rows(postgres_url, "trades", feed) == rows(postgres_url, "trades", expected_feed)


def test_rows_are_written_ahead_of_the_checkpoint_and_each_once(
    make_sink: Any, postgres_url: str
) -> None:
    feed, sink = make_sink(write_ahead_rows=2, write_ahead_s=3600)
    add_all(sink, [[encoded(t)] for t in TRADES])
    # The partition's batch reached two records and went to the writer thread.
    sink._wait_for_writes()
    assert len(rows(postgres_url, "trades", feed)) == 2
    add_all(sink, [[encoded(t)] for t in TICKERS[:1]])
    assert len(rows(postgres_url, "ticker", feed)) == 0
    sink.flush()
    assert len(rows(postgres_url, "ticker", feed)) == 1
    assert sink.written == {"Trade": 2, "Ticker": 1}
    assert sink.rows_inserted == 3


def test_a_quiet_partitions_rows_are_written_once_they_are_old_enough(
    make_sink: Any, postgres_url: str
) -> None:
    feed, sink = make_sink(write_ahead_rows=1_000, write_ahead_s=0.0)
    add_all(sink, [[encoded(TICKERS[0])]])
    sink._wait_for_writes()
    assert len(rows(postgres_url, "ticker", feed)) == 1
    sink.flush()
    assert sink.written == {"Ticker": 1}


def test_a_write_that_failed_behind_the_stream_fails_the_checkpoint_then_recovers(
    make_sink: Any, postgres_url: str
) -> None:
    feed, sink = make_sink(write_ahead_rows=1)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        backend = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'krakenfeed'"
            " AND datname = current_database() AND pid <> pg_backend_pid()"
        )
        pids = [pid for (pid,) in backend.fetchall()]
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert pids, "the sink's session was not found"
    add_all(sink, [[encoded(t)] for t in TRADES])
    with pytest.raises(SinkBackpressureError):
        sink.flush()
    assert rows(postgres_url, "trades", feed) == []
    assert sink.written == {}

    # quixstreams replays the checkpoint's records; the sink reconnects and writes them.
    add_all(sink, [[encoded(t)] for t in TRADES])
    sink.flush()
    assert len(rows(postgres_url, "trades", feed)) == 2
    assert sink.written == {"Trade": 2}
