"""The pure protocol layer: Kraken frames in, contract records, dead letters and
quality events out. The golden frames come from the protocol sheet."""

from __future__ import annotations

import msgspec
import pytest

from krakenfeed.contracts import (
    DeadLetter,
    DeadLetterReason,
    QualityEvent,
    QualityKind,
    Ticker,
    Trade,
)
from krakenfeed.ingest.protocol import FuturesProtocol, SpotProtocol, ValidationSettings
from tests import golden_frames as golden

NOW_NS = 1786046338050 * 1_000_000  # 45 ms after the golden futures ticker's exchange time


def futures(*products: str, skew_ms: int = 5_000) -> FuturesProtocol:
    protocol = FuturesProtocol(
        products or ("PF_XBTUSD", "PI_XBTUSD"), ("ticker", "trade"), ValidationSettings(skew_ms)
    )
    protocol.subscribe_requests()
    return protocol


def spot(*products: str, skew_ms: int = 0) -> SpotProtocol:
    protocol = SpotProtocol(
        products or ("BTC/USD",), ("trade", "ticker"), ValidationSettings(skew_ms)
    )
    protocol.subscribe_requests()
    return protocol


def test_futures_requests_have_the_documented_form() -> None:
    protocol = FuturesProtocol(["PI_XBTUSD"], ["ticker"])
    requests = [msgspec.json.decode(r) for r in protocol.subscribe_requests()]
    assert requests == [
        msgspec.json.decode(golden.FUTURES_SUBSCRIBE_TICKER),
        msgspec.json.decode(golden.FUTURES_SUBSCRIBE_HEARTBEAT),
    ]


def test_spot_requests_send_snapshot_explicitly_and_bbo_for_the_ticker() -> None:
    protocol = SpotProtocol(["BTC/USD"], ["trade", "ticker"])
    requests = [msgspec.json.decode(r) for r in protocol.subscribe_requests()]
    assert requests == [
        msgspec.json.decode(golden.SPOT_SUBSCRIBE_TRADE),
        msgspec.json.decode(golden.SPOT_SUBSCRIBE_TICKER),
    ]


def test_the_golden_futures_ticker_becomes_this_exact_record() -> None:
    assert futures().handle(golden.FUTURES_TICKER.encode(), NOW_NS) == [
        Ticker(
            source="futures",
            product="PF_XBTUSD",
            exchange_time_ms=1786046338005,
            received_time_ns=NOW_NS,
            bid=64401.0,
            ask=64402.0,
            bid_size=0.1239,
            ask_size=0.1179,
            last=64403.0,
            volume=3669.9134,
            mark_price=64399.68035588646,
            index_price=64401.07,
            premium=0.0,
            funding_rate=0.1767923925826881,
            relative_funding_rate=2.747066666667e-6,
            open_interest=2157.6281,
        )
    ]


def test_the_golden_futures_trade_becomes_this_exact_record() -> None:
    assert futures().handle(golden.FUTURES_TRADE.encode(), NOW_NS) == [
        Trade(
            source="futures",
            product="PF_XBTUSD",
            exchange_time_ms=1786046338116,
            received_time_ns=NOW_NS,
            side="sell",
            price=64401.0,
            qty=0.0046,
            seq=45847,
            uid="…",
        )
    ]


def test_a_futures_trade_snapshot_is_emitted_oldest_first_and_never_twice() -> None:
    protocol = futures()
    first = protocol.handle(golden.FUTURES_TRADE_SNAPSHOT.encode(), NOW_NS)
    assert [(t.seq, t.uid) for t in first if isinstance(t, Trade)] == [(100, "a"), (101, "b")]
    # Kraken re-sends the snapshot on every resubscribe: nothing new, nothing emitted.
    assert protocol.handle(golden.FUTURES_TRADE_SNAPSHOT.encode(), NOW_NS) == []
    assert protocol.metrics.duplicates == 2


def test_a_futures_sequence_gap_is_a_quality_event_and_the_trade_still_flows() -> None:
    protocol = futures()
    protocol.handle(golden.FUTURES_TRADE_SNAPSHOT.encode(), NOW_NS)
    later = golden.FUTURES_TRADE.replace("PF_XBTUSD", "PI_XBTUSD").replace("45847", "104")
    gap, trade = protocol.handle(later.encode(), NOW_NS)
    assert isinstance(gap, QualityEvent)
    assert gap.kind is QualityKind.SEQUENCE_GAP
    assert gap.product == "PI_XBTUSD"
    assert gap.attributes == {"previous_seq": 101, "seq": 104, "missing": 2}
    assert isinstance(trade, Trade)
    assert trade.seq == 104


