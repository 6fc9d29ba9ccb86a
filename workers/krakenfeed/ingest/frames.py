"""Typed Kraken WebSocket frames, decoded with msgspec.

Only the fields krakenfeed uses are declared: Kraken adds fields over time and
unknown ones are ignored, while a missing or mistyped field we rely on is a
validation error. Numbers in exponent notation and uint64 ids decode natively.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

Side = Literal["buy", "sell"]

# --- Futures v1 (wss://futures.kraken.com/ws/v1) ----------------------------


class FuturesEvent(msgspec.Struct):
    """Banner (``info``), acks, ``alert`` and ``error``: every frame with an ``event`` key."""

    event: str
    feed: str | None = None
    product_ids: list[str] | None = None
    message: str | None = None
    version: int | None = None


class FuturesTicker(msgspec.Struct, tag="ticker", tag_field="feed"):
    """Every ticker frame is a full snapshot of the product's state."""

    time: int
    product_id: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    last: float | None = None
    volume: float | None = None
    markPrice: float | None = None  # noqa: N815  (Kraken's spelling)
    index: float | None = None
    premium: float | None = None
    funding_rate: float | None = None
    relative_funding_rate: float | None = None
    openInterest: float | None = None  # noqa: N815


class FuturesTrade(msgspec.Struct, tag="trade", tag_field="feed"):
    product_id: str
    side: Side
    time: int
    qty: float
    price: float
    seq: int
    uid: str | None = None


class FuturesTradeItem(msgspec.Struct):
    """A trade inside ``trade_snapshot`` (its own ``feed`` key is ignored)."""

    product_id: str
    side: Side
    time: int
    qty: float
    price: float
    seq: int
    uid: str | None = None


class FuturesTradeSnapshot(msgspec.Struct, tag="trade_snapshot", tag_field="feed"):
    """Recent trades, newest first, sent on every (re)subscribe."""

    product_id: str
    trades: list[FuturesTradeItem]


class FuturesHeartbeat(msgspec.Struct, tag="heartbeat", tag_field="feed"):
    time: int


FuturesData = FuturesTicker | FuturesTrade | FuturesTradeSnapshot | FuturesHeartbeat

# --- Spot v2 (wss://ws.kraken.com/v2) ----------------------------------------


class SpotResult(msgspec.Struct):
    channel: str | None = None
    symbol: str | None = None
    snapshot: bool | None = None


class SpotResponse(msgspec.Struct):
    """Replies to our requests: subscribe acks and errors, pongs."""

    method: str
    success: bool | None = None
    result: SpotResult | None = None
    error: str | None = None
    req_id: int | None = None


class SpotTickerItem(msgspec.Struct):
    symbol: str
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float
    last: float | None = None
    volume: float | None = None


class SpotTicker(msgspec.Struct, tag="ticker", tag_field="channel"):
    """Carries no exchange timestamp: receive time stands in for it."""

    type: Literal["snapshot", "update"]
    data: list[SpotTickerItem]


class SpotTradeItem(msgspec.Struct):
    symbol: str
    side: Side
    price: float
    qty: float
    trade_id: int
    timestamp: datetime


class SpotTrade(msgspec.Struct, tag="trade", tag_field="channel"):
    type: Literal["snapshot", "update"]
    data: list[SpotTradeItem]


class SpotStatusItem(msgspec.Struct):
    system: str
    api_version: str | None = None
    connection_id: int | None = None
    """A uint64: it does not fit a signed 64-bit integer."""
    version: str | None = None


class SpotStatus(msgspec.Struct, tag="status", tag_field="channel"):
    data: list[SpotStatusItem]


class SpotHeartbeat(msgspec.Struct, tag="heartbeat", tag_field="channel"):
    pass


SpotData = SpotTicker | SpotTrade | SpotStatus | SpotHeartbeat


class SpotBareError(msgspec.Struct):
    """Frames such as ``{"Error":"Exceeded msg rate"}`` that answer no request."""

    Error: str
