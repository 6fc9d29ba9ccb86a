"""Seeded synthetic market data as contract records.

Pure and deterministic: the same seed gives the same records, so tests can assert
exact rows and benchmarks compare like with like.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from krakenfeed.contracts import Ticker, Trade
from krakenfeed.contracts.records import Source


def tickers(
    product: str,
    count: int,
    *,
    source: Source = "futures",
    start_ms: int = 1_786_046_338_000,
    step_ms: int = 1_000,
    price: float = 64_400.0,
    seed: int = 0,
) -> Iterator[Ticker]:
    """A random walk of quotes, one per ``step_ms``, with a spread of a few bps."""
    rng = random.Random(f"{seed}:{product}:ticker")
    for index in range(count):
        price *= math.exp(rng.gauss(0.0, 2e-4))
        half_spread = price * rng.uniform(0.5e-4, 2e-4)
        exchange_ms = start_ms + index * step_ms
        futures = source == "futures"
        yield Ticker(
            source=source,
            product=product,
            exchange_time_ms=exchange_ms if futures else None,
            received_time_ns=(exchange_ms + 30) * 1_000_000,
            bid=round(price - half_spread, 1),
            ask=round(price + half_spread, 1),
            bid_size=round(rng.uniform(0.01, 2.0), 4),
            ask_size=round(rng.uniform(0.01, 2.0), 4),
            last=round(price, 1),
            volume=round(3_000 + index * 0.01, 4),
            mark_price=round(price, 2) if futures else None,
            index_price=round(price * (1 + rng.gauss(0.0, 1e-4)), 2) if futures else None,
            premium=round(rng.gauss(0.0, 0.5), 4) if futures else None,
            funding_rate=round(rng.gauss(0.0, 0.1), 6) if futures else None,
            relative_funding_rate=round(rng.gauss(0.0, 2e-6), 12) if futures else None,
            open_interest=round(2_000 + rng.uniform(0, 300), 4) if futures else None,
        )


def trades(
    product: str,
    count: int,
    *,
    source: Source = "futures",
    start_ms: int = 1_786_046_338_000,
    step_ms: int = 250,
    price: float = 64_400.0,
    first_id: int = 45_000,
    seed: int = 0,
) -> Iterator[Trade]:
    """Executions around a random-walk price; futures carry ``seq``, spot ``trade_id``."""
    rng = random.Random(f"{seed}:{product}:trade")
    for index in range(count):
        price *= math.exp(rng.gauss(0.0, 1e-4))
        exchange_ms = start_ms + index * step_ms
        ident = first_id + index
        yield Trade(
            source=source,
            product=product,
            exchange_time_ms=exchange_ms,
            received_time_ns=(exchange_ms + 30) * 1_000_000,
            side="buy" if rng.random() < 0.5 else "sell",
            price=round(price, 1),
            qty=round(rng.expovariate(20.0) + 1e-4, 4),
            trade_id=ident if source == "spot" else None,
            seq=ident if source == "futures" else None,
            uid=f"{seed:x}-{ident:08x}" if source == "futures" else None,
        )