def test_futures_acks_arrive_one_per_product_and_settle_the_subscription() -> None:
    protocol = futures("PI_XBTUSD")
    assert not protocol.subscriptions.settled
    for frame in (golden.FUTURES_INFO, golden.FUTURES_SUBSCRIBED_TICKER):
        assert protocol.handle(frame.encode(), NOW_NS) == []
    trade_ack = golden.FUTURES_SUBSCRIBED_TICKER.replace('"ticker"', '"trade"')
    protocol.handle(trade_ack.encode(), NOW_NS)
    protocol.handle(golden.FUTURES_SUBSCRIBED_HEARTBEAT.encode(), NOW_NS)
    assert protocol.subscriptions.settled
    assert protocol.subscriptions.active == {("ticker", "PI_XBTUSD"), ("trade", "PI_XBTUSD")}
    assert protocol.metrics.frames["event:info"] == 1
    assert protocol.handle(golden.FUTURES_HEARTBEAT.encode(), NOW_NS) == []
    assert protocol.metrics.frames["heartbeat"] == 1


def test_a_rejected_futures_product_is_reported_and_the_others_keep_flowing() -> None:
    protocol = futures("PF_XBTUSD", "PF_NOTAREALTHING")
    # One subscribe request per feed, so one alert per feed, in request order.
    alert = golden.FUTURES_ALERT_INVALID_PRODUCT.encode()
    rejected = [*protocol.handle(alert, NOW_NS), *protocol.handle(alert, NOW_NS)]
    assert [(e.kind, e.product, e.attributes["channel"]) for e in rejected] == [  # type: ignore[union-attr]
        (QualityKind.SUBSCRIPTION_REJECTED, "PF_NOTAREALTHING", "ticker"),
        (QualityKind.SUBSCRIPTION_REJECTED, "PF_NOTAREALTHING", "trade"),
    ]
    assert set(protocol.subscriptions.rejected) == {
        ("ticker", "PF_NOTAREALTHING"),
        ("trade", "PF_NOTAREALTHING"),
    }
    assert protocol.handle(alert, NOW_NS) == [], "a further alert adds nothing new"
    (ticker,) = protocol.handle(golden.FUTURES_TICKER.encode(), NOW_NS)
    assert isinstance(ticker, Ticker)


@pytest.mark.parametrize(
    "frame",
    [
        golden.FUTURES_ERROR_INVALID_FEED,
        golden.FUTURES_ERROR_INVALID_PRODUCT,
        golden.FUTURES_ERROR_JSON,
    ],
)
def test_futures_errors_that_name_no_product_are_protocol_errors(frame: str) -> None:
    (event,) = futures().handle(frame.encode(), NOW_NS)
    assert isinstance(event, QualityEvent)
    assert event.kind is QualityKind.PROTOCOL_ERROR
    assert event.detail == msgspec.json.decode(frame)["message"]


def test_a_futures_feed_we_do_not_handle_is_dead_lettered_not_dropped() -> None:
    (letter,) = futures().handle(golden.FUTURES_BOOK.encode(), NOW_NS)
    assert isinstance(letter, DeadLetter)
    assert letter.reason is DeadLetterReason.UNKNOWN_FRAME
    assert letter.raw == golden.FUTURES_BOOK


def test_the_spot_status_frame_decodes_its_uint64_connection_id() -> None:
    protocol = spot()
    assert protocol.handle(golden.SPOT_STATUS.encode(), NOW_NS) == []
    maintenance = golden.SPOT_STATUS.replace('"online"', '"maintenance"')
    (event,) = protocol.handle(maintenance.encode(), NOW_NS)
    assert isinstance(event, QualityEvent)
    assert event.kind is QualityKind.EXCHANGE_STATUS
    assert event.attributes == {"system": "maintenance"}


def test_the_golden_spot_trade_and_ticker_become_these_records() -> None:
    protocol = spot()
    assert protocol.handle(golden.SPOT_TRADE.encode(), NOW_NS) == [
        Trade(
            source="spot",
            product="BTC/USD",
            exchange_time_ms=1722114960512,
            received_time_ns=NOW_NS,
            side="buy",
            price=68580.0,
            qty=0.14225864,
            trade_id=72166031,
        )
    ]
    assert protocol.handle(golden.SPOT_TICKER.encode(), NOW_NS) == [
        Ticker(
            source="spot",
            product="BTC/USD",
            exchange_time_ms=None,
            received_time_ns=NOW_NS,
            bid=68580.0,
            ask=68580.1,
            bid_size=5.494e-6,
            ask_size=1.2,
            last=68580.0,
            volume=1520.3,
        )
    ]


