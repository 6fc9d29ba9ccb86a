"""The ingest worker's I/O: one Kraken WebSocket in, the feed's Kafka topics out.

The read loop is deliberately flat — receive, hand the bytes to the pure protocol,
produce what comes back — because it runs once per frame at up to ~100k frames/s.
Everything else is decided in pure code (``resilience``, ``subscriptions``) and
only carried out here:

- connect, and on any retryable disconnect reconnect after the backoff's delay,
  for ever; a terminal close or upgrade status logs one line and exits 2;
- after connecting, send the planner's paced subscribe requests, reading with a
  timeout until every product is acked or refused; then read blocking, since a
  socket timeout costs a poll() before every recv();
- a monitor thread pings, closes a socket that has been silent beyond the
  watchdog (which wakes the blocked read) and reports stale products. It watches
  the loop's latest frame time change on a monotonic clock, so the loop pays one
  attribute store per frame and a wall-clock step never fakes a silence.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

from krakenfeed.contracts import (
    DeadLetter,
    FeedId,
    QualityEvent,
    QualityKind,
    Stream,
    Ticker,
    Trade,
    encode_record,
    record_key,
    record_timestamp_ms,
)
from krakenfeed.contracts.records import Source
from krakenfeed.ingest.metrics import IngestMetrics
from krakenfeed.ingest.protocol import (
    FuturesProtocol,
    KrakenProtocol,
    SpotProtocol,
    ValidationSettings,
)
from krakenfeed.ingest.resilience import (
    Backoff,
    BackoffPolicy,
    Disconnect,
    Watchdog,
    classify_close,
    classify_upgrade,
    dropped,
    silent,
    unreachable,
)
from krakenfeed.ingest.subscriptions import PacingPolicy
from krakenfeed.kafka import StreamingProducer, contract_topics, make_application
from krakenfeed.replay.capture import CaptureWriter
from krakenfeed.telemetry import Tracing

log = logging.getLogger(__name__)

_PROTOCOLS: dict[str, type[KrakenProtocol]] = {"futures": FuturesProtocol, "spot": SpotProtocol}
_STREAMS: dict[type, Stream] = {
    Ticker: Stream.TICKER,
    Trade: Stream.TRADE,
    DeadLetter: Stream.DLQ,
    QualityEvent: Stream.QUALITY,
}
_SHUTDOWN_FLUSH_S = 3.0
_CONNECT_TIMEOUT_S = 10.0
_MIN_READ_TIMEOUT_S = 0.001
_RECOVERIES_KEPT = 1_000
_UNSETTLED = Disconnect("a subscription needs asking again", terminal=False)
"""What the read loop returns when the connection is fine but the plan has work."""
EXIT_TERMINAL = 2
"""The exit status after a terminal close or upgrade refusal."""


@dataclass(frozen=True)
class IngestSettings:
    feed: FeedId
    api: Source
    products: tuple[str, ...]
    channels: tuple[str, ...]
    broker: str
    url: str | None = None
    max_clock_skew_ms: int = 5_000
    capture: Path | None = None
    ping_interval_s: float = 20.0
    watchdog_s: float = 30.0
    """Reconnect when no frame at all (heartbeats included) came for this long."""
    stale_after_s: float = 120.0
    stale_after_product: dict[str, float] = field(default_factory=dict)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    ack_timeout_s: float = 5.0
    """A subscribe request unanswered this long is sent again."""


@dataclass(frozen=True)
class Recovery:
    """One reconnect, for the reconnect event and the recovery benchmark."""

    cause: str
    dropped_ns: int
    connected_ns: int
    attempts: int
    first_record_ns: int | None = None
    """When the first ticker or trade after resubscribing went to the producer."""


class IngestWorker:
    def __init__(
        self,
        settings: IngestSettings,
        clock_ns: Callable[[], int] = time.time_ns,
        rng: Callable[[], float] = random.random,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self._tracing = tracing
        """A ``send`` span per sampled burst of records, its context in their headers."""
        self.metrics = IngestMetrics()
        protocol = _PROTOCOLS[settings.api]
        self.protocol = protocol(
            settings.products,
            settings.channels,
            ValidationSettings(max_clock_skew_ms=settings.max_clock_skew_ms),
            self.metrics,
            PacingPolicy(protocol.requests_per_s, ack_timeout_s=settings.ack_timeout_s),
        )
        self.url = settings.url or self.protocol.default_url
        self._clock_ns = clock_ns
        """Receive times, as recorded; the watchdog and pings use ``monotonic_ns``,
        so that a step of the wall clock never looks like a silent socket."""
        self._monotonic_ns = monotonic_ns
        self._rng = rng
        self.watchdog = Watchdog(
            settings.watchdog_s, settings.stale_after_s, dict(settings.stale_after_product)
        )
        self._watchdog_lock = threading.Lock()
        self.recoveries: deque[Recovery] = deque(maxlen=_RECOVERIES_KEPT)
        """The latest reconnects with their first record, for benchmarks and tests."""
        self.connections = 0
        self.monitor_beat_ns = monotonic_ns()
        """When the monitor thread last ticked (monotonic): the liveness probe's clock."""
        self._stop = threading.Event()
        self._ws: websocket.WebSocket | None = None
        self._last_frame_ns = 0
        """Receive time of the latest frame of any kind; the monitor thread reads it."""
        self._silence: Disconnect | None = None
        self._delivery_error: str | None = None
        self._producer: StreamingProducer | None = None
        self._app = make_application(
            settings.broker,
            # Delivery reports only for failures: successes cost nothing on the hot path.
            producer_extra_config={"delivery.report.only.error": True},
        )
        declared = contract_topics(
            self._app, settings.broker, settings.feed, list(_STREAMS.values())
        )
        self._topics = {kind: declared[stream].name for kind, stream in _STREAMS.items()}

    @property
    def connected(self) -> bool:
        """Whether a WebSocket to Kraken is open (subscribing or streaming)."""
        return self._ws is not None

    def stop(self) -> None:
        """Ask the loop to finish; safe from a signal handler or another thread.

        Shutting the socket down wakes a receive that is waiting on a quiet feed,
        so the worker stops at once rather than after its receive timeout.
        """
        self._stop.set()
        self._abort()

    def _abort(self) -> None:
        ws = self._ws
        if ws is not None and ws.sock is not None:
            with contextlib.suppress(OSError):
                ws.sock.shutdown(socket.SHUT_RDWR)

    def _on_delivery(self, error: Any, message: Any) -> None:
        if error is not None:
            self._delivery_error = f"{message.topic()}: {error}"
            self.stop()

    def run(self) -> int:
        """Read until stopped: 0 after a clean stop, 2 after a terminal close or upgrade
        refusal, 1 when records could not be delivered."""
        log.info(
            "ingesting %s %s for %s from %s",
            self.settings.api,
            ",".join(self.settings.channels),
            ",".join(self.settings.products),
            self.url,
        )
        with ExitStack() as stack:
            producer = stack.enter_context(StreamingProducer(self._app))
            self._producer = producer
            capture = (
                stack.enter_context(CaptureWriter(self.settings.capture))
                if self.settings.capture
                else None
            )
            monitor = threading.Thread(target=self._monitor, name="ingest-monitor", daemon=True)
            monitor.start()
            try:
                outcome = self._connections(producer, capture)
            finally:
                self._stop.set()
                monitor.join()
                left = producer.flush(timeout=_SHUTDOWN_FLUSH_S)
            log.info(
                "stopped after %d frames; produced %s; invalid %s",
                self.metrics.frames.total(),
                dict(self.metrics.produced),
                {str(reason): n for reason, n in self.metrics.invalid.items()},
            )
            if left:
                log.error("%d records were not delivered to Kafka before shutdown", left)
                return 1
            if self._delivery_error:
                log.error("Kafka delivery failed, stopping: %s", self._delivery_error)
                return 1
            return outcome

    # --- connections -----------------------------------------------------------

    def _connections(self, producer: StreamingProducer, capture: CaptureWriter | None) -> int:
        """Connect, pump, and reconnect after every retryable disconnect."""
        backoff = Backoff(self.settings.backoff, self._rng)
        down: Disconnect | None = None
        """Why the last connection ended; None before the first one."""
        down_since_ns = 0
        attempts = 0
        last_failure: Disconnect | None = None
        while not self._stop.is_set():
            if last_failure is not None:
                delay = backoff.next_delay_s()
                attempts += 1
                log.warning(
                    "reconnect attempt %d in %.2f s after: %s", attempts, delay, last_failure.cause
                )
                if self._stop.wait(delay):
                    break
            ws, failure = self._open()
            if ws is None:
                assert failure is not None
                self.metrics.connect_failures[failure.kind] += 1
                if failure.terminal:
                    return self._terminal(failure)
                last_failure = failure
                continue
            connected_ns = self._clock_ns()
            backoff.connected(connected_ns)
            recovery = None
            if down is not None:
                self.metrics.reconnects[down.kind] += 1
                recovery = Recovery(down.cause, down_since_ns, connected_ns, attempts)
                self._reconnected(recovery, producer)
            self.connections += 1
            attempts = 0
            ended = self._serve(ws, producer, capture, recovery, connected_ns)
            if ended is None:
                break
            now = self._clock_ns()
            backoff.disconnected(now)
            if ended.terminal:
                return self._terminal(ended)
            log.warning("connection to %s lost: %s", self.url, ended.cause)
            down, down_since_ns, last_failure = ended, now, ended
        log.info("stop requested: flushing and closing")
        return 0

    def _open(self) -> tuple[websocket.WebSocket | None, Disconnect | None]:
        try:
            ws = websocket.create_connection(
                self.url, timeout=_CONNECT_TIMEOUT_S, skip_utf8_validation=True
            )
        except websocket.WebSocketBadStatusException as exc:
            return None, classify_upgrade(exc.status_code, exc.status_message or "")
        except (OSError, websocket.WebSocketException) as exc:
            return None, unreachable(f"{self.url}: {exc}")
        return ws, None

    def _terminal(self, reason: Disconnect) -> int:
        log.error(
            "terminal: %s from %s; not reconnecting (a supervisor should back off)",
            reason.cause,
            self.url,
        )
        return EXIT_TERMINAL

    def _reconnected(self, recovery: Recovery, producer: StreamingProducer) -> None:
        downtime_s = (recovery.connected_ns - recovery.dropped_ns) / 1e9
        event = QualityEvent(
            source=self.settings.api,
            kind=QualityKind.RECONNECT,
            received_time_ns=recovery.connected_ns,
            detail=(
                f"reconnected after {downtime_s:.3f} s down"
                f" ({recovery.attempts} attempt{'s' if recovery.attempts != 1 else ''}):"
                f" {recovery.cause}"
            ),
            attributes={
                "cause": recovery.cause,
                "downtime_ms": round(downtime_s * 1000, 3),
                "attempts": recovery.attempts,
            },
        )
        self._produce(producer, event)
        _log_quality(event)

    def _produce(self, producer: StreamingProducer, record: Any) -> None:
        """The slow path's produce, for records outside the read loop."""
        self._send(producer, record)
        self.metrics.produced[type(record).__name__] += 1

    def _send(self, producer: StreamingProducer, record: Any) -> None:
        topic, key = self._topics[type(record)], record_key(record)
        with (
            self._tracing.sending(topic, key) if self._tracing else contextlib.nullcontext()
        ) as headers:
            producer.send(
                topic,
                encode_record(record),
                key,
                timestamp=record_timestamp_ms(record),
                on_delivery=self._on_delivery,
                headers=headers,
            )

    def _serve(
        self,
        ws: websocket.WebSocket,
        producer: StreamingProducer,
        capture: CaptureWriter | None,
        recovery: Recovery | None,
        connected_ns: int,
    ) -> Disconnect | None:
        """One connection from subscribe to its end; None when stopped."""
        self._silence = None
        self._last_frame_ns = connected_ns
        with self._watchdog_lock:
            self.watchdog.rearm(connected_ns)
        self._ws = ws
        if self._stop.is_set():
            self._abort()
        ended: Disconnect | None = None
        try:
            for request in self.protocol.connected(connected_ns):
                ws.send(request)
            ended = self._resubscribe(ws, producer, capture, recovery)
            while ended is None and not self._stop.is_set():
                ws.settimeout(None)
                ended = self._pump(ws, producer, capture)
                if ended is not _UNSETTLED:
                    break
                # A subscription failed after settling: plan and verify it again.
                ended = self._resubscribe(ws, producer, capture, None)
            assert ended is not _UNSETTLED
        except (OSError, websocket.WebSocketException) as exc:
            ended = self._lost(exc)
        finally:
            self._ws = None
            if ended is None:
                with contextlib.suppress(OSError, websocket.WebSocketException):
                    ws.close(timeout=1)
            else:
                ws.shutdown()  # type: ignore[no-untyped-call]
        return ended

    def _lost(self, exc: Exception) -> Disconnect | None:
        if self._stop.is_set():
            return None
        return self._silence or dropped(str(exc) or type(exc).__name__)

    def _resubscribe(
        self,
        ws: websocket.WebSocket,
        producer: StreamingProducer,
        capture: CaptureWriter | None,
        recovery: Recovery | None,
    ) -> Disconnect | None:
        """Paced subscribe requests, read with a timeout so that they go out on time,
        until every product is acked or refused and, after a reconnect, the first
        ticker or trade is through (its time is the recovery's end)."""
        protocol = self.protocol
        subscriptions = protocol.subscriptions
        clock_ns = self._clock_ns
        api = self.settings.api
        awaiting_first = recovery is not None
        announced = False
        while not self._stop.is_set():
            now = clock_ns()
            for request in protocol.due_requests(now):
                ws.send(request)
            wake_ns = subscriptions.next_wake_ns()
            if wake_ns is None:
                if not announced:
                    announced = True
                    self._announce(now)
                if not awaiting_first:
                    return None
                ws.settimeout(None)
            else:
                ws.settimeout(max(_MIN_READ_TIMEOUT_S, (wake_ns - now) / 1e9))
            try:
                opcode, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            now = clock_ns()
            self._last_frame_ns = now
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return _closed(data)
            if capture is not None:
                capture.write(api, now, data)
            records = protocol.handle(data, now)
            for record in records:
                self._produce(producer, record)
                if type(record) is QualityEvent:
                    _log_quality(record)
                elif awaiting_first and type(record) in (Ticker, Trade):
                    awaiting_first = False
                    assert recovery is not None
                    self.recoveries.append(
                        Recovery(
                            recovery.cause,
                            recovery.dropped_ns,
                            recovery.connected_ns,
                            recovery.attempts,
                            first_record_ns=now,
                        )
                    )
            producer.serve()
        return None

    def _pump(
        self, ws: websocket.WebSocket, producer: StreamingProducer, capture: CaptureWriter | None
    ) -> Disconnect | None:
        # Everything the loop touches is bound to a local first: this runs per frame.
        recv = ws.recv_data
        handle = self.protocol.handle
        send = producer.send
        on_delivery = self._on_delivery
        topics = self._topics
        produced = self.metrics.produced
        clock_ns = self._clock_ns
        stopping = self._stop.is_set
        api = self.settings.api
        subscriptions = self.protocol.subscriptions
        # Tracing decides per record before making anything: unsampled, no span, no header.
        tracing = self._tracing
        start_send = tracing.start_send if tracing else None
        check_plan = False
        unpolled = 0
        try:
            while not stopping():
                opcode, data = recv()
                self._last_frame_ns = now = clock_ns()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    return _closed(data)
                if capture is not None:
                    capture.write(api, now, data)
                for record in handle(data, now):
                    kind = type(record)
                    message = (topics[kind], encode_record(record), record_key(record))
                    timestamp = record_timestamp_ms(record)
                    headers = start_send(message[0], message[2], now) if start_send else None
                    try:
                        send(
                            *message, timestamp=timestamp, on_delivery=on_delivery, headers=headers
                        )
                    except BufferError:
                        # librdkafka's queue is full: let deliveries drain it, then retry.
                        producer.poll(1.0)
                        send(
                            *message, timestamp=timestamp, on_delivery=on_delivery, headers=headers
                        )
                    if headers is not None and tracing is not None:
                        tracing.end_send(message[0])
                    produced[kind.__name__] += 1
                    if kind is QualityEvent:
                        # Failures and refusals come as quality events: the only
                        # frames after which a settled plan can have work again.
                        _log_quality(record)  # type: ignore[arg-type]
                        check_plan = True
                if check_plan:
                    check_plan = False
                    if not subscriptions.settled:
                        return _UNSETTLED
                unpolled += 1
                if unpolled >= StreamingProducer.POLL_EVERY:
                    producer.serve()
                    unpolled = 0
                if tracing is not None and now >= tracing.bursts_due_ns:
                    tracing.end_bursts(now)
        except (OSError, websocket.WebSocketException) as exc:
            return self._lost(exc)
        finally:
            if tracing is not None:
                tracing.end_bursts()
        return None

    def _announce(self, now_ns: int) -> None:
        subs = self.protocol.subscriptions
        with self._watchdog_lock:
            self.watchdog.watch({product for _, product in subs.active}, now_ns)
        log.info(
            "subscriptions settled: %d active, %d rejected", len(subs.active), len(subs.rejected)
        )

    # --- monitor thread --------------------------------------------------------

    def _monitor(self) -> None:
        """Pings, the silence watchdog and stale products, off the read loop."""
        settings = self.settings
        tick_s = min(0.25, max(0.01, settings.watchdog_s / 10))
        ping_every_ns = int(settings.ping_interval_s * 1e9)
        monotonic_ns = self._monotonic_ns
        next_ping_ns = monotonic_ns() + ping_every_ns
        watched: websocket.WebSocket | None = None
        seen_frame_ns = 0
        alive_ns = 0
        """When the monitor last saw the read loop's frame time move (monotonic)."""
        while not self._stop.wait(tick_s):
            self.monitor_beat_ns = monotonic_ns()
            ws = self._ws
            if ws is None:
                continue
            tick_ns = monotonic_ns()
            if ws is not watched or self._last_frame_ns != seen_frame_ns:
                watched, seen_frame_ns, alive_ns = ws, self._last_frame_ns, tick_ns
            quiet = self.watchdog.silent_for_s(alive_ns, tick_ns)
            if quiet is not None and self._silence is None and self._ws is ws:
                self._silence = silent(quiet)
                log.warning("watchdog: %s; closing the socket", self._silence.cause)
                self._abort()
                continue
            if tick_ns >= next_ping_ns:
                next_ping_ns = tick_ns + ping_every_ns
                with contextlib.suppress(OSError, websocket.WebSocketException):
                    ws.ping()
            now = self._clock_ns()
            with self._watchdog_lock:
                stale = self.watchdog.stale(self.metrics.last_frame_ns, now)
            for product in stale:
                event = QualityEvent(
                    source=settings.api,
                    kind=QualityKind.STALE_PRODUCT,
                    received_time_ns=now,
                    detail=(
                        f"{product.product}: no data for {product.silent_s:.1f} s"
                        f" (threshold {product.threshold_s:g} s)"
                    ),
                    product=product.product,
                    attributes={
                        "silent_s": round(product.silent_s, 3),
                        "threshold_s": product.threshold_s,
                    },
                )
                self._send_from_monitor(event)

    def _send_from_monitor(self, event: QualityEvent) -> None:
        # librdkafka's produce is thread-safe; the counter is the monitor's own.
        producer = self._producer
        if producer is None:
            return
        self._send(producer, event)
        self.metrics.stale_events += 1
        _log_quality(event)


def parse_thresholds(items: list[str]) -> dict[str, float]:
    """``["BTC/USD=300", "PF_XBTUSD=30"]`` → per-product stale thresholds in seconds."""
    out = {}
    for item in items:
        product, _, seconds = item.rpartition("=")
        try:
            value = float(seconds)
        except ValueError:
            value = -1.0
        if not product or not value > 0:
            raise ValueError(
                f"--stale-after-product: got {item!r}; expected PRODUCT=SECONDS with SECONDS > 0"
            )
        out[product] = value
    return out


def _closed(data: bytes) -> Disconnect:
    """The server's close frame: a 2-byte code, then a UTF-8 reason (RFC 6455 §5.5.1)."""
    if len(data) < 2:
        return classify_close(None)
    (code,) = struct.unpack("!H", data[:2])
    return classify_close(code, data[2:].decode("utf-8", "replace"))


def _log_quality(event: QualityEvent) -> None:
    rejected = event.kind is QualityKind.SUBSCRIPTION_REJECTED
    log.log(
        logging.ERROR if rejected else logging.WARNING, "%s: %s", event.kind.value, event.detail
    )
