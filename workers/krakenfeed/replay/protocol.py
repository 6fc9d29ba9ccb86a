"""What Kraken answers on its public WebSocket APIs, one responder per connection.

Pure: the server feeds in each request's text and sends what comes out, so the
wire facts of shared/KRAKEN_PROTOCOL.md live here and nowhere near a socket.
Where the sheet gives no wording (a spot request that is not JSON, an unknown
method), the messages are ours and say what was wrong.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Set
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import msgspec

from krakenfeed.replay.session import CHANNELS, Channel, Payload, format_rfc3339_us

SPOT_SYSTEM_STATES: Final = ("online", "cancel_only", "maintenance", "post_only")
SPOT_API_VERSION: Final = "2.0.7"
SPOT_REQUEST_BURST: Final = 15
"""Observed: of 25 subscribe requests sent at once, 15 succeeded."""
SPOT_REQUESTS_PER_S: Final = 10.0
"""How fast the allowance refills; Kraken does not say, so this is an assumption."""


@dataclass(frozen=True, slots=True)
class Reply:
    payload: Payload


@dataclass(frozen=True, slots=True)
class SendSnapshot:
    """The server knows the stream position the snapshot must reflect; the responder does not."""

    channel: Channel
    product: str


Step = Reply | SendSnapshot


def _decode_object(text: str) -> dict[str, Any] | None:
    try:
        request = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
    return request if isinstance(request, dict) else None


def _is_text_list(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


class Responder(ABC):
    """One connection's subscriptions and the answers to its requests."""

    heartbeat_when_idle: bool
    """Spot sends heartbeats only when nothing else was sent; futures sends them regardless."""

    def __init__(self, products: Set[str]) -> None:
        self.products = products
        self.subscriptions: set[tuple[Channel, str]] = set()

    @abstractmethod
    def banner(self) -> Payload:
        """The frame Kraken sends as soon as the connection is open."""

    @abstractmethod
    def receive(self, text: str, time_in_ns: int, time_out_ns: int) -> list[Step]:
        """The answers to one request, in order; subscriptions change as a side effect."""

    @property
    @abstractmethod
    def wants_heartbeat(self) -> bool: ...

    @abstractmethod
    def heartbeat(self, now_ns: int) -> Payload: ...


