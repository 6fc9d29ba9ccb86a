"""The replay server speaks Kraken: held to the golden frames over real sockets.

Every test talks to a real ``ReplayServer`` with websocket-client, the library the
ingest worker uses, and waits with deadlines rather than sleeps.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import websocket

from krakenfeed.embedded import wait_until
from krakenfeed.ingest.protocol import FuturesProtocol, SpotProtocol, ValidationSettings
from krakenfeed.market import generate_market
from krakenfeed.replay import (
    CapturedFrame,
    CaptureWriter,
    ReplayServer,
    generate_session,
    merge_sessions,
    read_capture,
    session_from_capture,
    session_from_records,
    shift_times,
)
from krakenfeed.replay.command import parse_pace
from krakenfeed.replay.session import parse_rfc3339_us
from tests import golden_frames as golden

SESSION = merge_sessions(
    generate_session("futures", ["PF_XBTUSD", "PI_XBTUSD"], count_per_product_channel=25, seed=11),
    generate_session("spot", ["BTC/USD", "ETH/USD"], count_per_product_channel=25, seed=11),
)
HEARTBEAT_S = 0.1
RFC3339_US = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

Connect = Callable[[str], websocket.WebSocket]


def _serve(**options: Any) -> ReplayServer:
    return ReplayServer(SESSION, heartbeat_interval_s=HEARTBEAT_S, settle_s=0.02, **options)


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    with _serve() as running:
        yield running


@pytest.fixture
def kept_times_server() -> Iterator[ReplayServer]:
    with _serve(keep_times=True) as running:
        yield running


@pytest.fixture
def connect() -> Iterator[Connect]:
    """Clients closed before the server stops (fixtures tear down in reverse)."""
    clients: list[websocket.WebSocket] = []

    def open_client(url: str) -> websocket.WebSocket:
        client = websocket.create_connection(url, skip_utf8_validation=True, timeout=2)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close(timeout=1)
        client.shutdown()  # close() skips a socket the server has already closed


def send(client: websocket.WebSocket, request: dict[str, Any]) -> None:
    client.send(json.dumps(request))


def receive(client: websocket.WebSocket, timeout: float = 2.0) -> Any:
    client.settimeout(timeout)
    return json.loads(client.recv())


def receive_until(
    client: websocket.WebSocket, done: Callable[[list[Any]], bool], timeout: float = 3.0
) -> list[Any]:
    frames: list[Any] = []
    deadline = time.monotonic() + timeout
    while not done(frames):
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise websocket.WebSocketTimeoutException
            frames.append(receive(client, remaining))
        except websocket.WebSocketTimeoutException:
            raise AssertionError(f"timed out; the last frames were {frames[-3:]}") from None
    return frames


def nothing_arrives(client: websocket.WebSocket, within: float) -> bool:
    try:
        receive(client, within)
    except websocket.WebSocketTimeoutException:
        return True
    return False


def is_data(frame: dict[str, Any]) -> bool:
    futures = frame.get("feed") in ("ticker", "trade") and "event" not in frame
    return futures or (frame.get("channel") in ("ticker", "trade") and frame["type"] == "update")


def is_trade(frame: dict[str, Any]) -> bool:
    return "trade" in (frame.get("feed"), frame.get("channel"))


def data_frames(frames: list[Any]) -> list[Any]:
    return [frame for frame in frames if is_data(frame)]


def session_payloads(api: str, streams: set[tuple[str, str]]) -> list[Any]:
    return [f.payload for f in SESSION.frames[api] if (f.channel, f.product) in streams]


def futures_subscribe(feed: str, *products: str) -> dict[str, Any]:
    return {"event": "subscribe", "feed": feed, "product_ids": list(products)}


def spot_subscribe(channel: str, *symbols: str, req_id: int = 1, **params: Any) -> dict[str, Any]:
    return {
        "method": "subscribe",
        "params": {"channel": channel, "symbol": list(symbols), **params},
        "req_id": req_id,
    }


# --- banners -----------------------------------------------------------------


def test_futures_opens_with_the_info_event(server: ReplayServer, connect: Connect) -> None:
    client = connect(server.url("futures"))
    assert server.url("futures") == f"ws://127.0.0.1:{server.port}/ws/v1"
    assert receive(client) == json.loads(golden.FUTURES_INFO)


def test_spot_opens_with_a_status_frame_whose_id_overflows_int64(
    server: ReplayServer, connect: Connect
) -> None:
    client = connect(server.url("spot"))
    assert server.url("spot") == f"ws://127.0.0.1:{server.port}/v2"
    status = receive(client)
    expected = json.loads(golden.SPOT_STATUS)
    assert list(status) == list(expected)
    assert {**status, "data": None} == {**expected, "data": None}
    [data], [expected_data] = status["data"], expected["data"]
    assert list(data) == list(expected_data)
    assert {**data, "connection_id": 0} == {**expected_data, "connection_id": 0}
    assert 2**63 < data["connection_id"] < 2**64


def test_spot_status_announces_the_system_state_it_is_given(connect: Connect) -> None:
    with _serve(spot_system="maintenance") as replay:
        client = connect(replay.url("spot"))
        assert receive(client)["data"][0]["system"] == "maintenance"
        client.close()


# --- futures requests --------------------------------------------------------


def test_futures_acks_each_product_of_a_request_on_its_own(
    server: ReplayServer, connect: Connect
) -> None:
    client = connect(server.url("futures"))
    receive(client)
    send(client, futures_subscribe("ticker", "PI_XBTUSD", "PF_XBTUSD"))
    acks = [receive(client), receive(client)]
    assert acks[0] == json.loads(golden.FUTURES_SUBSCRIBED_TICKER)
    assert acks[1] == {"event": "subscribed", "feed": "ticker", "product_ids": ["PF_XBTUSD"]}


def test_futures_alerts_on_an_invalid_product_and_serves_the_valid_one(
    server: ReplayServer, connect: Connect
) -> None:
    client = connect(server.url("futures"))
    receive(client)
    send(client, futures_subscribe("trade", "PF_XBTUSD", "PF_NOTAREALTHING"))
    expected_trades = len(session_payloads("futures", {("trade", "PF_XBTUSD")}))
    frames = receive_until(client, lambda got: len(data_frames(got)) == expected_trades)
    assert frames[0] == {"event": "subscribed", "feed": "trade", "product_ids": ["PF_XBTUSD"]}
    assert frames[1]["feed"] == "trade_snapshot"
    assert frames[2] == json.loads(golden.FUTURES_ALERT_INVALID_PRODUCT)
    assert {frame["product_id"] for frame in data_frames(frames)} == {"PF_XBTUSD"}


def test_futures_errors_for_an_unknown_feed_bad_json_and_a_json_ping(
    server: ReplayServer, connect: Connect
) -> None:
    client = connect(server.url("futures"))
    receive(client)
    send(client, futures_subscribe("candles", "PF_XBTUSD"))
    assert receive(client) == json.loads(golden.FUTURES_ERROR_INVALID_FEED)
    client.send('{"event": "subscribe", "feed": ')
    assert receive(client) == json.loads(golden.FUTURES_ERROR_JSON)
    send(client, {"event": "ping"})
    assert receive(client) == {"event": "error", "message": "Bad websocket message"}


def test_futures_heartbeats_come_only_from_the_heartbeat_feed(
    server: ReplayServer, connect: Connect
) -> None:
    client = connect(server.url("futures"))
    receive(client)
    assert nothing_arrives(client, within=4 * HEARTBEAT_S)
    send(client, json.loads(golden.FUTURES_SUBSCRIBE_HEARTBEAT))
    assert receive(client) == json.loads(golden.FUTURES_SUBSCRIBED_HEARTBEAT)
    beats = [receive(client), receive(client)]
    for beat in beats:
        assert list(beat) == list(json.loads(golden.FUTURES_HEARTBEAT))
        assert beat["feed"] == "heartbeat"
        assert abs(beat["time"] - time.time() * 1000) < 5_000
    assert beats[0]["time"] < beats[1]["time"]


# --- spot requests -----------------------------------------------------------


def test_spot_acks_each_symbol_like_kraken(server: ReplayServer, connect: Connect) -> None:
    client = connect(server.url("spot"))
    receive(client)
    send(client, spot_subscribe("trade", "BTC/USD", "ETH/USD", req_id=7, snapshot=False))
    acks = [receive(client), receive(client)]
    expected = json.loads(golden.SPOT_SUBSCRIBED_TRADE)
    for ack, symbol in zip(acks, ("BTC/USD", "ETH/USD"), strict=True):
        assert list(ack) == list(expected)
        assert ack["result"] == {"channel": "trade", "snapshot": False, "symbol": symbol}
        assert (ack["method"], ack["success"], ack["req_id"]) == ("subscribe", True, 7)
        assert RFC3339_US.match(ack["time_in"]) and RFC3339_US.match(ack["time_out"])
        assert ack["time_in"] <= ack["time_out"]


def test_spot_rejects_an_unknown_pair_with_krakens_error(
    server: ReplayServer, connect: Connect
) -> None:
    client = connect(server.url("spot"))
    receive(client)
    send(client, spot_subscribe("trade", "BTC/XYZ", snapshot=True))
    error = receive(client)
    expected = json.loads(golden.SPOT_ERROR_PAIR)
    assert list(error) == list(expected)
    assert {**error, "time_in": None, "time_out": None} == {
        **expected,
        "time_in": None,
        "time_out": None,
    }


def test_spot_rejects_an_unknown_channel(server: ReplayServer, connect: Connect) -> None:
    client = connect(server.url("spot"))
    receive(client)
    send(client, spot_subscribe("candles", "BTC/USD", req_id=2))
    assert receive(client) == json.loads(golden.SPOT_ERROR_CHANNEL)


def test_spot_answers_a_json_ping_with_a_pong(server: ReplayServer, connect: Connect) -> None:
    client = connect(server.url("spot"))
    receive(client)
    client.send(golden.SPOT_PING)
    pong = receive(client)
    expected = json.loads(golden.SPOT_PONG)
    assert list(pong) == list(expected)
    assert (pong["method"], pong["req_id"]) == ("pong", 101)


def test_spot_refuses_requests_past_a_burst_of_fifteen(
    server: ReplayServer, connect: Connect
) -> None:
    client = connect(server.url("spot"))
    receive(client)
    for req_id in range(25):
        send(client, {"method": "ping", "req_id": req_id})
    replies = receive_until(client, lambda got: len(got) == 25)
    assert [reply["req_id"] for reply in replies[:15]] == list(range(15))
    refused = [reply for reply in replies if reply.get("method") != "pong"]
    assert refused
    assert all(reply == json.loads(golden.SPOT_RATE_LIMIT) for reply in refused)


def test_spot_heartbeats_start_only_once_something_is_subscribed(
    server: ReplayServer, connect: Connect
) -> None:
    client = connect(server.url("spot"))
    receive(client)
    assert nothing_arrives(client, within=4 * HEARTBEAT_S)
    send(client, spot_subscribe("ticker", "ETH/USD", snapshot=False))
    frames = receive_until(client, lambda got: got[-1:] == [json.loads(golden.SPOT_HEARTBEAT)])
    assert frames[0]["success"] is True


def test_protocol_pings_are_answered_with_pongs(server: ReplayServer, connect: Connect) -> None:
    client = connect(server.url("futures"))
    receive(client)
    client.ping(b"keep-alive")
    client.settimeout(2)
    opcode, payload = client.recv_data(control_frame=True)
    assert (opcode, payload) == (websocket.ABNF.OPCODE_PONG, b"keep-alive")


# --- what streams ------------------------------------------------------------


def test_streamed_frames_have_the_golden_shapes(
    kept_times_server: ReplayServer, connect: Connect
) -> None:
    futures = connect(kept_times_server.url("futures"))
    spot = connect(kept_times_server.url("spot"))
    receive(futures)
    receive(spot)
    send(futures, futures_subscribe("ticker", "PF_XBTUSD"))
    send(futures, futures_subscribe("trade", "PF_XBTUSD"))
    send(spot, spot_subscribe("ticker", "BTC/USD", event_trigger="bbo", snapshot=True))
    send(spot, spot_subscribe("trade", "BTC/USD", req_id=2, snapshot=True))
    shapes = {
        "ticker": golden.FUTURES_TICKER,
        "trade": golden.FUTURES_TRADE,
        "trade_snapshot": golden.FUTURES_TRADE_SNAPSHOT,
    }
    got = receive_until(futures, lambda got: {f.get("feed") for f in got} >= set(shapes))
    got = [frame for frame in got if "event" not in frame]
    for frame in got:
        if frame.get("feed") in shapes:
            assert set(frame) == set(json.loads(shapes[frame["feed"]])), frame["feed"]
    trades = next(frame for frame in got if frame.get("feed") == "trade_snapshot")["trades"]
    assert [set(trade) for trade in trades] == [set(json.loads(golden.FUTURES_TRADE))] * len(trades)
    assert all(t["bid"] < t["ask"] for t in got if t.get("feed") == "ticker")

    shapes = {"ticker": golden.SPOT_TICKER, "trade": golden.SPOT_TRADE}
    got = receive_until(spot, lambda got: {f.get("channel") for f in data_frames(got)} >= {*shapes})
    for frame in got:
        if frame.get("channel") in shapes:
            [expected_item] = json.loads(shapes[frame["channel"]])["data"]
            for item in frame["data"]:
                assert list(item) == list(expected_item)
                assert "timestamp" not in item or RFC3339_US.match(item["timestamp"])


@pytest.mark.parametrize("api", ["futures", "spot"])
def test_at_max_pace_exactly_the_sessions_frames_arrive_in_order(
    kept_times_server: ReplayServer, connect: Connect, api: str
) -> None:
    client = connect(kept_times_server.url(api))
    receive(client)
    products = sorted(SESSION.products(api))
    for number, channel in enumerate(("ticker", "trade"), start=1):
        if api == "futures":
            send(client, futures_subscribe(channel, *products))
        else:
            send(client, spot_subscribe(channel, *products, req_id=number, snapshot=False))
    expected = [frame.payload for frame in SESSION.frames[api]]
    frames = receive_until(client, lambda got: len(data_frames(got)) == len(expected))
    assert data_frames(frames) == expected
    wait_until(lambda: kept_times_server.finished_streams == 1, 3, "the stream to finish")


def test_only_subscribed_products_and_channels_are_streamed(
    kept_times_server: ReplayServer, connect: Connect
) -> None:
    client = connect(kept_times_server.url("spot"))
    receive(client)
    send(client, spot_subscribe("ticker", "ETH/USD", snapshot=False))
    wait_until(lambda: kept_times_server.finished_streams == 1, 3, "the stream to finish")
    expected = session_payloads("spot", {("ticker", "ETH/USD")})
    frames = receive_until(client, lambda got: len(data_frames(got)) == len(expected))
    assert data_frames(frames) == expected
    # The stream is over: the connection stays open and idles with heartbeats.
    assert receive(client) == json.loads(golden.SPOT_HEARTBEAT)


def test_a_paced_replay_keeps_the_sessions_spacing(connect: Connect) -> None:
    pace = 40.0
    with _serve(keep_times=True, pace=pace) as paced:
        client = connect(paced.url("futures"))
        receive(client)
        subscribed_at = time.monotonic()
        send(client, futures_subscribe("ticker", "PF_XBTUSD"))
        expected = [
            f
            for f in SESSION.frames["futures"]
            if (f.channel, f.product) == ("ticker", "PF_XBTUSD")
        ]
        frames = receive_until(client, lambda got: len(data_frames(got)) == len(expected), 10)
        elapsed = time.monotonic() - subscribed_at
        assert data_frames(frames) == [frame.payload for frame in expected]
        # A lower bound only: a slow machine can make the replay later, never earlier.
        assert elapsed >= expected[-1].offset_ns / pace / 1e9
        client.close()


# --- snapshots ---------------------------------------------------------------


def test_futures_trade_snapshot_comes_newest_first_on_every_subscribe(
    server: ReplayServer, connect: Connect
) -> None:
    client = connect(server.url("futures"))
    receive(client)
    send(client, futures_subscribe("trade", "PI_XBTUSD"))
    streamed = len(session_payloads("futures", {("trade", "PI_XBTUSD")}))
    first = receive_until(client, lambda got: len(data_frames(got)) == streamed)
    send(client, {"event": "unsubscribe", "feed": "trade", "product_ids": ["PI_XBTUSD"]})
    assert receive(client) == {
        "event": "unsubscribed",
        "feed": "trade",
        "product_ids": ["PI_XBTUSD"],
    }
    send(client, futures_subscribe("trade", "PI_XBTUSD"))
    again = receive_until(client, lambda got: len(got) == 2)

    for snapshot in (first[1], again[1]):
        assert snapshot["feed"] == "trade_snapshot"
        seqs = [trade["seq"] for trade in snapshot["trades"]]
        assert seqs == sorted(seqs, reverse=True)
    # The second snapshot reflects what was streamed since the first.
    assert again[1]["trades"][0] == data_frames(first)[-1]
    assert again[1]["trades"][0]["seq"] - first[1]["trades"][0]["seq"] == streamed


def test_spot_trade_snapshot_comes_on_every_resubscribe(
    server: ReplayServer, connect: Connect
) -> None:
    client = connect(server.url("spot"))
    receive(client)
    snapshots = []
    for req_id in (1, 2):
        send(client, spot_subscribe("trade", "BTC/USD", req_id=req_id, snapshot=True))
        frames = receive_until(client, lambda got: any(f.get("type") == "snapshot" for f in got))
        snapshots.append(frames[-1])
        send(
            client, {"method": "unsubscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"]}}
        )
        receive_until(client, lambda got: bool(got) and got[-1].get("method") == "unsubscribe")
    for snapshot in snapshots:
        assert (snapshot["channel"], snapshot["type"]) == ("trade", "snapshot")
        ids = [trade["trade_id"] for trade in snapshot["data"]]
        assert len(ids) == 50
        assert ids == sorted(ids)


def test_spot_ticker_sends_a_snapshot_unless_told_not_to(
    server: ReplayServer, connect: Connect
) -> None:
    client = connect(server.url("spot"))
    receive(client)
    send(client, spot_subscribe("ticker", "BTC/USD"))
    ack, snapshot = receive(client), receive(client)
    assert ack["result"] == {
        "channel": "ticker",
        "event_trigger": "trades",
        "snapshot": True,
        "symbol": "BTC/USD",
    }
    assert (snapshot["channel"], snapshot["type"]) == ("ticker", "snapshot")
    assert snapshot["data"][0]["symbol"] == "BTC/USD"


# --- exchange times ----------------------------------------------------------


@pytest.mark.parametrize("api", ["futures", "spot"])
def test_exchange_times_are_shifted_so_the_session_starts_now(
    server: ReplayServer, connect: Connect, api: str
) -> None:
    client = connect(server.url(api))
    receive(client)
    products = sorted(SESSION.products(api))
    subscribed_ms = time.time_ns() // 1_000_000
    for number, channel in enumerate(("ticker", "trade"), start=1):
        if api == "futures":
            send(client, futures_subscribe(channel, *products))
        else:
            send(client, spot_subscribe(channel, *products, req_id=number, snapshot=False))
    originals = [frame.payload for frame in SESSION.frames[api]]
    frames = data_frames(receive_until(client, lambda got: len(data_frames(got)) == len(originals)))

    def epoch_ms(frame: dict[str, Any]) -> int:
        if api == "futures":
            return int(frame["time"])
        return parse_rfc3339_us(frame["data"][0]["timestamp"]) // 1000

    first_trade = next(i for i, frame in enumerate(originals) if is_trade(frame))
    delta_ms = epoch_ms(frames[first_trade]) - epoch_ms(originals[first_trade])
    session_start_ms = SESSION.start_ns // 1_000_000
    assert abs(session_start_ms + delta_ms - subscribed_ms) < 1_000
    assert frames == [shift_times(api, original, delta_ms) for original in originals]


def test_keep_times_sends_the_sessions_own_times(
    kept_times_server: ReplayServer, connect: Connect
) -> None:
    client = connect(kept_times_server.url("futures"))
    receive(client)
    send(client, futures_subscribe("trade", "PF_XBTUSD"))
    snapshot = receive_until(client, lambda got: len(got) == 2)[1]
    assert snapshot == SESSION.trade_snapshot("futures", "PF_XBTUSD", 0)


# --- captures ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["capture.jsonl", "capture.jsonl.gz"])
def test_a_capture_reads_back_exactly_what_was_written(tmp_path: Path, name: str) -> None:
    written = [
        CapturedFrame(1_786_046_338_005_000_000, "futures", golden.FUTURES_TICKER),
        CapturedFrame(1_786_046_338_006_000_000, "spot", golden.SPOT_TRADE),
        CapturedFrame(1_786_046_338_007_000_000, "spot", '{"symbol":"€/USD","note":"\\n"}'),
    ]
    with CaptureWriter(tmp_path / name) as capture:
        capture.write("futures", written[0].received_time_ns, written[0].frame.encode())
        capture.write("spot", written[1].received_time_ns, written[1].frame)
        capture.write("spot", written[2].received_time_ns, written[2].frame.encode())
    raw = (tmp_path / name).read_bytes()
    assert raw.startswith(b"\x1f\x8b") == name.endswith(".gz")
    lines = (gzip.decompress(raw) if name.endswith(".gz") else raw).splitlines()
    assert json.loads(lines[0]) == {
        "received_time_ns": written[0].received_time_ns,
        "api": "futures",
        "frame": golden.FUTURES_TICKER,
    }
    assert read_capture(tmp_path / name) == written


def test_a_bad_capture_line_is_reported_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"received_time_ns": 1, "api": "futures", "frame": "{}"}\n{"api": "bond"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not a capture line"):
        read_capture(path)


def _recorded_capture(path: Path) -> None:
    """What an ingest worker with ``--capture`` writes: banners, acks, snapshots and data."""
    start = 1_786_046_338_000_000_000
    futures_trade = json.loads(golden.FUTURES_TRADE)
    lines = [
        ("futures", golden.FUTURES_INFO),
        ("futures", '{"event":"subscribed","feed":"trade","product_ids":["PI_XBTUSD"]}'),
        ("futures", golden.FUTURES_TRADE_SNAPSHOT),
        ("futures", json.dumps({**futures_trade, "product_id": "PI_XBTUSD", "seq": 102})),
        ("spot", golden.SPOT_STATUS),
        ("spot", golden.SPOT_SUBSCRIBED_TRADE),
        ("spot", golden.SPOT_TICKER),
        ("futures", golden.FUTURES_TICKER),
        ("spot", golden.SPOT_TRADE),
        ("futures", json.dumps({**futures_trade, "product_id": "PI_XBTUSD", "seq": 103})),
        ("futures", golden.FUTURES_HEARTBEAT),
        ("spot", golden.SPOT_HEARTBEAT),
    ]
    with CaptureWriter(path) as capture:
        for index, (api, frame) in enumerate(lines):
            capture.write(api, start + index * 10_000_000, frame)


def test_a_capture_is_served_as_recorded(tmp_path: Path, connect: Connect) -> None:
    _recorded_capture(tmp_path / "kraken.jsonl.gz")
    session = session_from_capture(read_capture(tmp_path / "kraken.jsonl.gz"))
    assert [(f.channel, f.product) for f in session.frames["futures"]] == [
        ("trade", "PI_XBTUSD"),
        ("ticker", "PF_XBTUSD"),
        ("trade", "PI_XBTUSD"),
    ]
    with ReplayServer(session, keep_times=True, settle_s=0.02) as replay:
        futures = connect(replay.url("futures"))
        receive(futures)
        send(futures, futures_subscribe("trade", "PI_XBTUSD"))
        send(futures, futures_subscribe("ticker", "PF_XBTUSD"))
        frames = receive_until(futures, lambda got: len(data_frames(got)) == 3)
        snapshot = json.loads(golden.FUTURES_TRADE_SNAPSHOT)
        assert [f for f in frames if f.get("feed") == "trade_snapshot"] == [snapshot]
        assert [f.get("seq") for f in data_frames(frames)] == [102, None, 103]
        assert data_frames(frames)[1] == json.loads(golden.FUTURES_TICKER)

        spot = connect(replay.url("spot"))
        receive(spot)
        send(spot, spot_subscribe("ticker", "BTC/USD", snapshot=True))
        send(spot, spot_subscribe("trade", "BTC/USD", req_id=2, snapshot=False))
        frames = receive_until(spot, lambda got: len(data_frames(got)) == 1)
        assert json.loads(golden.SPOT_TICKER) in frames
        assert data_frames(frames) == [json.loads(golden.SPOT_TRADE)]
        futures.close()
        spot.close()


# --- the connection ----------------------------------------------------------


def test_an_unknown_path_is_refused_with_404(server: ReplayServer) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws/v2", timeout=2)
    assert refused.value.status_code == 404


def _masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + mask + body


def test_a_request_sent_right_behind_the_upgrade_is_answered(server: ReplayServer) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = (
        f"GET /ws/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    request = json.dumps(futures_subscribe("ticker", "PF_XBTUSD")).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as raw:
        raw.sendall(upgrade.encode() + _masked_text_frame(request))
        received = b""
        deadline = time.monotonic() + 2
        while b'"event":"subscribed"' not in received:
            assert time.monotonic() < deadline, received
            received += raw.recv(65536)
    assert received.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")


def test_stop_closes_every_connection_with_going_away(connect: Connect) -> None:
    replay = _serve().start()
    client = connect(replay.url("spot"))
    receive(client)
    stopping = threading.Thread(target=replay.stop)
    stopping.start()
    client.settimeout(2)
    opcode, frame = client.recv_data_frame(control_frame=True)
    stopping.join(timeout=5)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(frame.data[:2], "big") == 1001
    assert not stopping.is_alive()


# --- the command -------------------------------------------------------------


def test_pace_is_max_original_or_a_speed_up() -> None:
    assert parse_pace("max") is None
    assert parse_pace("original") == 1.0
    assert parse_pace("10x") == 10.0
    assert parse_pace("2.5x") == 2.5
    for bad in ("10", "fast", "0x", "-2x", "x"):
        with pytest.raises(ValueError, match="--pace"):
            parse_pace(bad)


def _replay_command(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "krakenfeed", "replay-server", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def _urls(process: subprocess.Popen[str], timeout: float = 20) -> dict[str, str]:
    assert process.stdout is not None
    stdout = process.stdout
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    urls = {}
    deadline = time.monotonic() + timeout
    while len(urls) < 2:
        api, url = lines.get(timeout=max(deadline - time.monotonic(), 0.01)).split()
        urls[api] = url
    return urls


def test_the_command_serves_a_capture_until_sigterm(tmp_path: Path, connect: Connect) -> None:
    _recorded_capture(tmp_path / "kraken.jsonl")
    with _replay_command(
        "--capture",
        str(tmp_path / "kraken.jsonl"),
        env={"KRAKENFEED_KEEP_TIMES": "true", "KRAKENFEED_PACE": "max"},
    ) as process:
        urls = _urls(process)
        assert set(urls) == {"futures", "spot"}
        assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/ws/v1", urls["futures"])
        client = connect(urls["futures"])
        receive(client)
        send(client, futures_subscribe("ticker", "PF_XBTUSD"))
        frames = receive_until(client, lambda got: len(data_frames(got)) == 1)
        assert data_frames(frames) == [json.loads(golden.FUTURES_TICKER)]
        process.send_signal(signal.SIGTERM)
        opcode, _ = client.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert process.wait(timeout=10) == 0


def test_the_command_refuses_a_bad_pace_from_its_env_var() -> None:
    with _replay_command(env={"KRAKENFEED_PACE": "fast"}) as process:
        _, stderr = process.communicate(timeout=20)
    assert process.returncode != 0
    assert "--pace: got 'fast'" in stderr


def test_records_become_the_frames_ingest_turns_back_into_the_same_records() -> None:
    records = generate_market(seed=2, duration_s=300, warmup_s=60, anomaly_every_s=80).records
    session = session_from_records(records)
    protocols = {
        "futures": FuturesProtocol(["PF_XBTUSD"], ["ticker", "trade"], ValidationSettings(0)),
        "spot": SpotProtocol(["BTC/USD"], ["ticker", "trade"], ValidationSettings(0)),
    }
    decoded: list[Any] = []
    for api, frames in session.frames.items():
        for frame in frames:
            received_ns = session.start_ns + frame.offset_ns
            decoded += protocols[api].handle(msgspec.json.encode(frame.payload), received_ns)

    def without_receive_time(record: object) -> object:
        return msgspec.structs.replace(record, received_time_ns=0)  # type: ignore[type-var]

    expected = sorted(
        (without_receive_time(r) for r in records if r.exchange_time_ms is not None),
        key=repr,
    )
    spot_tickers = [r for r in decoded if r.exchange_time_ms is None]
    assert (
        sorted(
            (without_receive_time(r) for r in decoded if r.exchange_time_ms is not None), key=repr
        )
        == expected
    )
    assert len(spot_tickers) == sum(1 for r in records if r.exchange_time_ms is None)


def test_the_command_plays_a_fault_script_connection_by_connection(connect: Connect) -> None:
    script = "refuse:429 | inject:malformed@0 + close:1011@3 | drop@2 | silence:30@1"
    with _replay_command(
        "--generate-products", "PF_XBTUSD", "--generate-count", "50", "--live", "true",
        "--faults", script, "--heartbeat-interval-s", "0.1",
        env={"KRAKENFEED_KEEP_TIMES": "true"},
    ) as process:  # fmt: skip
        url = _urls(process)["futures"]
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            connect(url)
        assert refused.value.status_code == 429

        def subscribed() -> websocket.WebSocket:
            client = connect(url)
            receive(client)  # info
            send(client, futures_subscribe("ticker", "PF_XBTUSD"))
            return client

        client = subscribed()
        frames = []
        while True:
            opcode, data = client.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            frames.append(data.decode())
        assert int.from_bytes(data[:2], "big") == 1011
        assert '{"feed":"ticker","product_id":"PF_XBTUSD","bid":644' in frames
        assert len([f for f in frames if f.startswith('{"time"')]) == 3
        client.close()

        client = subscribed()
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            while True:
                client.recv_data()

        client = subscribed()
        received = receive_until(client, lambda got: len(data_frames(got)) == 1)
        assert nothing_arrives(client, within=0.5), "silence: not even a heartbeat"
        assert [f["time"] for f in data_frames(received)], "the live market moved on"
        process.terminate()
        process.wait(timeout=10)


def test_the_command_refuses_a_bad_fault_script() -> None:
    with _replay_command(env={"KRAKENFEED_FAULTS": "drop@soon"}) as process:
        _, stderr = process.communicate(timeout=20)
    assert process.returncode != 0
    assert "@ in 'drop@soon'" in stderr
