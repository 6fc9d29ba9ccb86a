"""Reading what a run stored: anomalies, a data-quality report, and the series to plot.

The queries take the same filters everywhere: ``feed`` (``namespace/name`` or a
local feed's bare name), ``product``, ``detector`` and ``since``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from krakenfeed.contracts import FeedId, QualityKind

_DURATION: Final = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> int:
    """``30m``, ``2h``, ``7d`` ago, or an ISO 8601 time (UTC unless it says otherwise),
    as epoch milliseconds."""
    match = _DURATION.match(text.strip())
    if match:
        ago = timedelta(seconds=float(match[1]) * _UNITS[match[2]])
        return int(((now or datetime.now(UTC)) - ago).timestamp() * 1000)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since: got {text!r}; use a duration such as 30m, 2h or 7d, "
            "or a time such as 2026-08-06T12:00:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Filters:
    feed: FeedId | None = None
    product: str | None = None
    detector: str | None = None
    since_ms: int | None = None

    def where(
        self, time_column: str, *, detector: bool = False, scale: int = 1
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = ["TRUE"]
        params: list[Any] = []
        if self.feed is not None:
            clauses.append("feed = %s")
            params.append(str(self.feed))
        if self.product is not None:
            clauses.append("product = %s")
            params.append(self.product)
        if detector and self.detector is not None:
            clauses.append("detector = %s")
            params.append(self.detector)
        if self.since_ms is not None:
            clauses.append(f"{time_column} >= %s")
            params.append(self.since_ms * scale)
        return " AND ".join(clauses), params


def iso_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


def anomalies(conn: Any, filters: Filters) -> list[dict[str, Any]]:
    where, params = filters.where("event_time_ms", detector=True)
    rows = conn.execute(
        "SELECT feed, product, detector, event_time_ms, value, baseline_low, baseline_high,"
        " score, severity, context FROM anomalies"
        f" WHERE {where} ORDER BY event_time_ms, product, detector",
        params,
    ).fetchall()
    names = ("feed", "product", "detector", "event_time_ms", "value", "baseline_low",
             "baseline_high", "score", "severity", "context")  # fmt: skip
    found = []
    for row in rows:
        item = dict(zip(names, row, strict=True))
        item["time"] = iso_ms(item["event_time_ms"])
        found.append(item)
    return found


@dataclass
class ProductQuality:
    feed: str
    product: str
    """A product id, or ``(futures)``/``(spot)`` for what concerns the whole connection."""
    tickers: int = 0
    trades: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    sequence_gaps: int = 0
    missing_trades: int = 0
    stale_periods: int = 0
    stale_seconds: float = 0.0
    reconnects: int = 0
    other: dict[str, int] = field(default_factory=dict)


def quality(conn: Any, filters: Filters) -> list[ProductQuality]:
    """One report row per product (and per connection, for connection-wide events).

    Stale periods are the stale detector's anomalies plus ingest's stale-product
    events; the detector's value is the silent time in seconds.
    """
    report: dict[tuple[str, str], ProductQuality] = {}

    def row(feed: str, product: str) -> ProductQuality:
        return report.setdefault((feed, product), ProductQuality(feed, product))

    for table, attribute in (("ticker", "tickers"), ("trades", "trades")):
        where, params = filters.where("event_time_ms")
        for feed, product, count in conn.execute(
            f"SELECT feed, product, count(*) FROM {table} WHERE {where} GROUP BY 1, 2", params
        ):
            setattr(row(feed, product), attribute, count)
    where, params = filters.where("received_time_ns", scale=1_000_000)
    events = conn.execute(
        "SELECT feed, COALESCE(product, '(' || source || ')'), kind, reason,"
        " count(*), COALESCE(sum((attributes->>'missing')::bigint), 0)"
        f" FROM quality_events WHERE {where} GROUP BY 1, 2, 3, 4",
        params,
    ).fetchall()
    for feed, product, kind, reason, count, missing in events:
        entry = row(feed, product)
        if kind == QualityKind.DEAD_LETTER:
            entry.invalid[reason or "unknown"] = entry.invalid.get(reason or "unknown", 0) + count
        elif kind == QualityKind.SEQUENCE_GAP:
            entry.sequence_gaps += count
            entry.missing_trades += int(missing)
        elif kind == QualityKind.STALE_PRODUCT:
            entry.stale_periods += count
        elif kind == QualityKind.RECONNECT:
            entry.reconnects += count
        else:
            entry.other[kind] = entry.other.get(kind, 0) + count
    where, params = filters.where("event_time_ms")
    for feed, product, count, seconds in conn.execute(
        "SELECT feed, product, count(*), COALESCE(sum(value), 0) FROM anomalies"
        f" WHERE {where} AND detector = 'stale' GROUP BY 1, 2",
        params,
    ):
        entry = row(feed, product)
        entry.stale_periods += count
        entry.stale_seconds += float(seconds)
    return sorted(report.values(), key=lambda q: (q.feed, q.product))


@dataclass
class Series:
    """What the plot draws for one product."""

    ticker_ms: list[int] = field(default_factory=list)
    mid: list[float] = field(default_factory=list)
    spread_bps: list[float] = field(default_factory=list)
    volume_ms: list[int] = field(default_factory=list)
    volume: list[float] = field(default_factory=list)
    anomalies: list[tuple[int, str, float]] = field(default_factory=list)
    """(event time, detector, mid at that time)."""


def series(conn: Any, filters: Filters, bucket_ms: int = 10_000) -> dict[tuple[str, str], Series]:
    """Mid price and spread per ticker, traded quantity per ``bucket_ms``, and the anomalies."""
    found: dict[tuple[str, str], Series] = defaultdict(Series)
    where, params = filters.where("event_time_ms")
    for feed, product, time_ms, bid, ask in conn.execute(
        f"SELECT feed, product, event_time_ms, bid, ask FROM ticker WHERE {where}"
        " ORDER BY event_time_ms",
        params,
    ):
        s = found[(feed, product)]
        mid = (bid + ask) / 2
        s.ticker_ms.append(time_ms)
        s.mid.append(mid)
        s.spread_bps.append((ask - bid) / mid * 1e4 if mid else 0.0)
    for feed, product, bucket, quantity in conn.execute(
        f"SELECT feed, product, event_time_ms / %s * %s, sum(qty) FROM trades WHERE {where}"
        " GROUP BY 1, 2, 3 ORDER BY 3",
        [bucket_ms, bucket_ms, *params],
    ):
        s = found[(feed, product)]
        s.volume_ms.append(int(bucket))
        s.volume.append(float(quantity))
    where, params = filters.where("event_time_ms", detector=True)
    for feed, product, time_ms, detector in conn.execute(
        f"SELECT feed, product, event_time_ms, detector FROM anomalies WHERE {where}"
        " ORDER BY event_time_ms",
        params,
    ):
        s = found[(feed, product)]
        s.anomalies.append((time_ms, detector, _value_at(s, time_ms)))
    return dict(found)


def _value_at(s: Series, time_ms: int) -> float:
    """The mid at or just before ``time_ms`` (the first one when it is earlier)."""
    import bisect

    if not s.mid:
        return float("nan")
    index = max(0, bisect.bisect_right(s.ticker_ms, time_ms) - 1)
    return s.mid[index]
