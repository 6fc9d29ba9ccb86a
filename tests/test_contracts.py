"""The contracts module: names, records and the spec model, as other code relies on them."""

from __future__ import annotations

import msgspec
import pytest

from krakenfeed.contracts import (
    DeadLetter,
    DeadLetterReason,
    FeedId,
    QualityEvent,
    QualityKind,
    SpecError,
    Stream,
    Ticker,
    Trade,
    consumer_group,
    decode_record,
    encode_record,
    env_var,
    parse_spec,
    quality_event_id,
    record_key,
    record_timestamp_ms,
    ticker_time_key,
    topic,
    trade_key,
)

SPOT_TICKER = Ticker(
    source="spot",
    product="BTC/USD",
    exchange_time_ms=None,
    received_time_ns=1_786_046_338_123_456_789,
    bid=64401.0,
    ask=64402.0,
    bid_size=0.1239,
    ask_size=5.494e-6,
    last=64403.0,
    volume=3669.9134,
)
FUTURES_TRADE = Trade(
    source="futures",
    product="PF_XBTUSD",
    exchange_time_ms=1786046338116,
    received_time_ns=1_786_046_338_150_000_000,
    side="sell",
    price=64401.0,
    qty=0.0046,
    seq=45847,
    uid="c7a7f4e2",
)


def test_topics_and_group_follow_the_naming_scheme() -> None:
    feed = FeedId("markets", "btc")
    assert [topic(feed, stream) for stream in Stream] == [
        "krakenfeed.markets.btc.ticker",
        "krakenfeed.markets.btc.trade",
        "krakenfeed.markets.btc.dlq",
        "krakenfeed.markets.btc.quality",
        "krakenfeed.markets.btc.anomalies",
    ]
    assert consumer_group(feed) == "krakenfeed.markets.btc.detector"


def test_a_bare_feed_name_belongs_to_the_local_namespace() -> None:
    assert FeedId.parse("demo") == FeedId("local", "demo")
    assert FeedId.parse("prod/btc") == FeedId("prod", "btc")
    assert str(FeedId("prod", "btc")) == "prod/btc"


@pytest.mark.parametrize(
    ("namespace", "name", "field"),
    [("Prod", "btc", "namespace"), ("prod", "BTC", "name"), ("prod", "a_b", "name")],
)
def test_feed_ids_that_cannot_name_a_topic_are_refused(
    namespace: str, name: str, field: str
) -> None:
    with pytest.raises(ValueError, match=f"feed {field}"):
        FeedId(namespace, name)


def test_every_flag_maps_to_a_krakenfeed_env_var() -> None:
    assert env_var("--broker") == "KRAKENFEED_BROKER"
    assert env_var("--postgres-url") == "KRAKENFEED_POSTGRES_URL"
    with pytest.raises(ValueError, match="not a long flag"):
        env_var("--")


def test_records_round_trip_through_json_exactly() -> None:
    for record in (SPOT_TICKER, FUTURES_TRADE):
        assert decode_record(encode_record(record), type(record)) == record
    payload = msgspec.json.decode(encode_record(SPOT_TICKER))
    assert payload["exchange_time_ms"] is None
    assert payload["mark_price"] is None
    assert payload["ask_size"] == 5.494e-6


def test_kafka_key_is_the_product_and_timestamp_prefers_exchange_time() -> None:
    assert record_key(SPOT_TICKER) == b"BTC/USD"
    assert record_timestamp_ms(SPOT_TICKER) == 1_786_046_338_123
    assert record_key(FUTURES_TRADE) == b"PF_XBTUSD"
    assert record_timestamp_ms(FUTURES_TRADE) == 1786046338116


def test_schema_drift_is_a_validation_error_that_names_the_field() -> None:
    drifted = encode_record(FUTURES_TRADE).replace(b'"side":"sell"', b'"side":"short"')
    with pytest.raises(msgspec.ValidationError, match=r"\$\.side"):
        decode_record(drifted, Trade)
    with pytest.raises(msgspec.ValidationError, match="unknown field `colour`"):
        decode_record(encode_record(FUTURES_TRADE)[:-1] + b',"colour":1}', Trade)


