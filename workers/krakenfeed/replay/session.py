"""What a replay sends: Kraken's data frames in order, each at its offset from the start.

Pure: a session is built from captured frames or generated from a seed, and the
snapshots Kraken sends on (re)subscribe are derived from it at any stream position,
so a client resubscribing mid-stream sees exactly the trades that preceded it.
Banners, acks and heartbeats are not part of a session: the server makes its own.
"""

from __future__ import annotations

import math
import random
import uuid
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from heapq import merge
from typing import Any, Final, Literal, Protocol, get_args

import msgspec

from krakenfeed.contracts import Source, Ticker, Trade, record_timestamp_ms

Channel = Literal["ticker", "trade"]
CHANNELS: Final[tuple[Channel, ...]] = get_args(Channel)
TimeFormat = Literal["epoch_ms", "rfc3339"]
Payload = dict[str, Any]

FUTURES_SNAPSHOT_TRADES: Final = 100
"""Kraken does not document how many trades its futures ``trade_snapshot`` lists; an assumption."""
SPOT_SNAPSHOT_TRADES: Final = 50
DEFAULT_START_MS: Final = 1_786_046_338_000

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_FUTURES_TIME_KEYS: Final = ("time", "next_funding_rate_time")


@dataclass(frozen=True, slots=True)
class SessionFrame:
    offset_ns: int
    """When the frame is sent, counted from the session's start."""
    channel: Channel
    product: str
    payload: Payload
    """The frame as Kraken sends it, with the session's own exchange times."""
    verbatim: str | None = None
    """Text sent exactly as written instead of ``payload``, for frames a client must
    refuse (malformed JSON, a crossed quote): no time shifting, no part in snapshots."""


@dataclass(frozen=True, slots=True)
class ProductState:
    """What a product looked like just before the session's first frame, so the
    very first subscribe already gets a realistic snapshot."""

    trades: tuple[Payload, ...] = ()
    """Oldest first: futures trade frames, or spot trade items."""
    ticker: Payload | None = None
    """Spot only: the last ticker item; futures ticker frames are snapshots themselves."""


