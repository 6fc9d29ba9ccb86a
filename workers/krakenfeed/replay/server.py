"""A local Kraken serving a :class:`Session` on both WebSocket paths.

One background thread runs a selector loop over non-blocking sockets. wsproto parses
what clients send; data frames are framed once, when the server is built, and
written in large batches, so that a client reading 100k frames/s always finds the
server waiting on it rather than the other way round.

Each connection replays the session from its own start: the session clock starts
once the connection's subscribe requests have settled, and exchange times are
shifted so that the session begins at the connection's first subscribe. With
``live``, the session is instead one market that every connection joins where it
stands, as Kraken's does: a reconnecting client gets what comes next, not a rerun.

``faults`` scripts what goes wrong, connection by connection (``replay.faults``),
and :meth:`ReplayServer.sent` tells a test exactly which data frames went out.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import re
import selectors
import socket
import struct
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Final

import msgspec
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, TextMessage
from wsproto.utilities import ProtocolError, generate_accept_token

from krakenfeed.contracts import Source
from krakenfeed.replay.faults import (
    Close,
    Drop,
    Fault,
    Inject,
    Mute,
    RateLimit,
    Refuse,
    Reject,
    Script,
    Silence,
    Skip,
    Triggered,
)
from krakenfeed.replay.protocol import (
    SPOT_REQUEST_BURST,
    SPOT_SYSTEM_STATES,
    FuturesResponder,
    Reply,
    Responder,
    SpotResponder,
    Step,
)
from krakenfeed.replay.session import (
    Channel,
    Payload,
    Session,
    SessionFrame,
    TimeFormat,
    format_rfc3339_us,
    map_exchange_times,
    shift_times,
)

log = logging.getLogger(__name__)

PATHS: Final[dict[Source, str]] = {"futures": "/ws/v1", "spot": "/v2"}
KRAKEN_HEARTBEAT_S: Final[dict[Source, float]] = {"futures": 10.0, "spot": 1.0}
"""The intervals observed on Kraken."""

_API_OF_PATH: Final = {path: api for api, path in PATHS.items()}
_BATCH_BYTES: Final = 1 << 18
_RECV_BYTES: Final = 1 << 16
_MAX_REQUEST_HEAD: Final = 1 << 14
_CLOSE_GRACE_S: Final = 1.0
_MAX_PACE_HORIZON: Final = 1 << 62
_TIME_MARK: Final = re.compile(rb'"@kf-time-(\d+)@"')


def _header(length: int) -> bytes:
    """The header of an unmasked, final text frame (RFC 6455 §5.2)."""
    first = 0x81
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def _text_frame(payload: bytes) -> bytes:
    return _header(len(payload)) + payload


def _http_response(status: str, *headers: str) -> bytes:
    return "\r\n".join((f"HTTP/1.1 {status}", *headers, "", "")).encode()


def _upgrade(head: bytes) -> tuple[bytes, Source | None]:
    """The answer to an HTTP upgrade request (RFC 6455 §4.2), and the API its path names.

    Done here rather than by wsproto, whose server handshake drops frames that a
    client sends right behind its request.
    """
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    method, _, rest = request_line.partition(" ")
    target = rest.rpartition(" ")[0]
    upgrade = headers.get("upgrade", "").lower() == "websocket"
    connection = "upgrade" in (t.strip().lower() for t in headers.get("connection", "").split(","))
    key = headers.get("sec-websocket-key", "")
    if method != "GET" or not upgrade or not connection or not key:
        return _http_response("400 Bad Request", "Content-Length: 0", "Connection: close"), None
    if headers.get("sec-websocket-version") != "13":
        version = "Sec-WebSocket-Version: 13"
        return _http_response("426 Upgrade Required", version, "Content-Length: 0"), None
    api = _API_OF_PATH.get(target.split("?", 1)[0])
    if api is None:
        return _http_response("404 Not Found", "Content-Length: 0", "Connection: close"), None
    accept = generate_accept_token(key.encode()).decode()
    return _http_response(
        "101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept}",
    ), api


@dataclass(frozen=True, slots=True)
class _WireFrame:
    """A session frame ready for the wire."""

    stream: int
    """Index of the frame's (channel, product), to filter by subscription cheaply."""
    offset_ns: int
    framed: bytes
    """Header and payload with the session's own times."""
    slots: tuple[tuple[int, int, int, TimeFormat], ...] = ()
    """Each exchange time as (its offset in ``framed``, its width, epoch µs, format):
    shifting overwrites the digits in place, since a shifted time keeps its width."""
    pieces: tuple[bytes, ...] = ()
    """The payload cut around its times, for the rare shift that changes a width."""


