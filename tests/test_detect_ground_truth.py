"""Detection quality against the synthetic market's ground truth.

Given two hours of generated futures and spot data with anomalies injected about
every 90 s, the engine must find every labelled anomaly with the detector named by
its label, within the labelled span widened by 5 s on each side (recall ≥ 0.95),
and report at most one anomaly per detector per 10,000 events on clean stretches
(more than 30 s from any label of the product).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest

from krakenfeed.contracts import Anomaly, FeedId, Ticker, Trade, record_timestamp_ms
from krakenfeed.detect import DetectorEngine, ProductState
from krakenfeed.market import FUTURES, KINDS, PRODUCTS, Label, Market, generate_market

TOLERANCE_MS = 5_000
CLEAN_MARGIN_MS = 30_000
DETECTORS = (*KINDS, "likelihood")


def detect(records: Sequence[Ticker | Trade]) -> list[Anomaly]:
    engine = DetectorEngine(FeedId("local", "ground-truth"))
    states: dict[str, ProductState] = {}
    anomalies: list[Anomaly] = []
    for record in records:
        state = states.get(record.product) or states.setdefault(
            record.product, engine.new_state(record.product)
        )
        anomalies += engine.process(state, record, record_timestamp_ms(record), 0)
    return anomalies


def found_by_its_detector(label: Label, anomalies: list[Anomaly]) -> bool:
    return any(
        a.detector == label.kind
        and a.product == label.product
        and label.start_ms - TOLERANCE_MS <= a.event_time_ms <= label.end_ms + TOLERANCE_MS
        for a in anomalies
    )


def on_clean_stretch(product: str, time_ms: int, labels: list[Label]) -> bool:
    return not any(
        label.product == product
        and label.start_ms - CLEAN_MARGIN_MS <= time_ms <= label.end_ms + CLEAN_MARGIN_MS
        for label in labels
    )


@pytest.fixture(scope="module")
def market() -> Market:
    return generate_market(seed=7, duration_s=7_200)


@pytest.fixture(scope="module")
def anomalies(market: Market) -> list[Anomaly]:
    return detect(market.records)


def test_the_market_is_ordered_deterministic_and_labelled(market: Market) -> None:
    times = [record_timestamp_ms(r) for r in market.records]
    assert times == sorted(times)
    assert generate_market(seed=7, duration_s=7_200) == market
    assert generate_market(seed=8, duration_s=7_200).records != market.records
    kinds = Counter((type(r).__name__, r.source, r.product) for r in market.records)
    assert set(kinds) == {
        (kind, source, product) for kind in ("Ticker", "Trade") for product, source in PRODUCTS
    }
    assert len(market.labels) >= 50
    assert set(Counter(label.kind for label in market.labels)) == set(KINDS)
    assert all(
        label.product == FUTURES for label in market.labels if label.kind == "premium_dislocation"
    )
    start, end = times[0], times[-1]
    assert all(start < label.start_ms <= label.end_ms < end for label in market.labels)


def test_every_injected_anomaly_is_found_by_its_detector(
    market: Market, anomalies: list[Anomaly]
) -> None:
    missed = [label for label in market.labels if not found_by_its_detector(label, anomalies)]
    assert len(missed) <= 0.05 * len(market.labels), missed
    for kind in KINDS:
        labels = [label for label in market.labels if label.kind == kind]
        found = [label for label in labels if found_by_its_detector(label, anomalies)]
        assert len(found) >= 0.95 * len(labels), (kind, len(found), len(labels))


def test_at_most_one_false_positive_per_detector_per_10k_clean_events(
    market: Market, anomalies: list[Anomaly]
) -> None:
    clean_events = sum(
        on_clean_stretch(r.product, record_timestamp_ms(r), market.labels) for r in market.records
    )
    false_positives = Counter(
        a.detector for a in anomalies if on_clean_stretch(a.product, a.event_time_ms, market.labels)
    )
    assert clean_events >= 20_000
    for detector in DETECTORS:
        assert false_positives[detector] <= clean_events / 10_000, (detector, false_positives)


def test_one_injected_anomaly_yields_one_record(market: Market, anomalies: list[Anomaly]) -> None:
    for label in market.labels:
        matches = [
            a
            for a in anomalies
            if a.detector == label.kind
            and a.product == label.product
            and label.start_ms - TOLERANCE_MS <= a.event_time_ms <= label.end_ms + TOLERANCE_MS
        ]
        assert len(matches) <= 1, (label, matches)


def test_a_clean_market_stays_quiet() -> None:
    records = generate_market(seed=11, duration_s=7_200, inject=False).records
    per_detector = Counter(a.detector for a in detect(records))
    assert all(count <= len(records) / 10_000 for count in per_detector.values()), per_detector