class FuturesResponder(Responder):
    """Futures v1: ``event`` requests, one ack per product, an alert per unknown product."""

    heartbeat_when_idle = False

    def __init__(self, products: Set[str]) -> None:
        super().__init__(products)
        self.heartbeat_subscribed = False

    def banner(self) -> Payload:
        return {"event": "info", "version": 1}

    @property
    def wants_heartbeat(self) -> bool:
        return self.heartbeat_subscribed

    def heartbeat(self, now_ns: int) -> Payload:
        return {"feed": "heartbeat", "time": now_ns // 1_000_000}

    def receive(self, text: str, time_in_ns: int, time_out_ns: int) -> list[Step]:
        request = _decode_object(text)
        if request is None:
            return [Reply(_futures_error("Json Error"))]
        event = request.get("event")
        if event not in ("subscribe", "unsubscribe"):
            # What Kraken answers a JSON ping: keep-alive must use protocol pings.
            return [Reply(_futures_error("Bad websocket message"))]
        feed = request.get("feed")
        if feed == "heartbeat":
            self.heartbeat_subscribed = event == "subscribe"
            return [Reply({"event": f"{event}d", "feed": "heartbeat"})]
        if feed not in CHANNELS:
            return [Reply(_futures_error("Invalid feed"))]
        product_ids = request.get("product_ids")
        if not _is_text_list(product_ids):
            return [Reply(_futures_error("Invalid product id"))]
        steps: list[Step] = []
        for product in product_ids:
            if event == "subscribe":
                steps += self._subscribe(feed, product)
            else:
                steps.append(Reply(self._unsubscribe(feed, product)))
        return steps

    def _subscribe(self, feed: Channel, product: str) -> list[Step]:
        if product not in self.products:
            message = f"Couldn't subscribe to invalid product `{product}`"
            return [Reply({"event": "alert", "message": message})]
        self.subscriptions.add((feed, product))
        ack = Reply({"event": "subscribed", "feed": feed, "product_ids": [product]})
        return [ack, SendSnapshot(feed, product)] if feed == "trade" else [ack]

    def _unsubscribe(self, feed: Channel, product: str) -> Payload:
        if (feed, product) not in self.subscriptions:
            return {"event": "unsubscribed_failed", "feed": feed, "product_ids": [product]}
        self.subscriptions.discard((feed, product))
        return {"event": "unsubscribed", "feed": feed, "product_ids": [product]}


def _futures_error(message: str) -> Payload:
    return {"event": "error", "message": message}


class SpotResponder(Responder):
    """Spot v2: ``method`` requests echoing ``req_id``, one ack or error per symbol."""

    heartbeat_when_idle = True

    def __init__(
        self,
        products: Set[str],
        connection_id: int,
        system: str = "online",
        burst: int = SPOT_REQUEST_BURST,
    ) -> None:
        super().__init__(products)
        self.connection_id = connection_id
        self.system = system
        self.burst = burst
        self._allowance = float(burst)
        self._allowance_at_ns: int | None = None

    def banner(self) -> Payload:
        status = {
            "api_version": "v2",
            "connection_id": self.connection_id,
            "system": self.system,
            "version": SPOT_API_VERSION,
        }
        return {"channel": "status", "type": "update", "data": [status]}

    @property
    def wants_heartbeat(self) -> bool:
        # Kraken sends heartbeats only once something is subscribed.
        return bool(self.subscriptions)

    def heartbeat(self, now_ns: int) -> Payload:
        return {"channel": "heartbeat"}

    def receive(self, text: str, time_in_ns: int, time_out_ns: int) -> list[Step]:
        if not self._allowed(time_in_ns):
            return [Reply({"Error": "Exceeded msg rate"})]
        times = {
            "time_in": format_rfc3339_us(time_in_ns // 1000),
            "time_out": format_rfc3339_us(time_out_ns // 1000),
        }
        request = _decode_object(text)
        if request is None:
            error = {"error": "Malformed request: not a JSON object", "success": False}
            return [Reply({**error, **times})]
        method = request.get("method")
        echo = {"req_id": request["req_id"]} if "req_id" in request else {}
        answer = _SpotAnswer(method, echo, times)
        if method == "ping":
            return [Reply({"method": "pong", **echo, **times})]
        if method not in ("subscribe", "unsubscribe"):
            return [answer.failure(f"Method not supported: {method!r}")]
        params = request.get("params")
        if not isinstance(params, dict):
            return [answer.failure("Missing params object")]
        channel = params.get("channel")
        if channel not in CHANNELS:
            return [answer.failure("Subscription name invalid", timed=False)]
        symbols = params.get("symbol")
        if not _is_text_list(symbols):
            return [answer.failure("symbol must be a non-empty list of pairs")]
        if method == "unsubscribe":
            return [self._unsubscribe(answer, channel, symbol) for symbol in symbols]
        # The defaults differ by channel: only the ticker sends a snapshot unasked.
        snapshot = params.get("snapshot", channel == "ticker")
        if not isinstance(snapshot, bool):
            return [answer.failure(f"snapshot must be true or false, got {snapshot!r}")]
        result: dict[str, Any] = {"channel": channel}
        if channel == "ticker":
            trigger = params.get("event_trigger", "trades")
            if trigger not in ("bbo", "trades"):
                return [answer.failure(f"event_trigger must be bbo or trades, got {trigger!r}")]
            result["event_trigger"] = trigger
        result["snapshot"] = snapshot
        steps: list[Step] = []
        for symbol in symbols:
            if symbol not in self.products:
                steps.append(answer.failure(f"Currency pair not supported {symbol}"))
                continue
            self.subscriptions.add((channel, symbol))
            steps.append(answer.success({**result, "symbol": symbol}))
            if snapshot:
                steps.append(SendSnapshot(channel, symbol))
        return steps

    def _allowed(self, now_ns: int) -> bool:
        """A token bucket, so a client that bursts its resubscriptions sees some refused."""
        if self._allowance_at_ns is not None:
            refill = (now_ns - self._allowance_at_ns) / 1e9 * SPOT_REQUESTS_PER_S
            self._allowance = min(float(self.burst), self._allowance + refill)
        self._allowance_at_ns = now_ns
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True

    def _unsubscribe(self, answer: _SpotAnswer, channel: Channel, symbol: str) -> Step:
        if (channel, symbol) not in self.subscriptions:
            return answer.failure("Subscription Not Found")
        self.subscriptions.discard((channel, symbol))
        return answer.success({"channel": channel, "symbol": symbol})


@dataclass(frozen=True, slots=True)
class _SpotAnswer:
    """What every answer to one spot request repeats, in Kraken's key order."""

    method: object
    echo: dict[str, Any]
    times: dict[str, str]

    def failure(self, message: str, *, timed: bool = True) -> Reply:
        base = {"error": message, "method": self.method, "success": False, **self.echo}
        return Reply({**base, **self.times} if timed else base)

    def success(self, result: Payload) -> Reply:
        ack = {"method": self.method, "result": result, "success": True}
        return Reply({**ack, **self.times, **self.echo})