def _prepare(api: Source, frame: SessionFrame, stream: int, cut_times: bool) -> _WireFrame:
    if frame.verbatim is not None:
        return _WireFrame(stream, frame.offset_ns, _text_frame(frame.verbatim.encode()))
    if not cut_times:
        return _WireFrame(stream, frame.offset_ns, _text_frame(msgspec.json.encode(frame.payload)))
    times: list[tuple[int, TimeFormat]] = []

    def mark(epoch_us: int, form: TimeFormat) -> str:
        times.append((epoch_us, form))
        return f"@kf-time-{len(times) - 1}@"

    parts = _TIME_MARK.split(msgspec.json.encode(map_exchange_times(api, frame.payload, mark)))
    pieces = parts[0::2]
    if [int(index) for index in parts[1::2]] != list(range(len(times))):
        raise ValueError(f"cannot locate the exchange times in {api} frame {frame.payload!r}")
    for index, (_, form) in enumerate(times):
        if form == "rfc3339":
            pieces[index] += b'"'
            pieces[index + 1] = b'"' + pieces[index + 1]
    # Rebuilt from the pieces so the slots are exact even for a capture's unusual spelling.
    unshifted = _ShiftedTimes(0)
    payload = bytearray(pieces[0])
    slots = []
    for (epoch_us, form), piece in zip(times, pieces[1:], strict=True):
        text = unshifted.text(epoch_us, form)
        slots.append((len(payload), len(text), epoch_us, form))
        payload += text + piece
    header = _header(len(payload))
    slots = [
        (len(header) + offset, width, epoch_us, form) for offset, width, epoch_us, form in slots
    ]
    return _WireFrame(stream, frame.offset_ns, header + payload, tuple(slots), tuple(pieces))


def _requested_channel(text: str) -> str | None:
    """The channel a subscribe request names, on either API; None for anything else."""
    try:
        request = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
    if not isinstance(request, dict):
        return None
    params = request.get("params")
    channel = params.get("channel") if isinstance(params, dict) else request.get("feed")
    return channel if isinstance(channel, str) else None