@dataclass(frozen=True, eq=False)
class Session:
    start_ns: int
    """Wall-clock time of offset zero: what time shifting maps to "now"."""
    frames: Mapping[Source, Sequence[SessionFrame]]
    initial: Mapping[Source, Mapping[str, ProductState]] = field(default_factory=dict)
    _positions: dict[tuple[Source, Channel, str], list[int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        positions: dict[tuple[Source, Channel, str], list[int]] = {}
        for api, frames in self.frames.items():
            for index, frame in enumerate(frames):
                if frame.verbatim is None:
                    positions.setdefault((api, frame.channel, frame.product), []).append(index)
        object.__setattr__(self, "_positions", positions)

    def products(self, api: Source) -> frozenset[str]:
        """Every product the session knows, valid for subscription even when it never trades."""
        streamed = {frame.product for frame in self.frames.get(api, ())}
        return frozenset(streamed | set(self.initial.get(api, {})))

    def trade_snapshot(self, api: Source, product: str, position: int) -> Payload:
        """The trade snapshot Kraken sends to a subscriber that has seen ``position`` frames."""
        if api == "futures":
            trades = self._recent_trades(api, product, position, FUTURES_SNAPSHOT_TRADES)
            return {"feed": "trade_snapshot", "product_id": product, "trades": trades[::-1]}
        trades = self._recent_trades(api, product, position, SPOT_SNAPSHOT_TRADES)
        return {"channel": "trade", "type": "snapshot", "data": trades}

    def ticker_snapshot(self, api: Source, product: str, position: int) -> Payload | None:
        """The spot ticker snapshot at ``position``, or None when no quote is known yet."""
        if api == "futures":
            return None
        frames = self.frames.get(api, ())
        positions = self._positions.get((api, "ticker", product), [])
        before = bisect_left(positions, position)
        if before:
            items = frames[positions[before - 1]].payload["data"]
            return {"channel": "ticker", "type": "snapshot", "data": list(items)}
        ticker = self.initial.get(api, {}).get(product, ProductState()).ticker
        if ticker is None:
            return None
        return {"channel": "ticker", "type": "snapshot", "data": [ticker]}

    def _recent_trades(self, api: Source, product: str, position: int, limit: int) -> list[Payload]:
        """The last ``limit`` trades before ``position``, oldest first."""
        frames = self.frames.get(api, ())
        positions = self._positions.get((api, "trade", product), [])
        batches: list[Sequence[Payload]] = []
        count = 0
        for index in reversed(positions[: bisect_left(positions, position)]):
            payload = frames[index].payload
            batch: Sequence[Payload] = [payload] if api == "futures" else payload["data"]
            batches.append(batch)
            count += len(batch)
            if count >= limit:
                break
        if count < limit:
            batches.append(self.initial.get(api, {}).get(product, ProductState()).trades)
        trades = [trade for batch in reversed(batches) for trade in batch]
        return trades[-limit:]


def merge_sessions(*sessions: Session) -> Session:
    """One session from several on a common clock, such as a futures and a spot one."""
    if not sessions:
        raise ValueError("merge_sessions needs at least one session")
    start_ns = min(session.start_ns for session in sessions)
    frames: dict[Source, list[SessionFrame]] = {}
    initial: dict[Source, dict[str, ProductState]] = {}
    for api in ("futures", "spot"):
        shifted = [
            [
                SessionFrame(
                    frame.offset_ns + session.start_ns - start_ns,
                    frame.channel,
                    frame.product,
                    frame.payload,
                    frame.verbatim,
                )
                for frame in session.frames.get(api, ())
            ]
            for session in sessions
        ]
        frames[api] = list(merge(*shifted, key=lambda frame: frame.offset_ns))
        initial[api] = {}
        for session in sessions:
            initial[api].update(session.initial.get(api, {}))
    return Session(start_ns=start_ns, frames=frames, initial=initial)


# --- exchange times ----------------------------------------------------------


def parse_rfc3339_us(text: str) -> int:
    """``2024-07-27T21:16:00.512060Z`` → microseconds since the epoch, exactly."""
    return (datetime.fromisoformat(text) - _EPOCH) // timedelta(microseconds=1)


def format_rfc3339_us(epoch_us: int) -> str:
    """Kraken spot's timestamp form: always six fractional digits and ``Z``."""
    moment = _EPOCH + timedelta(microseconds=epoch_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def map_exchange_times(
    api: Source, payload: Payload, change: Callable[[int, TimeFormat], object]
) -> Payload:
    """A copy of a frame with each exchange time replaced by ``change(epoch_us, format)``.

    The one place that knows where Kraken puts its times, so that shifting a frame and
    pre-rendering it for the wire can never disagree. ``maturityTime`` is left alone:
    it must keep matching the date in a fixed-maturity product id.
    """
    copy = dict(payload)
    if api == "futures":
        for key in _FUTURES_TIME_KEYS:
            value = copy.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                copy[key] = change(value * 1000, "epoch_ms")
        trades = copy.get("trades")
        if isinstance(trades, list):
            copy["trades"] = [
                map_exchange_times(api, trade, change) if isinstance(trade, dict) else trade
                for trade in trades
            ]
        return copy
    data = copy.get("data")
    if isinstance(data, list):
        copy["data"] = [
            {**item, "timestamp": change(parse_rfc3339_us(item["timestamp"]), "rfc3339")}
            if isinstance(item, dict) and isinstance(item.get("timestamp"), str)
            else item
            for item in data
        ]
    return copy


def shift_times(api: Source, payload: Payload, delta_ms: int) -> Payload:
    """A copy of a frame with every exchange time moved by ``delta_ms``, so that an old
    capture looks fresh to a client that checks clock skew."""

    def shifted(epoch_us: int, form: TimeFormat) -> object:
        if form == "epoch_ms":
            return epoch_us // 1000 + delta_ms
        return format_rfc3339_us(epoch_us + delta_ms * 1000)

    return map_exchange_times(api, payload, shifted)


# --- from a capture ----------------------------------------------------------


class RawFrame(Protocol):
    """A frame as captured; :class:`krakenfeed.replay.capture.CapturedFrame` is one."""

    @property
    def received_time_ns(self) -> int: ...
    @property
    def api(self) -> Source: ...
    @property
    def frame(self) -> str: ...


class _CaptureBuilder:
    """Sorts captured frames into streamed frames and the products' opening state."""

    def __init__(self) -> None:
        self.kept: list[tuple[int, Source, Channel, str, Payload]] = []
        self.initial: dict[Source, dict[str, ProductState]] = {"futures": {}, "spot": {}}
        self._streamed: set[tuple[Source, Channel, str]] = set()

    def add(self, raw: RawFrame) -> None:
        try:
            payload = msgspec.json.decode(raw.frame)
        except msgspec.DecodeError:
            return
        if not isinstance(payload, dict):
            return
        if raw.api == "futures":
            self._add_futures(raw.received_time_ns, payload)
        else:
            self._add_spot(raw.received_time_ns, payload)

    def _keep(
        self, received_ns: int, api: Source, channel: Channel, product: str, payload: Payload
    ) -> None:
        self.kept.append((received_ns, api, channel, product, payload))
        self._streamed.add((api, channel, product))

    def _opening(self, api: Source, channel: Channel, product: str) -> ProductState | None:
        """The product's opening state, or None once the capture has streamed the channel:
        a later snapshot repeats trades the stream already has."""
        if (api, channel, product) in self._streamed:
            return None
        return self.initial[api].get(product, ProductState())

    def _add_futures(self, received_ns: int, payload: Payload) -> None:
        feed = payload.get("feed")
        product = payload.get("product_id")
        if not isinstance(product, str):
            return
        if feed in CHANNELS:
            self._keep(received_ns, "futures", feed, product, payload)
        elif feed == "trade_snapshot" and isinstance(payload.get("trades"), list):
            state = self._opening("futures", "trade", product)
            if state is not None and not state.trades:
                trades = tuple(t for t in reversed(payload["trades"]) if isinstance(t, dict))
                self.initial["futures"][product] = ProductState(trades, state.ticker)

    def _add_spot(self, received_ns: int, payload: Payload) -> None:
        channel = payload.get("channel")
        data = payload.get("data")
        if channel not in CHANNELS or not isinstance(data, list):
            return
        by_symbol: dict[str, list[Payload]] = {}
        for item in data:
            if isinstance(item, dict) and isinstance(item.get("symbol"), str):
                by_symbol.setdefault(item["symbol"], []).append(item)
        for symbol, items in by_symbol.items():
            if payload.get("type") != "snapshot":
                frame = {**payload, "data": items}
                self._keep(received_ns, "spot", channel, symbol, frame)
                continue
            state = self._opening("spot", channel, symbol)
            if state is None:
                continue
            if channel == "trade" and not state.trades:
                state = ProductState(tuple(items), state.ticker)
            elif channel == "ticker" and state.ticker is None:
                state = ProductState(state.trades, items[-1])
            self.initial["spot"][symbol] = state


def session_from_capture(frames: Iterable[RawFrame]) -> Session:
    """The ticker and trade frames of a capture, at the offsets they were received.

    The first snapshot of each product becomes its opening state; later ones (after a
    reconnect in the recording) are dropped, since the server derives snapshots from
    the trades it streams. Everything else (banners, acks, heartbeats, other feeds)
    is dropped too: the server answers those itself.
    """
    builder = _CaptureBuilder()
    for raw in frames:
        builder.add(raw)
    if not builder.kept:
        raise ValueError("the capture holds no ticker or trade frame to replay")
    start_ns = min(received for received, *_ in builder.kept)
    session_frames: dict[Source, list[SessionFrame]] = {"futures": [], "spot": []}
    for received, api, channel, product, payload in builder.kept:
        session_frames[api].append(SessionFrame(received - start_ns, channel, product, payload))
    return Session(start_ns=start_ns, frames=session_frames, initial=builder.initial)


# --- generated ---------------------------------------------------------------


def generate_session(
    api: Source,
    products: Sequence[str],
    channels: Sequence[Channel] = CHANNELS,
    *,
    count_per_product_channel: int = 100,
    start_ms: int = DEFAULT_START_MS,
    seed: int = 0,
) -> Session:
    """Seeded, realistic frames: the same arguments give the same session.

    Each product follows one random-walk market, so its ticker and its trades agree
    (trades print at the bid or ask the ticker shows; bid < ask always).
    """
    _check_products(api, products)
    unknown = set(channels) - set(CHANNELS)
    if unknown:
        raise ValueError(f"unknown channels {sorted(unknown)}; allowed: {', '.join(CHANNELS)}")
    if count_per_product_channel < 0:
        raise ValueError(f"count_per_product_channel must be >= 0, got {count_per_product_channel}")
    streams: list[list[SessionFrame]] = []
    initial: dict[str, ProductState] = {}
    for product in products:
        market = _Market(api, product, random.Random(f"{seed}:{api}:{product}"), start_ms * 1000)
        streams.append(market.run(channels, count_per_product_channel))
        initial[product] = market.opening
    frames = list(merge(*streams, key=lambda frame: frame.offset_ns))
    return Session(start_ns=start_ms * 1_000_000, frames={api: frames}, initial={api: initial})


def _check_products(api: Source, products: Sequence[str]) -> None:
    if not products:
        raise ValueError("generate_session needs at least one product")
    duplicates = sorted({p for p in products if products.count(p) > 1})
    if duplicates:
        raise ValueError(f"products listed twice: {duplicates}")
    for product in products:
        if ("/" in product) != (api == "spot"):
            example = "BTC/USD" if api == "spot" else "PF_XBTUSD"
            raise ValueError(f"{api} product ids look like {example}; got {product!r}")


_BASE_PRICES: Final = (("XBT", 64_400.0), ("BTC", 64_400.0), ("ETH", 3_400.0), ("SOL", 150.0))
_HOUR_MS: Final = 3_600_000
_DAY_MS: Final = 86_400_000


class _Market:
    """One product's random-walk book top, from which its frames are read off."""

    def __init__(self, api: Source, product: str, rng: random.Random, start_us: int) -> None:
        self.api = api
        self.product = product
        self.rng = rng
        self.start_us = start_us
        base = next((price for name, price in _BASE_PRICES if name in product), None)
        self.mid = base if base is not None else 10 ** rng.uniform(-1.0, 3.0)
        self.tick = _tick(self.mid, api)
        self.inverse = product.startswith(("PI_", "FI_"))
        self.open = self._on_tick(self.mid * (1 + rng.gauss(0.0, 0.01)))
        self.high = max(self.open, self.mid) * (1 + abs(rng.gauss(0.0, 0.005)))
        self.low = min(self.open, self.mid) * (1 - abs(rng.gauss(0.0, 0.005)))
        self.volume = rng.uniform(1_000.0, 5_000.0) * (self.mid if self.inverse else 1.0)
        self.volume_quote = self.volume * (1.0 if self.inverse else self.mid)
        self.open_interest = self.volume * rng.uniform(0.3, 0.8)
        self.last = self._on_tick(self.mid)
        self.bid, self.ask = self._quote()
        self.trade_id = rng.randint(10_000_000, 90_000_000)
        self.now_us = start_us - 3_600_000_000  # the walk starts before the history does
        self.opening = ProductState()

    def run(self, channels: Sequence[Channel], count: int) -> list[SessionFrame]:
        futures = self.api == "futures"
        history_length = FUTURES_SNAPSHOT_TRADES if futures else SPOT_SNAPSHOT_TRADES
        history: list[Payload] = []
        for at_us in reversed(self._arrivals(self.start_us, -1, history_length, 250_000)):
            self._walk_to(at_us)
            history.extend(self._trades(at_us, 1))
        self._walk_to(self.start_us)
        ticker = None if futures else self._ticker(self.start_us)
        self.opening = ProductState(tuple(history), ticker)

        events: list[tuple[int, Channel]] = []
        if "ticker" in channels:
            events += [(at_us, "ticker") for at_us in self._ticker_times(count)]
        if "trade" in channels:
            mean_gap_us = 250_000 if futures else 300_000
            events += [(t, "trade") for t in self._arrivals(self.start_us, 1, count, mean_gap_us)]
        events.sort(key=lambda event: event[0])
        frames = []
        for at_us, channel in events:
            self._walk_to(at_us)
            if channel == "trade":
                trades = self._trades(at_us, 1 if futures else self._batch())
                payload = trades[0] if futures else _spot_frame("trade", trades)
            else:
                ticker = self._ticker(at_us)
                payload = ticker if futures else _spot_frame("ticker", [ticker])
            offset_ns = (at_us - self.start_us) * 1000
            frames.append(SessionFrame(offset_ns, channel, self.product, payload))
        return frames

    def _arrivals(self, origin_us: int, direction: int, count: int, mean_gap_us: int) -> list[int]:
        """Poisson arrival times walking away from ``origin_us``, never at it."""
        times: list[int] = []
        at_us = origin_us
        for _ in range(count):
            at_us += direction * (1 + int(self.rng.expovariate(1.0 / mean_gap_us)))
            times.append(at_us)
        return times

    def _ticker_times(self, count: int) -> list[int]:
        if self.api == "spot":
            return self._arrivals(self.start_us, 1, count, 500_000)
        # Kraken publishes a futures ticker at most once a second per product.
        at_us = self.start_us + self.rng.randint(0, 999_999)
        times = []
        for _ in range(count):
            times.append(at_us)
            at_us += 1_000_000 + self.rng.randint(0, 200_000)
        return times

    def _walk_to(self, at_us: int) -> None:
        seconds = max(at_us - self.now_us, 0) / 1e6
        self.now_us = max(self.now_us, at_us)
        self.mid *= math.exp(self.rng.gauss(0.0, 1e-4 * math.sqrt(seconds)))
        self.bid, self.ask = self._quote()

    def _quote(self) -> tuple[float, float]:
        bid = max(self.tick, math.floor(self.mid / self.tick - 0.5) * self.tick)
        spread_ticks = self.rng.choice((1, 1, 1, 2, 3))
        return self._on_tick(bid), self._on_tick(bid + spread_ticks * self.tick)

    def _on_tick(self, price: float) -> float:
        """A price on the tick grid, never below one tick."""
        return max(self.tick, self._round(price))

    def _round(self, value: float) -> float:
        decimals = max(0, -math.floor(math.log10(self.tick)))
        return round(round(value / self.tick) * self.tick, decimals)

    def _qty(self) -> float:
        """Contracts on inverse futures, coins elsewhere; spot has the wire's dust sizes."""
        if self.inverse:
            return float(self.rng.randint(1, 5_000))
        if self.api == "spot" and self.rng.random() < 0.05:
            return round(self.rng.uniform(1e-6, 1e-5), 9)
        coins = self.rng.expovariate(2.0) / max(self.mid / 1_000.0, 1.0)
        return round(coins + 1e-4, 4 if self.api == "futures" else 8)

    def _batch(self) -> int:
        return self.rng.choices((1, 2, 3), weights=(7, 2, 1))[0]

    def _trades(self, at_us: int, count: int) -> list[Payload]:
        trades = []
        for _ in range(count):
            side = "buy" if self.rng.random() < 0.5 else "sell"
            price = self.ask if side == "buy" else self.bid
            qty = self._qty()
            self.last = price
            self.high, self.low = max(self.high, price), min(self.low, price)
            self.volume += qty
            self.volume_quote += qty if self.inverse else qty * price
            self.trade_id += 1
            trades.append(self._trade(at_us, side, price, qty))
        return trades

    def _trade(self, at_us: int, side: str, price: float, qty: float) -> Payload:
        if self.api == "futures":
            return {
                "product_id": self.product,
                "feed": "trade",
                "uid": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "side": side,
                "type": "fill" if self.rng.random() < 0.99 else "liquidation",
                "time": at_us // 1000,
                "qty": qty,
                "price": price,
                "seq": self.trade_id,
            }
        return {
            "symbol": self.product,
            "side": side,
            "price": price,
            "qty": qty,
            "ord_type": "limit" if self.rng.random() < 0.7 else "market",
            "trade_id": self.trade_id,
            "timestamp": format_rfc3339_us(at_us),
        }

    def _ticker(self, at_us: int) -> Payload:
        change = self.last - self.open
        if self.api == "spot":
            return {
                "symbol": self.product,
                "bid": self.bid,
                "bid_qty": self._qty(),
                "ask": self.ask,
                "ask_qty": self._qty(),
                "last": self.last,
                "volume": round(self.volume, 8),
                "vwap": self._on_tick(self.volume_quote / self.volume),
                "low": self._on_tick(self.low),
                "high": self._on_tick(self.high),
                "change": self._round(change),
                "change_pct": round(100 * change / self.open, 2),
            }
        return self._futures_ticker(at_us // 1000, change)

    def _futures_ticker(self, time_ms: int, change: float) -> Payload:
        rng = self.rng
        index = round(self.mid * (1 + rng.gauss(0.0, 5e-5)), 2)
        mark = self.mid * (1 + rng.gauss(0.0, 2e-5))
        relative = rng.gauss(0.0, 3e-6)
        relative_prediction = rng.gauss(relative, 1e-6)
        self.open_interest = max(self.open_interest * (1 + rng.gauss(0.0, 1e-4)), 1.0)
        maturity_ms = _maturity_ms(self.product)
        return {
            "time": time_ms,
            "product_id": self.product,
            "funding_rate": relative * index,
            "funding_rate_prediction": relative_prediction * index,
            "relative_funding_rate": relative,
            "relative_funding_rate_prediction": relative_prediction,
            "next_funding_rate_time": (time_ms // _HOUR_MS + 1) * _HOUR_MS,
            "leverage": "50x",
            "premium": round(100 * (mark - index) / index, 1),
            "feed": "ticker",
            "bid": self.bid,
            "ask": self.ask,
            "bid_size": self._qty(),
            "ask_size": self._qty(),
            "volume": round(self.volume, 4),
            "dtm": max(0, (maturity_ms - time_ms) // _DAY_MS) if maturity_ms else 0,
            "index": index,
            "last": self.last,
            "change": round(100 * change / self.open, 2),
            "suspended": False,
            "tag": "month" if maturity_ms else "perpetual",
            "pair": _pair(self.product),
            "openInterest": round(self.open_interest, 4),
            "markPrice": mark,
            "maturityTime": maturity_ms,
            "post_only": False,
            "volumeQuote": round(self.volume_quote, 4),
            "open": self.open,
            "high": self._on_tick(self.high),
            "low": self._on_tick(self.low),
        }


def _spot_frame(channel: Channel, data: list[Payload]) -> Payload:
    return {"channel": channel, "type": "update", "data": data}


def _tick(price: float, api: Source) -> float:
    """Coarse like Kraken's: whole dollars on a futures BTC, cents on a spot BTC."""
    digits = math.floor(math.log10(price))
    return float(10 ** (digits - (4 if api == "futures" else 5)))


def _pair(product: str) -> str:
    """``PF_XBTUSD`` / ``FI_XBTUSD_260925`` → ``XBT:USD``."""
    name = product.split("_")[1] if "_" in product else product
    return f"{name[:-3]}:{name[-3:]}"


def _maturity_ms(product: str) -> int:
    """The expiry of a fixed-maturity ``FI_…_YYMMDD`` product; 0 for perpetuals."""
    parts = product.split("_")
    if len(parts) != 3 or not parts[2].isdigit() or len(parts[2]) != 6:
        return 0
    expiry = datetime.strptime(parts[2], "%y%m%d").replace(hour=16, tzinfo=UTC)
    return (expiry - _EPOCH) // timedelta(milliseconds=1)


def session_from_records(records: Iterable[Ticker | Trade]) -> Session:
    """Contract records back into the Kraken frames they would have come from.

    The inverse of ingest's normalisation, so that a labelled market
    (``krakenfeed.market``) can be replayed through the whole pipeline.
    """
    ordered = sorted(records, key=record_timestamp_ms)
    if not ordered:
        raise ValueError("session_from_records needs at least one record")
    start_ms = record_timestamp_ms(ordered[0])
    frames: dict[Source, list[SessionFrame]] = {"futures": [], "spot": []}
    for record in ordered:
        offset_ns = (record_timestamp_ms(record) - start_ms) * 1_000_000
        channel: Channel = "ticker" if isinstance(record, Ticker) else "trade"
        payload = _futures_frame(record) if record.source == "futures" else _spot_frame_of(record)
        frames[record.source].append(SessionFrame(offset_ns, channel, record.product, payload))
    return Session(start_ns=start_ms * 1_000_000, frames=frames)


def _futures_frame(record: Ticker | Trade) -> Payload:
    if isinstance(record, Trade):
        return {
            "feed": "trade", "product_id": record.product, "uid": record.uid,
            "side": record.side, "type": "fill", "time": record.exchange_time_ms,
            "qty": record.qty, "price": record.price, "seq": record.seq,
        }  # fmt: skip
    return {
        "feed": "ticker", "product_id": record.product, "time": record.exchange_time_ms,
        "bid": record.bid, "ask": record.ask, "bid_size": record.bid_size,
        "ask_size": record.ask_size, "last": record.last, "volume": record.volume,
        "markPrice": record.mark_price, "index": record.index_price,
        "premium": record.premium, "funding_rate": record.funding_rate,
        "relative_funding_rate": record.relative_funding_rate,
        "openInterest": record.open_interest,
    }  # fmt: skip


def _spot_frame_of(record: Ticker | Trade) -> Payload:
    if isinstance(record, Trade):
        assert record.exchange_time_ms is not None
        item: Payload = {
            "symbol": record.product, "side": record.side, "price": record.price,
            "qty": record.qty, "ord_type": "limit", "trade_id": record.trade_id,
            "timestamp": format_rfc3339_us(record.exchange_time_ms * 1000),
        }  # fmt: skip
        return _spot_frame("trade", [item])
    item = {
        "symbol": record.product, "bid": record.bid, "bid_qty": record.bid_size,
        "ask": record.ask, "ask_qty": record.ask_size, "last": record.last,
        "volume": record.volume,
    }  # fmt: skip
    return _spot_frame("ticker", [item])
