"""Market features, computed in O(1) per record from small persistent state.

Quotes give the mid price, the spread in bps, log returns between distinct mids,
the top-of-book size imbalance and, on futures, the basis and funding. Trades feed
one-second buckets of count and notional over a short rolling horizon; longer
horizons are EWMA rates kept by the trade-burst detector.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

from krakenfeed.contracts import Ticker

BPS: Final = 10_000.0


class QuoteFeatures(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    """The latest top-of-book features of one product."""

    mid: float = 0.0
    """0.0 until the first ticker."""
    spread_bps: float = 0.0
    imbalance: float = 0.0
    """(bid size - ask size) / (bid size + ask size), in [-1, 1]."""
    log_return: float = 0.0
    """ln(mid / previous distinct mid), set when the mid changes."""
    return_elapsed_ms: int = 0
    """Event time the mid took to change, for scaling ``log_return``."""
    mid_changed_ms: int = 0
    basis_bps: float | None = None
    """Futures only: (mark - index) / index, or Kraken's ``premium`` (a percentage)."""
    funding_rate: float | None = None
    relative_funding_rate: float | None = None


def update_quote(features: QuoteFeatures, ticker: Ticker, time_ms: int) -> bool:
    """Take the ticker's features; True when the mid changed, i.e. a new return exists."""
    bid, ask = ticker.bid, ticker.ask
    mid = 0.5 * (bid + ask)
    features.spread_bps = (ask - bid) / mid * BPS
    sizes = ticker.bid_size + ticker.ask_size
    features.imbalance = (ticker.bid_size - ticker.ask_size) / sizes if sizes > 0.0 else 0.0
    if ticker.mark_price is not None and ticker.index_price:
        features.basis_bps = (ticker.mark_price - ticker.index_price) / ticker.index_price * BPS
    elif ticker.premium is not None:
        features.basis_bps = ticker.premium * 100.0
    if ticker.funding_rate is not None:
        features.funding_rate = ticker.funding_rate
        features.relative_funding_rate = ticker.relative_funding_rate
    previous = features.mid
    if mid == previous:
        return False
    features.mid = mid
    if previous == 0.0:
        features.mid_changed_ms = time_ms
        return False
    features.log_return = math.log(mid / previous)
    features.return_elapsed_ms = time_ms - features.mid_changed_ms
    features.mid_changed_ms = time_ms
    return True


class TradeWindow(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    """Trade count and notional per second of event time over the last ``len(counts)``
    seconds, the newest (still open) second included."""

    counts: list[int]
    notionals: list[float]
    second: int = -1
    """Epoch second of the open bucket; -1 before the first trade."""
    head: int = 0
    """Slot of the open bucket."""
    count: int = 0
    notional: float = 0.0
    """Sums over the window."""


def new_trade_window(seconds: int) -> TradeWindow:
    if seconds < 1:
        raise ValueError(f"a trade window needs at least one second, got window_s={seconds}")
    return TradeWindow(counts=[0] * seconds, notionals=[0.0] * seconds)


def roll_trade_window(window: TradeWindow, second: int) -> None:
    """Open the bucket of ``second`` (later than the open one), emptying the slots
    that fall out of the horizon."""
    size = len(window.counts)
    steps = min(second - window.second, size) if window.second >= 0 else size
    head = window.head
    counts, notionals = window.counts, window.notionals
    for _ in range(steps):
        head = (head + 1) % size
        counts[head] = 0
        notionals[head] = 0.0
    window.head = head
    window.second = second
    # Re-summed rather than decremented, so the float sum never drifts.
    window.count = sum(counts)
    window.notional = sum(notionals)


def add_trade(window: TradeWindow, notional: float) -> None:
    window.counts[window.head] += 1
    window.notionals[window.head] += notional
    window.count += 1
    window.notional += notional
