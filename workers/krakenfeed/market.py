"""A seeded synthetic BTC market with injected anomalies and their ground truth.

One latent BTC price (a random walk with slowly varying volatility) drives a
futures perpetual and a spot pair. Each product gets quotes about once a second
with a spread of about a basis point, Poisson trades of log-normal size, and (the
futures) a mark price, an index price and funding. On top of that clean market,
anomalies are injected at scheduled times, one at a time, and each is labelled
with its product, its time span and the detector expected to report it:

- ``price_jump``: the latent price jumps by 30-150 bps (every product sees it);
- ``spread_blowout``: one product's spread widens 6-20× for 3-10 s, around an
  unchanged mid;
- ``trade_burst``: one product trades 10-25× faster for 2-5 s, or a few block
  trades of several BTC arrive within 2 s;
- ``premium_dislocation``: the futures index price is off by 20-80 bps for
  10-30 s, so the basis jumps while the futures book does not;
- ``stale``: one product sends nothing for 20-50 s;
- ``flat_line``: one product's ticker repeats the same quote for 30-60 s.

Pure and deterministic: the same arguments give the same records and labels.
Records come in event-time order (``record_timestamp_ms``), as the detector
would read them from Kafka.
"""

from __future__ import annotations

import bisect
import math
import random
from typing import Final

import msgspec

from krakenfeed.contracts import Source, Ticker, Trade, record_timestamp_ms
from krakenfeed.contracts.records import Side

FUTURES: Final = "PF_XBTUSD"
SPOT: Final = "BTC/USD"
PRODUCTS: Final[tuple[tuple[str, Source], ...]] = ((FUTURES, "futures"), (SPOT, "spot"))
KINDS: Final = (
    "price_jump",
    "spread_blowout",
    "trade_burst",
    "premium_dislocation",
    "stale",
    "flat_line",
)

_GRID_MS: Final = 100
_TICK: Final = 0.1
_VOL_PER_S: Final = 1e-4
"""About 1 bp per second: BTC's usual intraday volatility."""
_TRADES_PER_S: Final = 2.0
_BPS: Final = 1e-4


class Label(msgspec.Struct, frozen=True, kw_only=True):
    """One injected anomaly: which detector should report it, where and when."""

    product: str
    kind: str
    """The name of the detector expected to report it (one of ``KINDS``)."""
    start_ms: int
    end_ms: int
    """Event-time span; a point anomaly (a jump) has ``start_ms == end_ms``."""
    magnitude: float
    """Jump and dislocation in bps; spread multiple; trade-rate multiple, or minus the
    number of block trades; silent or flat seconds."""


class Market(msgspec.Struct, frozen=True, kw_only=True):
    records: list[Ticker | Trade]
    labels: list[Label]


def generate_market(
    *,
    seed: int = 0,
    duration_s: int = 3_600,
    start_ms: int = 1_786_046_338_000,
    price: float = 64_400.0,
    warmup_s: int = 600,
    anomaly_every_s: float = 90.0,
    inject: bool = True,
) -> Market:
    """``duration_s`` of market from ``start_ms``: clean for ``warmup_s``, then one
    injected anomaly about every ``anomaly_every_s`` (none when ``inject`` is False)."""
    if anomaly_every_s < 80.0:
        raise ValueError(
            f"anomaly_every_s={anomaly_every_s} would overlap episodes; use at least 80 s"
        )
    rng = random.Random(f"krakenfeed.market:{seed}")
    labels = _schedule(rng, start_ms, duration_s, warmup_s, anomaly_every_s) if inject else []
    jumps = [label for label in labels if label.kind == "price_jump" and label.product == FUTURES]
    log_prices = _latent_log_prices(rng, math.log(price), duration_s, start_ms, jumps)
    records: list[Ticker | Trade] = []
    for product, source in PRODUCTS:
        own = [label for label in labels if label.product == product]
        simulation = _ProductSimulation(seed, product, source, start_ms, log_prices, own)
        records.extend(simulation.tickers(duration_s))
        records.extend(simulation.trades(duration_s))
    records.sort(key=record_timestamp_ms)
    return Market(records=records, labels=labels)