def test_spot_acks_errors_pongs_and_heartbeats() -> None:
    protocol = spot("BTC/USD")
    assert protocol.handle(golden.SPOT_SUBSCRIBED_TRADE.encode(), NOW_NS) == []
    assert protocol.subscriptions.active == {("trade", "BTC/USD")}
    (refused,) = protocol.handle(golden.SPOT_ERROR_CHANNEL.encode(), NOW_NS)
    assert isinstance(refused, QualityEvent)
    assert (refused.kind, refused.product) == (QualityKind.SUBSCRIPTION_REJECTED, "BTC/USD")
    assert refused.attributes == {"channel": "ticker"}
    assert protocol.subscriptions.settled
    assert protocol.handle(golden.SPOT_PONG.encode(), NOW_NS) == []
    assert protocol.handle(golden.SPOT_HEARTBEAT.encode(), NOW_NS) == []
    (limited,) = protocol.handle(golden.SPOT_RATE_LIMIT.encode(), NOW_NS)
    assert isinstance(limited, QualityEvent)
    assert (limited.kind, limited.detail) == (QualityKind.PROTOCOL_ERROR, "Exceeded msg rate")


def test_an_unsupported_spot_pair_is_rejected_while_the_other_symbol_flows() -> None:
    protocol = spot("BTC/USD", "BTC/XYZ")
    (refused,) = protocol.handle(golden.SPOT_ERROR_PAIR.encode(), NOW_NS)
    assert isinstance(refused, QualityEvent)
    assert (refused.kind, refused.product) == (QualityKind.SUBSCRIPTION_REJECTED, "BTC/XYZ")
    assert refused.attributes == {"channel": "trade"}
    (trade,) = protocol.handle(golden.SPOT_TRADE.encode(), NOW_NS)
    assert isinstance(trade, Trade)


def test_a_spot_trade_snapshot_repeated_on_resubscribe_emits_nothing_new() -> None:
    protocol = spot()
    snapshot = golden.SPOT_TRADE.replace('"update"', '"snapshot"')
    assert len(protocol.handle(snapshot.encode(), NOW_NS)) == 1
    assert protocol.handle(snapshot.encode(), NOW_NS) == []


INVALID = [
    ("malformed JSON", '{"feed":"ticker","product_id":"PF_XB', DeadLetterReason.MALFORMED_JSON),
    (
        "crossed quote",
        golden.FUTURES_TICKER.replace('"bid":64401.0', '"bid":64403.0'),
        DeadLetterReason.CROSSED_QUOTE,
    ),
    (
        "wrong type",
        golden.FUTURES_TICKER.replace('"bid":64401.0', '"bid":"64401.0"'),
        DeadLetterReason.SCHEMA_MISMATCH,
    ),
    (
        "negative size",
        golden.FUTURES_TRADE.replace('"qty":0.0046', '"qty":-0.0046'),
        DeadLetterReason.NON_POSITIVE,
    ),
    (
        "unknown product",
        golden.FUTURES_TICKER.replace("PF_XBTUSD", "PF_ETHUSD"),
        DeadLetterReason.UNKNOWN_PRODUCT,
    ),
    (
        "clock skew",
        golden.FUTURES_TICKER.replace('"time":1786046338005', '"time":1786046298005'),
        DeadLetterReason.CLOCK_SKEW,
    ),
    (
        "missing field",
        golden.FUTURES_TRADE.replace('"price":64401.0,', ""),
        DeadLetterReason.SCHEMA_MISMATCH,
    ),
    ("not JSON at all", "\x00\xffgarbage", DeadLetterReason.MALFORMED_JSON),
]


@pytest.mark.parametrize(("case", "frame", "reason"), INVALID, ids=[c[0] for c in INVALID])
def test_an_invalid_futures_frame_becomes_a_dead_letter_with_its_reason(
    case: str, frame: str, reason: DeadLetterReason
) -> None:
    protocol = futures()
    raw = frame.encode("utf-8", "surrogateescape")
    (letter,) = protocol.handle(raw, NOW_NS)
    assert isinstance(letter, DeadLetter), case
    assert letter.reason is reason
    assert letter.raw == raw.decode("utf-8", "replace")
    assert letter.detail
    assert letter.source == "futures"
    assert letter.received_time_ns == NOW_NS
    assert protocol.metrics.invalid == {reason: 1}


def test_one_bad_item_in_a_spot_frame_costs_only_that_item() -> None:
    frame = (
        '{"channel":"ticker","type":"update","data":['
        '{"symbol":"BTC/USD","bid":2.0,"bid_qty":1,"ask":1.0,"ask_qty":1},'
        '{"symbol":"BTC/USD","bid":1.0,"bid_qty":1,"ask":2.0,"ask_qty":1}]}'
    )
    crossed, good = spot().handle(frame.encode(), NOW_NS)
    assert isinstance(crossed, DeadLetter)
    assert crossed.reason is DeadLetterReason.CROSSED_QUOTE
    assert crossed.product == "BTC/USD"
    assert isinstance(good, Ticker)
    assert (good.bid, good.ask) == (1.0, 2.0)


def test_snapshots_are_history_and_exempt_from_the_clock_skew_check() -> None:
    protocol = futures(skew_ms=1)
    trades = protocol.handle(golden.FUTURES_TRADE_SNAPSHOT.encode(), NOW_NS)
    assert [type(t) for t in trades] == [Trade, Trade]