def test_natural_keys_pick_exchange_identity_over_receive_time() -> None:
    assert ticker_time_key(SPOT_TICKER) == SPOT_TICKER.received_time_ns
    futures_ticker = msgspec.structs.replace(SPOT_TICKER, exchange_time_ms=1786046338005)
    assert ticker_time_key(futures_ticker) == 1786046338005
    assert trade_key(FUTURES_TRADE) == 45847
    spot_trade = msgspec.structs.replace(FUTURES_TRADE, seq=None, uid=None, trade_id=72166031)
    assert trade_key(spot_trade) == 72166031
    with pytest.raises(ValueError, match="neither trade_id nor seq"):
        trade_key(msgspec.structs.replace(FUTURES_TRADE, seq=None))


def test_quality_event_ids_are_deterministic_and_distinguish_events() -> None:
    gap = QualityEvent(
        source="futures",
        kind=QualityKind.SEQUENCE_GAP,
        received_time_ns=1,
        detail="seq 10 → 13",
        product="PF_XBTUSD",
        attributes={"missing": 2},
    )
    same = decode_record(encode_record(gap), QualityEvent)
    assert quality_event_id(gap) == quality_event_id(same)
    assert len(quality_event_id(gap)) == 32
    other = msgspec.structs.replace(gap, attributes={"missing": 3})
    assert quality_event_id(gap) != quality_event_id(other)
    # Without exchange time, the receive time tells two observations apart.
    later = msgspec.structs.replace(gap, received_time_ns=2)
    assert quality_event_id(gap) != quality_event_id(later)


def test_an_observation_stamped_with_exchange_time_has_one_id_whenever_received() -> None:
    """A replayed session's sequence gaps are the same observations as the first
    time round, received later."""
    gap = QualityEvent(
        source="futures",
        kind=QualityKind.SEQUENCE_GAP,
        received_time_ns=1,
        detail="seq 10 → 13",
        product="PF_XBTUSD",
        exchange_time_ms=1_786_000_000_000,
        attributes={"missing": 2},
    )
    replayed = msgspec.structs.replace(gap, received_time_ns=99_000_000_000)
    assert quality_event_id(gap) == quality_event_id(replayed)
    elsewhere = msgspec.structs.replace(gap, exchange_time_ms=1_786_000_000_001)
    assert quality_event_id(gap) != quality_event_id(elsewhere)


def test_dead_letters_keep_the_raw_payload_and_a_reason_code() -> None:
    letter = DeadLetter(
        source="spot",
        received_time_ns=5,
        reason=DeadLetterReason.MALFORMED_JSON,
        detail="JSON is malformed: truncated string",
        raw='{"channel":"tick',
    )
    payload = msgspec.json.decode(encode_record(letter))
    assert payload["reason"] == "malformed_json"
    assert payload["raw"] == '{"channel":"tick'
    assert record_key(letter) is None


VALID = {"sources": [{"api": "futures", "products": ["PF_XBTUSD", "PI_XBTUSD"]}]}


def test_a_valid_spec_gets_its_defaults() -> None:
    spec = parse_spec(VALID)
    assert spec.sources[0].channels == ["ticker", "trade"]
    assert spec.sources[0].url is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "missing required field `sources` - at `spec`"),
        ({"sources": []}, "length >= 1 - at `spec.sources`"),
        ({"sources": [{"api": "margin", "products": ["X_Y"]}]}, "at `spec.sources[0].api`"),
        (
            {"sources": [{"api": "spot", "products": ["btc/usd"]}]},
            "at `spec.sources[0].products[0]`",
        ),
        (
            {"sources": [{"api": "futures", "products": ["BTC/USD"]}]},
            "products[0] 'BTC/USD' is not a futures product id",
        ),
        (
            {"sources": [{"api": "spot", "products": ["BTC/USD"], "channels": ["book"]}]},
            "at `spec.sources[0].channels[0]`",
        ),
        (
            {"sources": [{"api": "spot", "products": ["BTC/USD"], "url": "http://x"}]},
            "at `spec.sources[0].url`",
        ),
        (
            {"sources": [{"api": "spot", "products": ["BTC/USD"], "extra": 1}]},
            "unknown field `extra` - at `spec.sources[0]`",
        ),
        (
            {"sources": [{"api": "spot", "products": ["BTC/USD", "BTC/USD"]}]},
            "products lists a value twice",
        ),
        (
            {
                "sources": [
                    {"api": "spot", "products": ["BTC/USD"]},
                    {"api": "spot", "products": ["ETH/USD"]},
                ]
            },
            "sources lists api 'spot' 2 times",
        ),
    ],
)
def test_an_invalid_spec_names_the_field(spec: object, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    assert message in str(caught.value)