def _schedule(
    rng: random.Random, start_ms: int, duration_s: int, warmup_s: int, every_s: float
) -> list[Label]:
    labels: list[Label] = []
    kinds: list[str] = []
    slot = 0
    while True:
        at_s = warmup_s + slot * every_s + rng.uniform(0.0, every_s / 3.0)
        slot += 1
        if at_s + 70.0 > duration_s:
            return labels
        if not kinds:
            kinds = list(KINDS)
            rng.shuffle(kinds)
        kind = kinds.pop()
        begin = start_ms + round(at_s * 1000)
        if kind == "price_jump":
            size = rng.uniform(30.0, 150.0) * rng.choice((-1.0, 1.0))
            labels += [
                Label(product=p, kind=kind, start_ms=begin, end_ms=begin, magnitude=size)
                for p, _ in PRODUCTS
            ]
            continue
        product = FUTURES if kind == "premium_dislocation" else rng.choice(PRODUCTS)[0]
        if kind == "spread_blowout":
            seconds, size = rng.uniform(3.0, 10.0), rng.uniform(6.0, 20.0)
        elif kind == "trade_burst":
            # A negative magnitude marks block trades rather than a faster trade rate.
            block = rng.random() < 0.5
            seconds = 2.0 if block else rng.uniform(2.0, 5.0)
            size = -float(rng.randint(3, 8)) if block else rng.uniform(10.0, 25.0)
        elif kind == "premium_dislocation":
            seconds = rng.uniform(10.0, 30.0)
            size = rng.uniform(20.0, 80.0) * rng.choice((-1.0, 1.0))
        elif kind == "stale":
            seconds = rng.uniform(20.0, 50.0)
            size = seconds
        else:
            seconds = rng.uniform(30.0, 60.0)
            size = seconds
        end = begin + round(seconds * 1000)
        labels.append(Label(product=product, kind=kind, start_ms=begin, end_ms=end, magnitude=size))


