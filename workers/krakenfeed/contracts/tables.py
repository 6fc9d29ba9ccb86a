"""PostgreSQL tables and the natural keys every write upserts on."""

from __future__ import annotations

from typing import Final

import msgspec

from krakenfeed.contracts.records import Ticker, Trade


class TableKey(msgspec.Struct, frozen=True):
    table: str
    key: tuple[str, ...]


TICKER: Final = TableKey("ticker", ("feed", "product", "time_key"))
"""``time_key`` is ``exchange_time_ms``, or ``received_time_ns`` when that is null."""
TRADES: Final = TableKey("trades", ("feed", "product", "trade_key"))
"""``trade_key`` is the spot ``trade_id`` or the futures ``seq``."""
ANOMALIES: Final = TableKey("anomalies", ("feed", "product", "detector", "event_time_ms"))
QUALITY_EVENTS: Final = TableKey("quality_events", ("feed", "event_id"))
TABLES: Final = (TICKER, TRADES, ANOMALIES, QUALITY_EVENTS)


def ticker_time_key(record: Ticker) -> int:
    """Exchange time in ms, or receive time in ns; the magnitudes cannot collide."""
    if record.exchange_time_ms is not None:
        return record.exchange_time_ms
    return record.received_time_ns


def trade_key(record: Trade) -> int:
    key = record.trade_id if record.trade_id is not None else record.seq
    if key is None:
        raise ValueError(f"{record.source} trade on {record.product} has neither trade_id nor seq")
    return key