class _ShiftedTimes:
    """Exchange times moved by one connection's delta, as wire text."""

    def __init__(self, delta_ms: int) -> None:
        self.delta_ms = delta_ms
        self._second = -1
        self._prefix = b""

    def text(self, epoch_us: int, form: TimeFormat) -> bytes:
        if form == "epoch_ms":
            return b"%d" % (epoch_us // 1000 + self.delta_ms)
        second, micros = divmod(epoch_us + self.delta_ms * 1000, 1_000_000)
        if second != self._second:
            # Trades cluster within a second: format its date and time once.
            self._second = second
            self._prefix = format_rfc3339_us(second * 1_000_000)[:19].encode()
        return b"%s.%06dZ" % (self._prefix, micros)

    def write(self, out: bytearray, frame: _WireFrame) -> None:
        start = len(out)
        out += frame.framed
        for offset, width, epoch_us, form in frame.slots:
            text = self.text(epoch_us, form)
            if len(text) != width:
                del out[start:]
                self._reframe(out, frame)
                return
            out[start + offset : start + offset + width] = text

    def _reframe(self, out: bytearray, frame: _WireFrame) -> None:
        payload = bytearray(frame.pieces[0])
        for (_, _, epoch_us, form), piece in zip(frame.slots, frame.pieces[1:], strict=True):
            payload += self.text(epoch_us, form)
            payload += piece
        out += _header(len(payload))
        out += payload


class _Connection:
    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.head = bytearray()
        """The HTTP upgrade request, until it is complete."""
        self.ws: Connection | None = None
        self.out = bytearray()
        self.api: Source | None = None
        self.responder: Responder | None = None
        self.frames: Sequence[_WireFrame] = ()
        self.streams = bytearray()
        self.fragments: list[str] = []
        self.cursor = 0
        self.shift: _ShiftedTimes | None = None
        """Set by the first subscribe; with ``keep_times`` its delta is zero."""
        self.settle_until: float | None = None
        self.clock_start: float | None = None
        self.finished = False
        self.closing = False
        """Close the socket as soon as ``out`` is written."""
        self.writing = False
        self.last_sent = now
        self.next_heartbeat: float | None = None
        self.faults: tuple[Fault, ...] = ()
        self.triggers: list[Triggered] = []
        """Faults still to fire, by the count of data frames sent before them."""
        self.sent = 0
        """Session data frames sent on this connection."""
        self.silent_until: float | None = None
        self.dropping = False
        """End the TCP connection without a close frame once ``out`` is written."""
        self.range: _SentRange | None = None
        self.muted: set[str] = set()
        """Channels whose next subscribe request goes unanswered."""
        self.requests: list[str] = []


@dataclass(slots=True)
class _SentRange:
    """Session frames [start, end) went out to a connection subscribed to ``streams``."""

    start: int
    end: int
    streams: bytes


class ReplayServer:
    """Kraken's Futures v1 (``/ws/v1``) and Spot v2 (``/v2``) APIs over one port.

    ``pace``: None sends as fast as the client reads, 1.0 keeps the session's timing,
    N runs it N times faster. ``settle_s``: a connection's session starts once this
    long has passed without a new subscribe request, so that every subscription a
    client sends together sees the session from its first frame. ``heartbeat_interval_s``
    replaces Kraken's intervals (10 s futures, 1 s spot) for both APIs. ``spot_system``
    is the state the spot status frame announces, to test a client against maintenance.
    """

    def __init__(
        self,
        session: Session,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        pace: float | None = None,
        keep_times: bool = False,
        heartbeat_interval_s: float | None = None,
        settle_s: float = 0.05,
        spot_system: str = "online",
        live: bool = False,
        faults: Script = (),
    ) -> None:
        if pace is not None and not pace > 0:
            raise ValueError(f"pace must be positive or None (as fast as possible), got {pace}")
        if spot_system not in SPOT_SYSTEM_STATES:
            raise ValueError(
                f"spot_system must be one of {SPOT_SYSTEM_STATES}, got {spot_system!r}"
            )
        self.session = session
        self.host = host
        self.port = port
        self._pace = pace
        self._keep_times = keep_times
        self._heartbeat_s: dict[Source, float] = {
            api: heartbeat_interval_s or default for api, default in KRAKEN_HEARTBEAT_S.items()
        }
        self._settle_s = settle_s
        self._spot_system = spot_system
        self._streams: dict[Source, dict[tuple[Channel, str], int]] = {}
        self._frames: dict[Source, list[_WireFrame]] = {}
        for api in PATHS:
            streams = self._streams[api] = {}
            self._frames[api] = [
                _prepare(
                    api,
                    frame,
                    streams.setdefault((frame.channel, frame.product), len(streams)),
                    cut_times=not keep_times,
                )
                for frame in session.frames.get(api, ())
            ]
        self._products = {api: session.products(api) for api in PATHS}
        self._connections: dict[socket.socket, _Connection] = {}
        self._selector: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._wake_reader: socket.socket | None = None
        self._wake_writer: socket.socket | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = 0
        self._rng = random.Random()
        self._live = live
        self._script = [tuple(faults) for faults in faults]
        self._accepted = 0
        self._offsets = {api: [f.offset_ns for f in frames] for api, frames in self._frames.items()}
        self._market_cursor: dict[Source, int] = {}
        self._market_start: dict[Source, float] = {}
        self._sent: dict[Source, list[_SentRange | Payload]] = {api: [] for api in PATHS}
        self._requests: list[list[str]] = []

    # --- public ----------------------------------------------------------------

    def url(self, api: Source) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"ws://{host}:{self.port}{PATHS[api]}"

    def requests(self, connection: int) -> list[str]:
        """The requests the ``connection``-th connection (from 0) sent, as text."""
        return list(self._requests[connection])

    @property
    def connections(self) -> int:
        """Connections accepted so far, refused upgrades included."""
        return self._accepted

    def sent(self, api: Source) -> list[Payload]:
        """Every valid data payload sent so far on ``api``, connection after connection:
        the session's ticker and trade frames (injected and verbatim frames excluded)
        and the snapshots sent on subscribe. Session frames carry the session's own
        exchange times; snapshots carry the times they were sent with."""
        frames = self.session.frames.get(api, ())
        wire = self._frames[api]
        out: list[Payload] = []
        for entry in list(self._sent[api]):
            if not isinstance(entry, _SentRange):
                out.append(entry)
                continue
            for index in range(entry.start, entry.end):
                if entry.streams[wire[index].stream] and frames[index].verbatim is None:
                    out.append(frames[index].payload)
        return out

    @property
    def finished_streams(self) -> int:
        """Connections that were sent every session frame they subscribed to."""
        return self._finished

    def start(self) -> ReplayServer:
        if self._thread is not None or self._stopping.is_set():
            raise RuntimeError("a replay server starts once; build a new one to serve again")
        listener = socket.create_server((self.host, self.port), backlog=128)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ)
        # stop() writes here to interrupt the loop's select.
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="replay-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close every connection with 1001 (going away) and stop the thread."""
        if self._thread is None or self._wake_writer is None:
            return
        self._stopping.set()
        self._wake_writer.send(b"\0")
        self._thread.join()
        self._thread = None

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- loop ------------------------------------------------------------------

    def _run(self) -> None:
        assert self._selector and self._listener and self._wake_reader
        selector, listener, wake = self._selector, self._listener, self._wake_reader
        stop_deadline: float | None = None
        while True:
            now = time.monotonic()
            if self._stopping.is_set() and stop_deadline is None:
                stop_deadline = now + _CLOSE_GRACE_S
                selector.unregister(listener)
                listener.close()
                for conn in list(self._connections.values()):
                    self._going_away(conn)
            for conn in list(self._connections.values()):
                self._guarded(partial(self._pump, conn, now), conn)
            if stop_deadline is not None and (not self._connections or now >= stop_deadline):
                break
            for key, mask in selector.select(self._timeout(now, stop_deadline)):
                if key.fileobj is listener:
                    self._accept(listener)
                elif key.fileobj is wake:
                    wake.recv(64)
                elif isinstance(key.data, _Connection) and mask & selectors.EVENT_READ:
                    self._guarded(partial(self._receive, key.data), key.data)
        for conn in list(self._connections.values()):
            self._drop(conn)
        selector.close()
        wake.close()
        if self._wake_writer is not None:
            self._wake_writer.close()

    def _guarded(self, handle: Callable[[], None], conn: _Connection) -> None:
        """A bug met on one connection drops that connection, never the whole server."""
        try:
            handle()
        except Exception:
            log.exception("replay server: dropping a connection after an internal error")
            self._drop(conn)

    def _timeout(self, now: float, stop_deadline: float | None) -> float | None:
        if stop_deadline is not None:
            return max(0.0, stop_deadline - now)
        wake = []
        for conn in self._connections.values():
            if conn.closing:
                continue
            if conn.silent_until is not None:
                if math.isfinite(conn.silent_until):
                    wake.append(conn.silent_until)
                continue
            if conn.settle_until is not None and conn.clock_start is None:
                wake.append(conn.settle_until)
            if conn.next_heartbeat is not None:
                wake.append(conn.next_heartbeat)
            if (
                self._pace is not None
                and conn.clock_start is not None
                and conn.cursor < len(conn.frames)
                and not conn.out
            ):
                next_offset = conn.frames[conn.cursor].offset_ns
                wake.append(conn.clock_start + next_offset / self._pace / 1e9)
        return max(0.0, min(wake) - now) if wake else None

    def _accept(self, listener: socket.socket) -> None:
        assert self._selector is not None
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock, time.monotonic())
            if self._accepted < len(self._script):
                conn.faults = self._script[self._accepted]
            self._accepted += 1
            conn.muted = {f.channel for f in conn.faults if isinstance(f, Mute)}
            self._requests.append(conn.requests)
            conn.triggers = sorted(
                (f for f in conn.faults if isinstance(f, Drop | Close | Silence | Inject | Skip)),
                key=lambda fault: fault.after,
            )
            self._connections[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _receive(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        if conn.ws is None:
            self._handshake(conn, data)
            if conn.ws is None:
                return
        else:
            try:
                conn.ws.receive_data(data)
            except ProtocolError:
                conn.closing = True
                return
        try:
            for event in conn.ws.events():
                self._on_event(conn, conn.ws, event)
        except ProtocolError:
            conn.closing = True

    def _handshake(self, conn: _Connection, data: bytes) -> None:
        conn.head += data
        end = conn.head.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.head) > _MAX_REQUEST_HEAD:
                conn.out += _http_response("431 Request Header Fields Too Large")
                conn.closing = True
            return
        refuse = next((f for f in conn.faults if isinstance(f, Refuse)), None)
        if refuse is not None:
            try:
                phrase = HTTPStatus(refuse.status).phrase
            except ValueError:
                phrase = "Refused"
            conn.out += _http_response(
                f"{refuse.status} {phrase}", "Content-Length: 0", "Connection: close"
            )
            conn.closing = True
            return
        response, api = _upgrade(bytes(conn.head[:end]))
        conn.out += response
        if api is None:
            conn.closing = True
            return
        conn.ws = Connection(ConnectionType.SERVER, trailing_data=bytes(conn.head[end + 4 :]))
        conn.head.clear()
        self._open(conn, api)

    def _on_event(self, conn: _Connection, ws: Connection, event: Event) -> None:
        match event:
            case TextMessage(data=data, message_finished=finished):
                self._fragment(conn, data, finished)
            case BytesMessage(data=data, message_finished=finished):
                self._fragment(conn, bytes(data).decode("utf-8", "replace"), finished)
            case Ping():
                conn.out += ws.send(event.response())
            case CloseConnection(code=code, reason=reason):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    conn.out += ws.send(event.response())
                elif ws.state is ConnectionState.OPEN:
                    # wsproto reports a malformed frame as a close it expects us to send.
                    conn.out += ws.send(CloseConnection(code, reason))
                conn.closing = True

    def _open(self, conn: _Connection, api: Source) -> None:
        rejected = {f.product for f in conn.faults if isinstance(f, Reject)}
        products = self._products[api] - rejected
        burst = min(
            (f.burst for f in conn.faults if isinstance(f, RateLimit)), default=SPOT_REQUEST_BURST
        )
        responder: Responder
        if api == "futures":
            responder = FuturesResponder(products)
        else:
            connection_id = (1 << 63) + self._rng.randrange(1, 1 << 63)
            responder = SpotResponder(products, connection_id, self._spot_system, burst)
        conn.api = api
        conn.responder = responder
        conn.frames = self._frames[api]
        conn.streams = bytearray(len(self._streams[api]))
        self._queue(conn, responder.banner())

    def _fragment(self, conn: _Connection, data: str, finished: bool) -> None:
        conn.fragments.append(data)
        if finished:
            text = "".join(conn.fragments)
            conn.fragments.clear()
            self._request(conn, text)

    def _request(self, conn: _Connection, text: str) -> None:
        assert conn.responder is not None and conn.api is not None
        conn.requests.append(text)
        if conn.muted:
            channel = _requested_channel(text)
            if channel in conn.muted:
                conn.muted.discard(channel)
                return
        now = time.monotonic()
        time_in_ns = time.time_ns()
        before = set(conn.responder.subscriptions)
        steps = conn.responder.receive(text, time_in_ns, time.time_ns())
        after = conn.responder.subscriptions
        if after != before:
            self._resubscribed(conn, now)
        for step in steps:
            self._perform(conn, step)
        if conn.responder.wants_heartbeat and conn.next_heartbeat is None:
            conn.next_heartbeat = now + self._heartbeat_s[conn.api]
        elif not conn.responder.wants_heartbeat:
            conn.next_heartbeat = None

    def _resubscribed(self, conn: _Connection, now: float) -> None:
        assert conn.responder is not None and conn.api is not None
        if conn.shift is None:
            delta_ms = 0
            if not self._keep_times:
                delta_ms = (time.time_ns() - self.session.start_ns) // 1_000_000
            conn.shift = _ShiftedTimes(delta_ms)
            if self._live:
                conn.cursor = self._market_position(conn.api, now)
        if conn.clock_start is None:
            conn.settle_until = now + self._settle_s
        streams = self._streams[conn.api]
        conn.streams = bytearray(len(streams))
        for key in conn.responder.subscriptions:
            index = streams.get(key)
            if index is not None:
                conn.streams[index] = 1

    def _market_position(self, api: Source, now: float) -> int:
        """Where the shared market stands: past every frame sent to anyone and, when
        paced, past every frame whose time has come while nobody was listening."""
        cursor = self._market_cursor.get(api, 0)
        start = self._market_start.get(api)
        if self._pace is not None and start is not None:
            horizon = int((now - start) * self._pace * 1e9)
            cursor = max(cursor, bisect_right(self._offsets[api], horizon))
        return cursor

    def _perform(self, conn: _Connection, step: Step) -> None:
        if isinstance(step, Reply):
            self._queue(conn, step.payload)
            return
        assert conn.api is not None and conn.shift is not None
        snapshot: Payload | None
        if step.channel == "trade":
            snapshot = self.session.trade_snapshot(conn.api, step.product, conn.cursor)
        else:
            snapshot = self.session.ticker_snapshot(conn.api, step.product, conn.cursor)
        if snapshot is not None:
            payload = shift_times(conn.api, snapshot, conn.shift.delta_ms)
            self._queue(conn, payload)
            self._sent[conn.api].append(payload)

    def _queue(self, conn: _Connection, payload: Payload) -> None:
        conn.out += _text_frame(msgspec.json.encode(payload))
        conn.last_sent = time.monotonic()

    def _going_away(self, conn: _Connection) -> None:
        if conn.ws is None or conn.ws.state is not ConnectionState.OPEN:
            self._drop(conn)
            return
        conn.out += conn.ws.send(CloseConnection(code=1001, reason="replay server stopping"))
        conn.next_heartbeat = None

    # --- writing ---------------------------------------------------------------

    def _pump(self, conn: _Connection, now: float) -> None:
        stopping = self._stopping.is_set()
        if conn.silent_until is not None:
            if now < conn.silent_until:
                if conn.out:
                    self._send(conn)  # what was written before the silence began
                return
            conn.silent_until = None
            conn.next_heartbeat = None if conn.next_heartbeat is None else now
        if conn.responder is not None and not stopping and not conn.closing:
            self._heartbeat(conn, conn.responder, now)
            settled = conn.settle_until is not None and now >= conn.settle_until
            if conn.clock_start is None and settled:
                conn.clock_start = now
                if self._live and conn.api is not None:
                    conn.clock_start = self._market_start.setdefault(conn.api, now)
        while True:
            silent = conn.silent_until is not None
            if conn.clock_start is not None and not stopping and not conn.closing and not silent:
                self._fill(conn, now)
            if not conn.out or not self._send(conn):
                break
        if (
            conn.clock_start is not None
            and not conn.finished
            and not conn.out
            and conn.cursor >= len(conn.frames)
        ):
            conn.finished = True
            self._finished += 1
        if conn.closing and not conn.out:
            self._drop(conn)

    def _heartbeat(self, conn: _Connection, responder: Responder, now: float) -> None:
        if conn.next_heartbeat is None or conn.api is None:
            return
        interval = self._heartbeat_s[conn.api]
        if responder.heartbeat_when_idle:
            conn.next_heartbeat = conn.last_sent + interval
        if now >= conn.next_heartbeat:
            self._queue(conn, responder.heartbeat(time.time_ns()))
            conn.next_heartbeat = now + interval

    def _fill(self, conn: _Connection, now: float) -> None:
        """Append the frames that are due, up to one batch."""
        if conn.triggers:
            self._fill_scripted(conn, now)
        else:
            start = conn.cursor
            self._fill_clean(conn, now)
            self._log(conn, start, conn.cursor)

    def _log(self, conn: _Connection, start: int, end: int) -> None:
        if end <= start or conn.api is None:
            return
        if self._live:
            self._market_cursor[conn.api] = max(self._market_cursor.get(conn.api, 0), end)
        last = conn.range
        if last is not None and last.end == start and last.streams == conn.streams:
            last.end = end
            return
        conn.range = _SentRange(start, end, bytes(conn.streams))
        self._sent[conn.api].append(conn.range)

    def _fill_scripted(self, conn: _Connection, now: float) -> None:
        """As :meth:`_fill_clean`, counting frames and firing each fault on its frame."""
        assert conn.clock_start is not None and conn.shift is not None
        frames, end, streams, out = conn.frames, len(conn.frames), conn.streams, conn.out
        horizon = _MAX_PACE_HORIZON
        if self._pace is not None:
            horizon = int((now - conn.clock_start) * self._pace * 1e9)
        start = index = conn.cursor
        while len(out) < _BATCH_BYTES:
            if conn.triggers and conn.sent >= conn.triggers[0].after:
                conn.cursor = index
                self._log(conn, start, index)
                self._fire(conn, conn.triggers.pop(0), now)
                if conn.closing or conn.silent_until is not None:
                    return
                start = index = conn.cursor
                continue
            if index >= end or frames[index].offset_ns > horizon:
                break
            frame = frames[index]
            if streams[frame.stream]:
                conn.shift.write(out, frame)
                conn.sent += 1
                conn.last_sent = now
            index += 1
        conn.cursor = index
        self._log(conn, start, index)

    def _fire(self, conn: _Connection, fault: Triggered, now: float) -> None:
        assert conn.api is not None and conn.responder is not None
        match fault:
            case Drop():
                conn.dropping = conn.closing = True
            case Close(code=code, reason=reason):
                if conn.ws is not None and conn.ws.state is ConnectionState.OPEN:
                    conn.out += conn.ws.send(CloseConnection(code=code, reason=reason))
                conn.closing = True
            case Silence(seconds=seconds):
                conn.silent_until = math.inf if seconds is None else now + seconds
            case Inject():
                subscribed = sorted(p for _, p in conn.responder.subscriptions)
                product = subscribed[0] if subscribed else min(self._products[conn.api])
                conn.out += _text_frame(fault.frame(conn.api, product).encode())
            case Skip(count=count):
                frames, streams, index, skipped = conn.frames, conn.streams, conn.cursor, 0
                while index < len(frames) and skipped < count:
                    skipped += streams[frames[index].stream]
                    index += 1
                conn.cursor = index

    def _fill_clean(self, conn: _Connection, now: float) -> None:
        frames = conn.frames
        end = len(frames)
        index = conn.cursor
        if index >= end or len(conn.out) >= _BATCH_BYTES or conn.shift is None:
            return
        assert conn.clock_start is not None
        horizon = _MAX_PACE_HORIZON
        if self._pace is not None:
            horizon = int((now - conn.clock_start) * self._pace * 1e9)
        out = conn.out
        streams = conn.streams
        size = len(out)
        shift = conn.shift
        if shift.delta_ms == 0:
            while index < end and len(out) < _BATCH_BYTES:
                frame = frames[index]
                if frame.offset_ns > horizon:
                    break
                if streams[frame.stream]:
                    out += frame.framed
                index += 1
        else:
            while index < end and len(out) < _BATCH_BYTES:
                frame = frames[index]
                if frame.offset_ns > horizon:
                    break
                if streams[frame.stream]:
                    shift.write(out, frame)
                index += 1
        conn.cursor = index
        if len(out) != size:
            conn.last_sent = now

    def _send(self, conn: _Connection) -> bool:
        """Write what the socket takes; True when ``out`` was written whole."""
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            conn.out.clear()
            conn.closing = True
            return False
        del conn.out[:sent]
        self._want_write(conn, bool(conn.out))
        return not conn.out

    def _want_write(self, conn: _Connection, wanted: bool) -> None:
        if conn.writing == wanted or self._selector is None:
            return
        conn.writing = wanted
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wanted else 0)
        self._selector.modify(conn.sock, events, conn)

    def _drop(self, conn: _Connection) -> None:
        if self._connections.pop(conn.sock, None) is None:
            return
        if self._selector is not None:
            self._selector.unregister(conn.sock)
        if conn.dropping:
            # A FIN after everything written, never a reset: read what the client
            # sent first, since closing over unread bytes makes the kernel send RST
            # and the client may then lose frames it has not read yet.
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
                while conn.sock.recv(_RECV_BYTES):
                    pass
        conn.sock.close()