def _latent_log_prices(
    rng: random.Random, log_price: float, duration_s: int, start_ms: int, jumps: list[Label]
) -> list[float]:
    """The log BTC price every ``_GRID_MS``, with log-normal stochastic volatility."""
    steps = duration_s * 1000 // _GRID_MS + 1
    jump_at = {(label.start_ms - start_ms) // _GRID_MS: label.magnitude * _BPS for label in jumps}
    persistence = math.exp(-_GRID_MS / 300_000)
    shock = 0.3 * math.sqrt(1.0 - persistence**2)
    step_vol = _VOL_PER_S * math.sqrt(_GRID_MS / 1000)
    log_vol = 0.0
    path = [log_price] * steps
    for index in range(1, steps):
        log_vol = persistence * log_vol + rng.gauss(0.0, shock)
        log_price += rng.gauss(0.0, step_vol * math.exp(log_vol)) + jump_at.get(index, 0.0)
        path[index] = log_price
    return path


class _FuturesFields(msgspec.Struct, frozen=True, kw_only=True):
    """The futures-only ticker fields, rounded as Kraken sends them; all None on spot."""

    mark_price: float | None = None
    index_price: float | None = None
    premium: float | None = None
    funding_rate: float | None = None
    relative_funding_rate: float | None = None
    open_interest: float | None = None


def _futures_fields(
    mark: float, index: float, basis: float, open_interest: float
) -> _FuturesFields:
    relative_funding = basis / 24.0
    return _FuturesFields(
        mark_price=round(mark, 2),
        index_price=round(index, 2),
        premium=round((mark - index) / index * 100.0, 4),
        funding_rate=round(relative_funding * mark, 6),
        relative_funding_rate=round(relative_funding, 12),
        open_interest=round(open_interest, 4),
    )


_SPOT_FIELDS: Final = _FuturesFields()


class _Ornstein:
    """A mean-reverting series sampled at irregular times, exactly."""

    def __init__(self, rng: random.Random, mean: float, sd: float, timescale_ms: float) -> None:
        self.rng, self.mean, self.sd, self.timescale_ms = rng, mean, sd, timescale_ms
        self.value = mean + rng.gauss(0.0, sd)
        self.time_ms = 0

    def at(self, time_ms: int) -> float:
        decay = math.exp(-max(time_ms - self.time_ms, 0) / self.timescale_ms)
        noise = self.sd * math.sqrt(1.0 - decay * decay)
        self.value = self.mean + decay * (self.value - self.mean) + self.rng.gauss(0.0, noise)
        self.time_ms = time_ms
        return self.value


class _Episodes:
    """Labels of one kind on one product, looked up by time."""

    def __init__(self, labels: list[Label], kind: str) -> None:
        self.labels = [label for label in labels if label.kind == kind]
        self.starts = [label.start_ms for label in self.labels]

    def at(self, time_ms: int) -> Label | None:
        index = bisect.bisect_right(self.starts, time_ms) - 1
        if index >= 0 and time_ms < self.labels[index].end_ms:
            return self.labels[index]
        return None


class _ProductSimulation:
    def __init__(
        self,
        seed: int,
        product: str,
        source: Source,
        start_ms: int,
        log_prices: list[float],
        labels: list[Label],
    ) -> None:
        self.seed, self.product, self.source = seed, product, source
        self.start_ms = start_ms
        self.log_prices = log_prices
        self.labels = labels
        self.futures = source == "futures"
        self.base_spread_bps = 1.0 if self.futures else 0.6
        # The futures book trades at a small premium over the index, as perpetuals do.
        self.basis_bps = 3.0 if self.futures else 0.0
        self.stale = _Episodes(labels, "stale")

    def _rng(self, stream: str) -> random.Random:
        return random.Random(f"krakenfeed.market:{self.seed}:{self.product}:{stream}")

    def _price(self, time_ms: int) -> float:
        index = min((time_ms - self.start_ms) // _GRID_MS, len(self.log_prices) - 1)
        return math.exp(self.log_prices[index])

    def tickers(self, duration_s: int) -> list[Ticker]:
        rng = self._rng("ticker")
        spread_noise = _Ornstein(rng, 0.0, 0.25, 20_000)
        basis = _Ornstein(rng, self.basis_bps, 1.5, 60_000)
        blowouts = _Episodes(self.labels, "spread_blowout")
        dislocations = _Episodes(self.labels, "premium_dislocation")
        flats = _Episodes(self.labels, "flat_line")
        frozen: Ticker | None = None
        end_ms = self.start_ms + duration_s * 1000
        time_ms = self.start_ms + rng.randint(0, 999)
        volume = 3_000.0
        out: list[Ticker] = []
        while time_ms < end_ms:
            flat = flats.at(time_ms)
            if flat is None:
                frozen = None
            price = self._price(time_ms)
            spread_bps = self.base_spread_bps * math.exp(spread_noise.at(time_ms))
            blowout = blowouts.at(time_ms)
            if blowout is not None:
                spread_bps *= blowout.magnitude
            volume += rng.expovariate(1.0)
            if self.futures:
                basis_bps = basis.at(time_ms)
                mark = price * (1.0 + basis_bps * _BPS)
                index = price * (1.0 + rng.gauss(0.0, 0.2) * _BPS)
                dislocation = dislocations.at(time_ms)
                if dislocation is not None:
                    index *= 1.0 - dislocation.magnitude * _BPS
                futures = _futures_fields(
                    mark, index, basis_bps * _BPS, 2_000.0 + rng.uniform(0.0, 300.0)
                )
                mid = mark * (1.0 + rng.gauss(0.0, 0.3) * _BPS)
            else:
                futures = _SPOT_FIELDS
                mid = price * (1.0 + rng.gauss(0.0, 0.2) * _BPS)
            half = mid * spread_bps * _BPS / 2.0
            bid = math.floor((mid - half) / _TICK) * _TICK
            ask = max(math.ceil((mid + half) / _TICK) * _TICK, bid + _TICK)
            ticker = Ticker(
                source=self.source,
                product=self.product,
                exchange_time_ms=time_ms if self.futures else None,
                received_time_ns=(time_ms + (rng.randint(20, 80) if self.futures else 0))
                * 1_000_000,
                bid=round(bid, 1),
                ask=round(ask, 1),
                bid_size=round(rng.lognormvariate(math.log(0.5), 1.0), 4) + 0.0001,
                ask_size=round(rng.lognormvariate(math.log(0.5), 1.0), 4) + 0.0001,
                last=round(mid, 1),
                volume=round(volume, 4),
                mark_price=futures.mark_price,
                index_price=futures.index_price,
                premium=futures.premium,
                funding_rate=futures.funding_rate,
                relative_funding_rate=futures.relative_funding_rate,
                open_interest=futures.open_interest,
            )
            if flat is not None:
                frozen = frozen or ticker
                ticker = msgspec.structs.replace(
                    frozen,
                    exchange_time_ms=ticker.exchange_time_ms,
                    received_time_ns=ticker.received_time_ns,
                )
            if self.stale.at(time_ms) is None:
                out.append(ticker)
            time_ms += rng.randint(500, 1500)
        return out

    def trades(self, duration_s: int) -> list[Trade]:
        rng = self._rng("trade")
        activity = _Ornstein(rng, 0.0, 0.2, 600_000)
        spread_noise = _Ornstein(rng, 0.0, 0.25, 20_000)
        end_ms = self.start_ms + duration_s * 1000
        times: list[int] = []
        sizes: list[float] = []
        time_ms = float(self.start_ms)
        while True:
            rate = _TRADES_PER_S * math.exp(activity.at(int(time_ms)))
            time_ms += rng.expovariate(rate) * 1000.0
            if time_ms >= end_ms:
                break
            times.append(int(time_ms))
            sizes.append(rng.lognormvariate(math.log(0.01), 1.2))
        for label in self.labels:
            if label.kind != "trade_burst":
                continue
            span = label.end_ms - label.start_ms
            if label.magnitude < 0:
                extra = [
                    (rng.randint(0, span), rng.lognormvariate(math.log(3.0), 0.5))
                    for _ in range(int(-label.magnitude))
                ]
            else:
                count = round((label.magnitude - 1.0) * _TRADES_PER_S * span / 1000.0)
                extra = [
                    (rng.randint(0, span), rng.lognormvariate(math.log(0.01), 1.2))
                    for _ in range(count)
                ]
            for offset, size in extra:
                times.append(label.start_ms + offset)
                sizes.append(size)
        order = sorted(range(len(times)), key=times.__getitem__)
        first_id = 45_000 if self.futures else 80_000_000
        out: list[Trade] = []
        for number, position in enumerate(order):
            at_ms = times[position]
            if self.stale.at(at_ms) is not None:
                continue
            side: Side = "buy" if rng.random() < 0.5 else "sell"
            price = self._price(at_ms) * (1.0 + self.basis_bps * _BPS)
            half = price * self.base_spread_bps * math.exp(spread_noise.at(at_ms)) * _BPS / 2.0
            fill = price + half if side == "buy" else price - half
            ident = first_id + number
            out.append(
                Trade(
                    source=self.source,
                    product=self.product,
                    exchange_time_ms=at_ms,
                    received_time_ns=(at_ms + rng.randint(20, 80)) * 1_000_000,
                    side=side,
                    price=round(round(fill / _TICK) * _TICK, 1),
                    qty=round(sizes[position], 4) + 0.0001,
                    trade_id=ident if not self.futures else None,
                    seq=ident if self.futures else None,
                    uid=f"{self.seed:x}-{ident:08x}" if self.futures else None,
                )
            )
        return out
