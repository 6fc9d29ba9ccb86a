"""The baselines krakenfeed's workers are measured against, as loops over one socket.

``ingest`` runs them in its own process for a count of frames; ``e2e`` runs each as a
process of its own, until SIGTERM, so that its RSS is its alone:

    python -m benchmarks.baseline_processes bare URL BROKER TOPIC REQUESTS PRODUCER_CONFIG
    python -m benchmarks.baseline_processes tutorial URL BROKER TOPIC REQUESTS PRODUCER_CONFIG
    python -m benchmarks.baseline_processes apply BROKER TOPIC

(REQUESTS: the subscribe requests as a JSON list; PRODUCER_CONFIG: JSON.) A process
imports only what its pattern needs: quixstreams only for ``tutorial`` and ``apply``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from typing import Any

import msgspec
import websocket

from krakenfeed.ingest.frames import FuturesData, FuturesTicker

RECEIVED_HEADER = "received_time_ns"


def bare_loop(
    ws: websocket.WebSocket,
    producer: Any,
    topic: str,
    frames: int | None = None,
    stamp: bool = False,
) -> None:
    """recv without the UTF-8 check → msgspec decode → bid <= ask → msgspec encode →
    confluent-kafka produce, for ``frames`` data frames (None: until killed); with
    ``stamp``, each record carries its frame's receive time in a header."""
    decode = msgspec.json.Decoder(FuturesData).decode
    encode = msgspec.json.Encoder().encode
    seen = 0
    while frames is None or seen < frames:
        _, data = ws.recv_data()
        received = time.time_ns()
        if b'"event"' in data or b'"heartbeat"' in data:
            continue
        frame = decode(data)
        seen += 1
        if type(frame) is FuturesTicker and frame.bid > frame.ask:
            continue
        stamped = {"headers": {RECEIVED_HEADER: b"%d" % received}} if stamp else {}
        producer.produce(topic, encode(frame), getattr(frame, "product_id", None), **stamped)
        if not seen % 1000:
            producer.poll(0)
    producer.flush()


def tutorial_loop(ws: websocket.WebSocket, producer: Any, topic: str, frames: int | None) -> None:
    """websocket-client's ``recv`` with its defaults, ``json.loads``, one quixstreams
    ``produce()`` per message, for ``frames`` data frames (None: until killed)."""
    seen = 0
    while frames is None or seen < frames:
        message = json.loads(ws.recv())
        if "event" in message or message.get("feed") == "heartbeat":
            continue
        seen += 1
        producer.produce(
            topic, json.dumps(message).encode(), key=message.get("product_id", "").encode()
        )
    producer.flush()


def _connect(url: str, requests: list[str], **options: Any) -> websocket.WebSocket:
    ws = websocket.create_connection(url, **options)
    for request in requests:
        ws.send(request)
    return ws


def _apply(broker: str, topic: str) -> None:
    """One stateful quixstreams ``apply`` counting per key, from the topic's start."""
    from quixstreams import Application

    def count(value: bytes, state: Any) -> bytes:
        state.set("n", state.get("n", 0) + 1)
        return value

    with tempfile.TemporaryDirectory() as state_dir:
        app = Application(
            broker_address=broker,
            consumer_group=f"{topic}-apply",
            auto_offset_reset="earliest",
            state_dir=state_dir,
            # Tansu answers a group join after session.timeout.ms / 2.
            consumer_extra_config={"session.timeout.ms": 6000},
            loglevel="WARNING",
        )
        app.dataframe(app.topic(topic, value_deserializer="bytes")).apply(count, stateful=True)
        app.run()


def main(argv: list[str]) -> None:
    role, *args = argv
    if role == "apply":
        _apply(*args)
        return
    url, broker, topic, requests, config = args
    producer_config = json.loads(config)
    if role == "bare":
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": broker, **producer_config})
        ws = _connect(url, json.loads(requests), skip_utf8_validation=True)
        bare_loop(ws, producer, topic, stamp=True)
    elif role == "tutorial":
        from quixstreams import Application

        app = Application(broker_address=broker, producer_extra_config=producer_config)
        ws = _connect(url, json.loads(requests))
        tutorial_loop(ws, app.get_producer(), topic, None)
    else:
        raise SystemExit(f"unknown baseline {role!r}: bare, tutorial or apply")


if __name__ == "__main__":
    main(sys.argv[1:])
