"""The ingest worker's I/O: one Kraken WebSocket in, the feed's Kafka topics out.

The loop is deliberately flat — receive, hand the bytes to the pure protocol,
produce what comes back — because it runs once per frame at up to ~100k frames/s.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
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
from krakenfeed.kafka import StreamingProducer, contract_topics, make_application
from krakenfeed.replay.capture import CaptureWriter

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


class IngestWorker:
    def __init__(
        self, settings: IngestSettings, clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self.settings = settings
        self.metrics = IngestMetrics()
        self.protocol = _PROTOCOLS[settings.api](
            settings.products,
            settings.channels,
            ValidationSettings(max_clock_skew_ms=settings.max_clock_skew_ms),
            self.metrics,
        )
        self.url = settings.url or self.protocol.default_url
        self._clock_ns = clock_ns
        self._stop = threading.Event()
        self._ws: websocket.WebSocket | None = None
        self._delivery_error: str | None = None
        self._app = make_application(
            settings.broker,
            # Delivery reports only for failures: successes cost nothing on the hot path.
            producer_extra_config={"delivery.report.only.error": True},
        )
        declared = contract_topics(
            self._app, settings.broker, settings.feed, list(_STREAMS.values())
        )
        self._topics = {kind: declared[stream].name for kind, stream in _STREAMS.items()}

    def stop(self) -> None:
        """Ask the loop to finish; safe from a signal handler or another thread.

        Shutting the socket down wakes a receive that is waiting on a quiet feed,
        so the worker stops at once rather than after its receive timeout.
        """
        self._stop.set()
        ws = self._ws
        if ws is not None and ws.sock is not None:
            with contextlib.suppress(OSError):
                ws.sock.shutdown(socket.SHUT_RDWR)

    def _on_delivery(self, error: Any, message: Any) -> None:
        if error is not None:
            self._delivery_error = f"{message.topic()}: {error}"
            self._stop.set()

    def run(self) -> int:
        """Read until stopped; 0 after a clean stop, 1 when the run cannot continue."""
        log.info(
            "ingesting %s %s for %s from %s",
            self.settings.api,
            ",".join(self.settings.channels),
            ",".join(self.settings.products),
            self.url,
        )
        with ExitStack() as stack:
            producer = stack.enter_context(StreamingProducer(self._app))
            capture = (
                stack.enter_context(CaptureWriter(self.settings.capture))
                if self.settings.capture
                else None
            )
            try:
                ws = websocket.create_connection(
                    self.url, timeout=_CONNECT_TIMEOUT_S, skip_utf8_validation=True
                )
                # Blocking reads: a socket timeout makes Python poll() before every
                # recv(), doubling the syscalls per frame. stop() wakes a blocked read
                # by shutting the socket down; heartbeats wake it at least every 10 s.
                ws.settimeout(None)
            except (OSError, websocket.WebSocketException) as exc:
                log.error("cannot connect to %s: %s", self.url, exc)
                return 1
            self._ws = ws
            try:
                for request in self.protocol.subscribe_requests():
                    ws.send(request)
                outcome = self._pump(ws, producer, capture)
            finally:
                self._ws = None
                with contextlib.suppress(OSError, websocket.WebSocketException):
                    ws.close(timeout=1)
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

    def _pump(
        self, ws: websocket.WebSocket, producer: StreamingProducer, capture: CaptureWriter | None
    ) -> int:
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
        ping_every_ns = int(self.settings.ping_interval_s * 1e9)
        next_ping_ns = clock_ns() + ping_every_ns
        pending = self.protocol.subscriptions.pending
        announced = False
        unpolled = 0
        try:
            while not stopping():
                opcode, data = recv()
                now = clock_ns()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    log.error("Kraken closed the connection: %r", data[:125])
                    return 1
                if capture is not None:
                    capture.write(api, now, data)
                for record in handle(data, now):
                    kind = type(record)
                    message = (topics[kind], encode_record(record), record_key(record))
                    timestamp = record_timestamp_ms(record)
                    try:
                        send(*message, timestamp=timestamp, on_delivery=on_delivery)
                    except BufferError:
                        # librdkafka's queue is full: let deliveries drain it, then retry.
                        producer.poll(1.0)
                        send(*message, timestamp=timestamp, on_delivery=on_delivery)
                    produced[kind.__name__] += 1
                    if kind is QualityEvent:
                        _log_quality(record)  # type: ignore[arg-type]
                unpolled += 1
                if unpolled >= StreamingProducer.POLL_EVERY:
                    producer.serve()
                    unpolled = 0
                if not announced and not pending:
                    announced = True
                    self._announce()
                if now >= next_ping_ns:
                    ws.ping()
                    next_ping_ns = now + ping_every_ns
                    producer.serve()
        except (OSError, websocket.WebSocketException) as exc:
            if not stopping():
                log.error("connection to %s lost: %s", self.url, exc)
                return 1
        log.info("stop requested: flushing and closing")
        return 0

    def _announce(self) -> None:
        subs = self.protocol.subscriptions
        log.info(
            "subscriptions settled: %d active, %d rejected", len(subs.active), len(subs.rejected)
        )


def _log_quality(event: QualityEvent) -> None:
    rejected = event.kind is QualityKind.SUBSCRIPTION_REJECTED
    log.log(
        logging.ERROR if rejected else logging.WARNING, "%s: %s", event.kind.value, event.detail
    )
