"""Kraken's two WebSocket dialects: requests out, contract records in.

Pure: a protocol object turns one raw frame and its receive time into contract
records (``Ticker``/``Trade``), ``DeadLetter``s for anything invalid and
``QualityEvent``s for what the feed itself reports. It never touches a socket.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from krakenfeed.contracts import (
    DeadLetter,
    DeadLetterReason,
    QualityEvent,
    QualityKind,
    Ticker,
    Trade,
)
from krakenfeed.contracts.records import Source
from krakenfeed.ingest.dedupe import IdMemory
from krakenfeed.ingest.frames import (
    FuturesData,
    FuturesEvent,
    FuturesHeartbeat,
    FuturesTicker,
    FuturesTrade,
    FuturesTradeItem,
    FuturesTradeSnapshot,
    SpotBareError,
    SpotData,
    SpotHeartbeat,
    SpotResponse,
    SpotStatus,
    SpotTicker,
    SpotTickerItem,
    SpotTrade,
    SpotTradeItem,
)
from krakenfeed.ingest.metrics import IngestMetrics
from krakenfeed.ingest.subscriptions import PacingPolicy, Request, Subscriptions

Output = Ticker | Trade | DeadLetter | QualityEvent

FUTURES_URL = "wss://futures.kraken.com/ws/v1"
SPOT_URL = "wss://ws.kraken.com/v2"

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class ValidationSettings:
    max_clock_skew_ms: int = 5_000
    """Largest accepted |exchange time - receive time| for live frames; 0 disables.
    Snapshots are history and are exempt."""


RATE_LIMIT_MESSAGE = "Exceeded msg rate"


class KrakenProtocol(ABC):
    api: Source
    default_url: str
    requests_per_s: float
    """The pace of subscribe requests: well under the API's limit."""

    def __init__(
        self,
        products: Iterable[str],
        channels: Iterable[str],
        settings: ValidationSettings | None = None,
        metrics: IngestMetrics | None = None,
        pacing: PacingPolicy | None = None,
    ) -> None:
        self.products = tuple(dict.fromkeys(products))
        self.channels = tuple(dict.fromkeys(channels))
        self._known = frozenset(self.products)
        self.settings = settings or ValidationSettings()
        self._skew_ms = self.settings.max_clock_skew_ms
        self.metrics = metrics or IngestMetrics()
        self._frames = self.metrics.frames
        self._last_frame_ns = self.metrics.last_frame_ns
        self.subscriptions = Subscriptions(
            self.channels, self.products, pacing or PacingPolicy(self.requests_per_s)
        )
        self.trade_ids = IdMemory()
        """Trades emitted so far, across every connection of the run."""
        self._ticker_ms: dict[str, int] = {}
        """The exchange time of the latest ticker emitted per product."""

    def subscribe_requests(self) -> list[bytes]:
        """Every subscribe request at once, unpaced: a fresh connection's whole plan."""
        control = self.connected(0)
        return [*self.render(self.subscriptions.due(0, paced=False)), *control]

    def connected(self, now_ns: int) -> list[bytes]:
        """A new connection: resubscribe from scratch. Returns the control requests to
        send at once (the futures heartbeat feed); data subscriptions come paced from
        :meth:`due_requests`."""
        self.subscriptions.reset(now_ns)
        return []

    def due_requests(self, now_ns: int) -> list[bytes]:
        """The subscribe requests due now; also fails requests that were never answered."""
        subscriptions = self.subscriptions
        subscriptions.expire(now_ns)
        return self.render(subscriptions.due(now_ns))

    @abstractmethod
    def render(self, requests: list[Request]) -> list[bytes]:
        """Planned requests as Kraken's wire format."""

    @abstractmethod
    def handle(self, raw: bytes, received_ns: int) -> list[Output]:
        """Decode, validate and normalise one frame."""

    # -- shared validation -------------------------------------------------

    def _dead(
        self,
        raw: bytes,
        received_ns: int,
        reason: DeadLetterReason,
        detail: str,
        product: str | None = None,
        exchange_ms: int | None = None,
    ) -> DeadLetter:
        self.metrics.invalid[reason] += 1
        return DeadLetter(
            source=self.api,
            received_time_ns=received_ns,
            reason=reason,
            detail=detail,
            raw=raw.decode("utf-8", "replace"),
            product=product,
            exchange_time_ms=exchange_ms,
        )

    def _quality(
        self,
        kind: QualityKind,
        received_ns: int,
        detail: str,
        product: str | None = None,
        exchange_time_ms: int | None = None,
        **attributes: str | int | float | bool | None,
    ) -> QualityEvent:
        return QualityEvent(
            source=self.api,
            kind=kind,
            received_time_ns=received_ns,
            detail=detail,
            product=product,
            exchange_time_ms=exchange_time_ms,
            attributes=attributes,
        )

    def _decode_failure(self, raw: bytes, received_ns: int, exc: Exception, tag: str) -> DeadLetter:
        self._frames["invalid"] += 1
        if not isinstance(exc, msgspec.ValidationError):
            return self._dead(raw, received_ns, DeadLetterReason.MALFORMED_JSON, str(exc))
        message = str(exc)
        unknown = message.endswith(f"at `$.{tag}`") or f"missing required field `{tag}`" in message
        reason = DeadLetterReason.UNKNOWN_FRAME if unknown else DeadLetterReason.SCHEMA_MISMATCH
        return self._dead(raw, received_ns, reason, message)

    def _invalid_quote(
        self, product: str, bid: float, ask: float, bid_size: float, ask_size: float
    ) -> tuple[DeadLetterReason, str] | None:
        if product not in self._known:
            return DeadLetterReason.UNKNOWN_PRODUCT, f"product {product!r} was not subscribed"
        if bid <= 0 or ask <= 0 or bid_size <= 0 or ask_size <= 0:
            return (
                DeadLetterReason.NON_POSITIVE,
                f"{product}: bid {bid}, ask {ask}, bid_size {bid_size}, ask_size {ask_size}"
                " must all be positive",
            )
        if bid > ask:
            return DeadLetterReason.CROSSED_QUOTE, f"{product}: bid {bid} > ask {ask}"
        return None

    def _checked_trade(
        self, trade: Trade, exchange_ms: int, raw: bytes, received_ns: int, *, live: bool
    ) -> Trade | DeadLetter:
        """The trade, or the dead letter saying why it is not one. Snapshots are
        history, so only live trades face the clock-skew check."""
        product = trade.product
        problem: tuple[DeadLetterReason, str] | None = None
        if product not in self._known:
            problem = DeadLetterReason.UNKNOWN_PRODUCT, f"product {product!r} was not subscribed"
        elif trade.price <= 0 or trade.qty <= 0:
            problem = (
                DeadLetterReason.NON_POSITIVE,
                f"{product}: price {trade.price} and qty {trade.qty} must be positive",
            )
        elif live:
            problem = self._skewed(exchange_ms, received_ns)
        if problem is not None:
            return self._dead(raw, received_ns, *problem, product=product, exchange_ms=exchange_ms)
        self._last_frame_ns[product] = received_ns
        return trade

    def _skewed(self, exchange_ms: int, received_ns: int) -> tuple[DeadLetterReason, str] | None:
        limit = self.settings.max_clock_skew_ms
        skew = exchange_ms - received_ns // 1_000_000
        if limit and abs(skew) > limit:
            return (
                DeadLetterReason.CLOCK_SKEW,
                f"exchange time {exchange_ms} is {skew} ms from receive time (limit ±{limit} ms)",
            )
        return None

    def _rejected(self, channel: str, product: str, message: str, received_ns: int) -> QualityEvent:
        self.subscriptions.reject(channel, product, message)
        return self._quality(
            QualityKind.SUBSCRIPTION_REJECTED,
            received_ns,
            f"Kraken refused {channel} for {product}: {message}",
            product=product,
            channel=channel,
        )

    def _rate_limited(self, message: str, received_ns: int) -> QualityEvent:
        """Kraken refused a request for its pace: retry it later, slower."""
        retry = self.subscriptions.rate_limited(received_ns)
        return self._quality(
            QualityKind.PROTOCOL_ERROR,
            received_ns,
            message,
            retry=" ".join(f"{c}:{p}" for c, p in retry),
            requests_per_s=self.subscriptions.requests_per_s,
        )


