"""The detector engine: persisted state, determinism, the anomaly record, the wall clock."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import msgspec
import pytest

from krakenfeed.contracts import Anomaly, FeedId, Ticker, Trade, encode_record, record_timestamp_ms
from krakenfeed.detect import (
    DetectorConfig,
    DetectorEngine,
    PriceJumpConfig,
    ProductState,
    StaleConfig,
    decode_state,
    encode_state,
)
from krakenfeed.market import FUTURES, Market, generate_market

FEED = FeedId("local", "test")
Clock = Callable[[Ticker | Trade], int]


def processing_clock(record: Ticker | Trade) -> int:
    """A stand-in wall clock: 5 ms after the record was received."""
    return record.received_time_ns + 5_000_000


def detect(
    records: Sequence[Ticker | Trade],
    engine: DetectorEngine | None = None,
    *,
    clock: Clock = processing_clock,
    persist_between_records: bool = False,
) -> list[Anomaly]:
    engine = engine or DetectorEngine(FEED)
    stored: dict[str, ProductState | bytes] = {}
    anomalies: list[Anomaly] = []
    for record in records:
        saved = stored.get(record.product)
        if saved is None:
            state = engine.new_state(record.product)
        elif isinstance(saved, bytes):
            state = decode_state(saved)
        else:
            state = saved
        anomalies += engine.process(state, record, record_timestamp_ms(record), clock(record))
        stored[record.product] = encode_state(state) if persist_between_records else state
    return anomalies


@pytest.fixture(scope="module")
def market() -> Market:
    return generate_market(seed=3, duration_s=3_600)


def test_saving_and_restoring_state_between_every_record_changes_nothing(market: Market) -> None:
    in_memory = detect(market.records)
    persisted = detect(market.records, persist_between_records=True)
    assert len(in_memory) >= 30
    assert persisted == in_memory


def test_the_same_input_gives_the_same_anomalies_and_the_clock_only_stamps_them(
    market: Market,
) -> None:
    first = detect(market.records)
    late = detect(market.records, clock=lambda record: processing_clock(record) + 7_000_000_000)
    assert detect(market.records) == first
    assert [msgspec.structs.replace(a, detected_time_ns=0) for a in late] == [
        msgspec.structs.replace(a, detected_time_ns=0) for a in first
    ]
    assert {a.detected_time_ns - b.detected_time_ns for a, b in zip(late, first, strict=True)} == {
        7_000_000_000
    }


def test_an_anomaly_record_carries_the_features_of_its_moment(market: Market) -> None:
    anomalies = detect(market.records)
    for anomaly in anomalies:
        assert anomaly.feed == "local/test"
        assert anomaly.trace_id is None
        assert anomaly.baseline_low <= anomaly.baseline_high
        assert all(
            math.isfinite(x)
            for x in (anomaly.value, anomaly.baseline_low, anomaly.baseline_high, anomaly.score)
        )
        assert {"mid", "spread_bps", "imbalance", "log_return_bps", "trade_count_5s"} <= set(
            anomaly.context
        )
        encode_record(anomaly)
    futures_jump = next(a for a in anomalies if a.detector == "price_jump" and a.product == FUTURES)
    assert futures_jump.context["basis_bps"] is not None
    assert futures_jump.context["funding_rate"] is not None
    assert not futures_jump.baseline_low <= futures_jump.value <= futures_jump.baseline_high


def test_state_stays_small_and_bounded(market: Market) -> None:
    engine = DetectorEngine(FEED)
    states: dict[str, ProductState] = {}
    sizes = []
    for index, record in enumerate(market.records):
        state = states.setdefault(record.product, engine.new_state(record.product))
        engine.process(state, record, record_timestamp_ms(record), 0)
        if index % 1_000 == 0:
            sizes.append(len(encode_state(state)))
    assert max(sizes) < 4_000
    assert len(encode_state(states[FUTURES])) < 2_000
    for state in states.values():
        assert msgspec.json.decode(msgspec.json.encode(state), type=ProductState) == state


def test_a_silent_product_is_noticed_on_the_injected_wall_clock_once() -> None:
    engine = DetectorEngine(FEED, DetectorConfig(stale=StaleConfig(silent_after_ms=30_000)))
    records = [
        r for r in generate_market(duration_s=120, inject=False).records if r.product == FUTURES
    ]
    state = engine.new_state(FUTURES)
    wall_ns = 9_000_000_000_000_000_000
    for offset, record in enumerate(records):
        engine.process(state, record, record_timestamp_ms(record), wall_ns + offset)
    last_wall_ns = wall_ns + len(records) - 1

    assert engine.check_stale(state, last_wall_ns + 29_000_000_000) == []
    [silent] = engine.check_stale(state, last_wall_ns + 31_000_000_000)
    assert engine.check_stale(state, last_wall_ns + 90_000_000_000) == []

    assert silent.detector == "stale"
    assert silent.product == FUTURES
    assert silent.event_time_ms == record_timestamp_ms(records[-1])
    assert silent.detected_time_ns == last_wall_ns + 31_000_000_000
    assert silent.value == pytest.approx(31.0, abs=0.01)
    assert silent.context["kind"] == "silent"


def test_disabled_detectors_stay_silent(market: Market) -> None:
    config = DetectorConfig(
        price_jump=PriceJumpConfig(enabled=False), stale=StaleConfig(enabled=False)
    )
    detectors = {a.detector for a in detect(market.records, DetectorEngine(FEED, config))}
    assert not detectors & {"price_jump", "stale"}
    # The likelihood scorer may also report a trade burst: it judges range from its
    # 100th interval on, before its warm-up is over.
    assert detectors - {"likelihood"} == {"spread_blowout", "trade_burst", "premium_dislocation"}


def test_the_config_decodes_from_json_over_its_defaults() -> None:
    config = msgspec.json.decode(
        b'{"trade_burst": {"window_s": 10}, "stale": {"stale_after_ms": 5000}}',
        type=DetectorConfig,
    )
    assert config.trade_burst.window_s == 10
    assert config.trade_burst.threshold == DetectorConfig().trade_burst.threshold
    assert config.stale.stale_after_ms == 5_000
    assert config.price_jump == PriceJumpConfig()
    with pytest.raises(msgspec.ValidationError, match=r"unknown field `treshold`"):
        msgspec.json.decode(b'{"price_jump": {"treshold": 3}}', type=DetectorConfig)
