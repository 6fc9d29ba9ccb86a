"""The bundled demo: twenty minutes of a labelled futures market, generated offline.

The session comes from the synthetic market generator (``krakenfeed.market``), so
every injected anomaly is labelled with the detector expected to report it. Only
the futures perpetual is played: futures frames carry the exchange's time, which
the replay keeps, so the detectors see the market's own clock however fast it
plays. Spot tickers carry no time; replayed faster than real time, their event
time (the receive time) would compress the market and blur every time-based
detector.

The session's times are fixed, so a second demo run writes the same keys and
adds no rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final

from krakenfeed.contracts import (
    LOCAL_NAMESPACE,
    FeedId,
    KrakenFeedSpec,
    SourceSpec,
    record_timestamp_ms,
)
from krakenfeed.market import FUTURES, Label, generate_market
from krakenfeed.replay.session import Session, session_from_records

DEMO_FEED: Final = FeedId(LOCAL_NAMESPACE, "demo")
DEMO_PACE: Final = "60x"
"""Twenty market minutes in about twenty seconds."""
TOLERANCE_MS: Final = 5_000
"""A label counts as found by an anomaly of its detector within its span widened by this."""

_SEED: Final = 9
"""A seed whose twenty minutes inject every kind of anomaly on the futures product."""
_DURATION_S: Final = 1_200
_WARMUP_S: Final = 300
_EVERY_S: Final = 80.0


@dataclass(frozen=True)
class Demo:
    feed: FeedId
    spec: KrakenFeedSpec
    session: Session
    labels: list[Label]
    events: int
    first_day: date


def demo() -> Demo:
    market = generate_market(
        seed=_SEED, duration_s=_DURATION_S, warmup_s=_WARMUP_S, anomaly_every_s=_EVERY_S
    )
    records = [r for r in market.records if r.product == FUTURES]
    first_ms = record_timestamp_ms(records[0])
    return Demo(
        feed=DEMO_FEED,
        spec=KrakenFeedSpec(sources=[SourceSpec(api="futures", products=[FUTURES])]),
        session=session_from_records(records),
        labels=[label for label in market.labels if label.product == FUTURES],
        events=len(records),
        first_day=datetime.fromtimestamp(first_ms / 1000, UTC).date(),
    )


def found(label: Label, anomalies: list[tuple[str, str, int]]) -> bool:
    """Whether one of ``(product, detector, event_time_ms)`` reports ``label``."""
    return any(
        detector == label.kind
        and product == label.product
        and label.start_ms - TOLERANCE_MS <= time_ms <= label.end_ms + TOLERANCE_MS
        for product, detector, time_ms in anomalies
    )