_BACKTICKED = re.compile(r"`([^`]+)`")


class FuturesProtocol(KrakenProtocol):
    """Futures v1: ``event`` frames for control, ``feed``-tagged frames for data."""

    api: Source = "futures"
    default_url = FUTURES_URL
    requests_per_s = 20.0
    """A fifth of the documented 100 requests/s per connection."""

    _data = msgspec.json.Decoder(FuturesData)
    _event = msgspec.json.Decoder(FuturesEvent)

    def connected(self, now_ns: int) -> list[bytes]:
        super().connected(now_ns)
        # Heartbeats prove the connection alive while products are quiet.
        return [_encode({"event": "subscribe", "feed": "heartbeat"})]

    def render(self, requests: list[Request]) -> list[bytes]:
        return [
            _encode({"event": "subscribe", "feed": r.channel, "product_ids": list(r.products)})
            for r in requests
        ]

    def handle(self, raw: bytes, received_ns: int) -> list[Output]:
        # Data frames are the hot path, so they are tried first; control frames
        # (``event`` key) fail that decode and take the slower road.
        try:
            frame = self._data.decode(raw)
        except msgspec.DecodeError as exc:
            if b'"event"' in raw:
                return self._on_event(raw, received_ns)
            return [self._decode_failure(raw, received_ns, exc, "feed")]
        if type(frame) is FuturesTicker:
            self._frames["ticker"] += 1
            return self._ticker(frame, raw, received_ns)
        if type(frame) is FuturesTrade:
            self._frames["trade"] += 1
            return self._trade(frame, raw, received_ns, live=True)
        if type(frame) is FuturesTradeSnapshot:
            self._frames["trade_snapshot"] += 1
            out: list[Output] = []
            for item in sorted(frame.trades, key=_by_seq):
                out.extend(self._trade(item, raw, received_ns, live=False))
            return out
        assert type(frame) is FuturesHeartbeat
        self._frames["heartbeat"] += 1
        return []

    def _ticker(self, frame: FuturesTicker, raw: bytes, received_ns: int) -> list[Output]:
        product = frame.product_id
        # One combined test on the hot path; the per-rule checks only name the failure.
        valid = (
            product in self._known
            and 0 < frame.bid <= frame.ask
            and frame.bid_size > 0
            and frame.ask_size > 0
            and (not self._skew_ms or abs(frame.time - received_ns // 1_000_000) <= self._skew_ms)
        )
        if not valid:
            problem = self._invalid_quote(
                product, frame.bid, frame.ask, frame.bid_size, frame.ask_size
            ) or self._skewed(frame.time, received_ns)
            assert problem is not None
            return [self._dead(raw, received_ns, *problem, product=product, exchange_ms=frame.time)]
        # Every futures ticker is a snapshot keyed by (product, time): one already
        # emitted, or older than one emitted, comes again only after a resubscribe.
        if frame.time <= self._ticker_ms.get(product, -1):
            self.metrics.duplicates += 1
            return []
        self._ticker_ms[product] = frame.time
        self._last_frame_ns[product] = received_ns
        return [
            Ticker(
                source="futures",
                product=product,
                exchange_time_ms=frame.time,
                received_time_ns=received_ns,
                bid=frame.bid,
                ask=frame.ask,
                bid_size=frame.bid_size,
                ask_size=frame.ask_size,
                last=frame.last,
                volume=frame.volume,
                mark_price=frame.markPrice,
                index_price=frame.index,
                premium=frame.premium,
                funding_rate=frame.funding_rate,
                relative_funding_rate=frame.relative_funding_rate,
                open_interest=frame.openInterest,
            )
        ]

    def _trade(
        self, item: FuturesTrade | FuturesTradeItem, raw: bytes, received_ns: int, *, live: bool
    ) -> list[Output]:
        product = item.product_id
        missing = self.trade_ids.admit(product, item.seq)
        if missing is None:
            self.metrics.duplicates += 1
            return []
        out: list[Output] = []
        if missing:
            previous = item.seq - missing - 1
            out.append(
                self._quality(
                    QualityKind.SEQUENCE_GAP,
                    received_ns,
                    f"{product}: trade seq jumped from {previous} to {item.seq};"
                    f" {previous + 1}..{item.seq - 1} missing",
                    product=product,
                    exchange_time_ms=item.time,
                    previous_seq=previous,
                    seq=item.seq,
                    missing=missing,
                )
            )
        trade = Trade(
            source="futures",
            product=product,
            exchange_time_ms=item.time,
            received_time_ns=received_ns,
            side=item.side,
            price=item.price,
            qty=item.qty,
            seq=item.seq,
            uid=item.uid,
        )
        out.append(self._checked_trade(trade, item.time, raw, received_ns, live=live))
        return out

    def _on_event(self, raw: bytes, received_ns: int) -> list[Output]:
        try:
            event = self._event.decode(raw)
        except msgspec.DecodeError as exc:
            return [self._decode_failure(raw, received_ns, exc, "event")]
        self._frames[f"event:{event.event}"] += 1
        products = event.product_ids or []
        if event.event == "subscribed":
            for product in products:
                self.subscriptions.ack(event.feed or "", product)
            return []
        if event.event == "subscribed_failed":
            for product in products:
                self.subscriptions.fail(event.feed or "", product, received_ns)
            return [
                self._quality(
                    QualityKind.PROTOCOL_ERROR,
                    received_ns,
                    f"subscribed_failed for {event.feed} {', '.join(products)}: will retry",
                    channel=event.feed,
                )
            ]
        if event.event in ("alert", "error"):
            if event.message == RATE_LIMIT_MESSAGE:
                return [self._rate_limited(event.message, received_ns)]
            return self._on_error(event.message or "", received_ns)
        return []

    def _on_error(self, message: str, received_ns: int) -> list[Output]:
        """Attribute an alert to the subscription it refuses.

        Futures alerts name the product but not the feed. Kraken answers requests
        in order, so an alert refuses the oldest request still waiting on that product.
        """
        named = _BACKTICKED.findall(message)
        out: list[Output] = []
        for product in named:
            request = self.subscriptions.oldest_waiting(product)
            if request is not None:
                out.append(self._rejected(request.channel, product, message, received_ns))
        if out or any(p in named for _, p in self.subscriptions.rejected):
            return out
        return [self._quality(QualityKind.PROTOCOL_ERROR, received_ns, message)]


def _by_seq(item: FuturesTradeItem) -> int:
    return item.seq


_UNSUPPORTED_PAIR = re.compile(r"Currency pair not supported (\S+)")


class SpotProtocol(KrakenProtocol):
    """Spot v2: ``method`` replies to requests, ``channel``-tagged data frames."""

    api: Source = "spot"
    default_url = SPOT_URL
    requests_per_s = 5.0
    """Kraken does not say; 15 of a 25-request burst succeeded (see the protocol sheet)."""

    _data = msgspec.json.Decoder(SpotData)
    _response = msgspec.json.Decoder(SpotResponse)
    _bare_error = msgspec.json.Decoder(SpotBareError)

    def __init__(
        self,
        products: Iterable[str],
        channels: Iterable[str],
        settings: ValidationSettings | None = None,
        metrics: IngestMetrics | None = None,
        pacing: PacingPolicy | None = None,
    ) -> None:
        super().__init__(products, channels, settings, metrics, pacing)
        self._ticker_content: dict[str, tuple[float | None, ...]] = {}
        """The last ticker emitted per symbol, to know a re-sent snapshot."""

    def render(self, requests: list[Request]) -> list[bytes]:
        out = []
        for request in requests:
            params: dict[str, object] = {
                "channel": request.channel,
                "symbol": list(request.products),
                "snapshot": True,
            }
            if request.channel == "ticker":
                # The default trigger is trades, which hides spread moves between trades.
                params["event_trigger"] = "bbo"
            message = {"method": "subscribe", "params": params, "req_id": request.req_id}
            out.append(_encode(message))
        return out

    def handle(self, raw: bytes, received_ns: int) -> list[Output]:
        # Data frames first, as for futures; replies carry ``method``, and a few
        # errors carry neither ``method`` nor ``channel``.
        try:
            frame = self._data.decode(raw)
        except msgspec.DecodeError as exc:
            if b'"method"' in raw:
                return self._on_response(raw, received_ns)
            if b'"channel"' not in raw:
                return self._on_bare(raw, received_ns)
            return [self._decode_failure(raw, received_ns, exc, "channel")]
        if type(frame) is SpotTicker:
            self._frames["ticker"] += 1
            snapshot = frame.type == "snapshot"
            tickers: list[Output] = []
            for item in frame.data:
                record = self._ticker(item, raw, received_ns, snapshot)
                if record is not None:
                    tickers.append(record)
            return tickers
        if type(frame) is SpotTrade:
            self._frames["trade"] += 1
            return self._trades(frame, raw, received_ns)
        if type(frame) is SpotStatus:
            self._frames["status"] += 1
            return [
                self._quality(
                    QualityKind.EXCHANGE_STATUS,
                    received_ns,
                    f"Kraken spot reports system {item.system!r}",
                    system=item.system,
                )
                for item in frame.data
                if item.system != "online"
            ]
        assert type(frame) is SpotHeartbeat
        self._frames["heartbeat"] += 1
        return []

    def _ticker(
        self, item: SpotTickerItem, raw: bytes, received_ns: int, snapshot: bool
    ) -> Ticker | DeadLetter | None:
        problem = self._invalid_quote(item.symbol, item.bid, item.ask, item.bid_qty, item.ask_qty)
        if problem is not None:
            return self._dead(raw, received_ns, *problem, product=item.symbol)
        # No exchange time to key on: a snapshot re-sent on resubscribe is known by
        # its content being that of the last ticker emitted.
        content = (item.bid, item.ask, item.bid_qty, item.ask_qty, item.last, item.volume)
        if snapshot and self._ticker_content.get(item.symbol) == content:
            self.metrics.duplicates += 1
            return None
        self._ticker_content[item.symbol] = content
        self._last_frame_ns[item.symbol] = received_ns
        return Ticker(
            source="spot",
            product=item.symbol,
            exchange_time_ms=None,
            received_time_ns=received_ns,
            bid=item.bid,
            ask=item.ask,
            bid_size=item.bid_qty,
            ask_size=item.ask_qty,
            last=item.last,
            volume=item.volume,
        )

    def _trades(self, frame: SpotTrade, raw: bytes, received_ns: int) -> list[Output]:
        live = frame.type == "update"
        out: list[Output] = []
        for item in sorted(frame.data, key=_by_trade_id) if not live else frame.data:
            if self.trade_ids.admit(item.symbol, item.trade_id) is None:
                self.metrics.duplicates += 1
                continue
            exchange_ms = int(item.timestamp.timestamp() * 1000)
            trade = Trade(
                source="spot",
                product=item.symbol,
                exchange_time_ms=exchange_ms,
                received_time_ns=received_ns,
                side=item.side,
                price=item.price,
                qty=item.qty,
                trade_id=item.trade_id,
            )
            out.append(self._checked_trade(trade, exchange_ms, raw, received_ns, live=live))
        return out

    def _on_response(self, raw: bytes, received_ns: int) -> list[Output]:
        try:
            response = self._response.decode(raw)
        except msgspec.DecodeError as exc:
            return [self._decode_failure(raw, received_ns, exc, "method")]
        self._frames[f"method:{response.method}"] += 1
        if response.method != "subscribe":
            return []
        if response.success and response.result is not None:
            if response.result.channel and response.result.symbol:
                self.subscriptions.ack(response.result.channel, response.result.symbol)
            return []
        message = response.error or "subscribe failed without an error message"
        if message == RATE_LIMIT_MESSAGE:
            return [self._rate_limited(message, received_ns)]
        request = None if response.req_id is None else self.subscriptions.request(response.req_id)
        pair = _UNSUPPORTED_PAIR.search(message)
        refused = [
            (c, p)
            for c, p in sorted(self.subscriptions.pending)
            if (request is None or (c == request.channel and p in request.waiting))
            and (pair is None or p == pair.group(1))
        ]
        if not refused:
            return [self._quality(QualityKind.PROTOCOL_ERROR, received_ns, message)]
        return [self._rejected(c, p, message, received_ns) for c, p in refused]

    def _on_bare(self, raw: bytes, received_ns: int) -> list[Output]:
        try:
            error = self._bare_error.decode(raw)
        except msgspec.DecodeError as exc:
            return [self._decode_failure(raw, received_ns, exc, "channel")]
        self._frames["error"] += 1
        if error.Error == RATE_LIMIT_MESSAGE:
            return [self._rate_limited(error.Error, received_ns)]
        return [self._quality(QualityKind.PROTOCOL_ERROR, received_ns, error.Error)]


def _by_trade_id(item: SpotTradeItem) -> int:
    return item.trade_id
