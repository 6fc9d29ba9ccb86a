"""Ingest: replay as fast as possible → krakenfeed's worker → the real broker, against
two baselines reading the same replay in the same run:

- the bare loop: recv with skip_utf8_validation, msgspec decode, the bid <= ask
  check, msgspec encode and an idempotent confluent-kafka produce — the limit;
- the tutorial pattern: websocket-client with defaults, ``json.loads`` and one
  quixstreams ``produce()`` per message.

The replay server runs in its own process on the other core.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import websocket
from confluent_kafka import Producer

from benchmarks.baseline_processes import bare_loop, tutorial_loop
from benchmarks.runner import Measurement, Result, Servers, benchmark, other_cores
from krakenfeed.contracts import FeedId
from krakenfeed.embedded import wait_until
from krakenfeed.ingest.protocol import FuturesProtocol
from krakenfeed.ingest.worker import IngestSettings, IngestWorker
from krakenfeed.kafka import PRODUCER_CONFIG, make_application
from krakenfeed.replay.session import generate_session
from krakenfeed.telemetry import Tracing

PRODUCTS = ("PF_XBTUSD", "PI_XBTUSD")
FRAMES_PER_STREAM = 40_000
SEED = 11
ROUNDS = 3


@contextmanager
def replay_server(*options: str) -> Iterator[str]:
    """``krakenfeed replay-server OPTIONS…``, pinned away from the measured core;
    yields its futures URL."""
    cores = other_cores()
    process = subprocess.Popen(
        [sys.executable, "-m", "krakenfeed", "replay-server", *options],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),  # noqa: PLW1509
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[1]
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def generated_session_server() -> Iterator[tuple[str, int]]:
    """The replay server playing this benchmark's generated session at full pace;
    yields its futures URL and the data frames a subscriber receives from it."""
    session = generate_session(
        "futures", PRODUCTS, count_per_product_channel=FRAMES_PER_STREAM, seed=SEED
    )
    # Every subscriber first gets one trade snapshot per product.
    frames = len(session.frames["futures"]) + len(PRODUCTS)
    options = (
        "--generate-products", ",".join(PRODUCTS), "--generate-count", str(FRAMES_PER_STREAM),
        "--seed", str(SEED), "--pace", "max", "--keep-times", "true",
    )  # fmt: skip
    with replay_server(*options) as url:
        yield url, frames


def _subscribe(ws: websocket.WebSocket) -> None:
    for request in FuturesProtocol(PRODUCTS, ("ticker", "trade")).subscribe_requests():
        ws.send(request)


def _krakenfeed(
    url: str, broker: str, frames: int, tracing: Tracing | None = None
) -> tuple[float, int]:
    worker = IngestWorker(
        IngestSettings(
            feed=FeedId("bench", f"ingest-{uuid.uuid4().hex[:8]}"),
            api="futures",
            products=PRODUCTS,
            channels=("ticker", "trade"),
            broker=broker,
            url=url,
            max_clock_skew_ms=0,
        ),
        tracing=tracing,
    )
    data_kinds = ("ticker", "trade", "trade_snapshot")
    thread = threading.Thread(target=worker.run)
    started = time.perf_counter()
    thread.start()
    wait_until(
        lambda: sum(worker.metrics.frames[k] for k in data_kinds) >= frames,
        300,
        f"{frames} data frames",
        interval=0.01,
    )
    worker.stop()
    thread.join()
    seconds = time.perf_counter() - started
    produced = worker.metrics.produced["Ticker"] + worker.metrics.produced["Trade"]
    assert worker.metrics.invalid.total() == 0, worker.metrics.invalid
    return seconds, produced


def _bare_loop(url: str, broker: str, frames: int) -> float:
    topic = f"bench.bare.{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": broker, **PRODUCER_CONFIG})
    started = time.perf_counter()
    ws = websocket.create_connection(url, skip_utf8_validation=True)
    _subscribe(ws)
    bare_loop(ws, producer, topic, frames)
    seconds = time.perf_counter() - started
    ws.close()
    return seconds


def _tutorial(url: str, broker: str, frames: int) -> float:
    topic = f"bench.tutorial.{uuid.uuid4().hex[:8]}"
    app = make_application(broker)
    producer = app.get_producer()
    started = time.perf_counter()
    ws = websocket.create_connection(url)
    _subscribe(ws)
    tutorial_loop(ws, producer, topic, frames)
    seconds = time.perf_counter() - started
    ws.close()
    return seconds


@benchmark("ingest")
def ingest_throughput(servers: Servers) -> Result:
    broker = servers.kafka.bootstrap
    # Interleaved rounds, median of each: this shared machine's noise moves single
    # runs by ±10%, more than the margins being measured.
    bares, tutorials, ours = [], [], []
    with generated_session_server() as (url, frames):
        for _ in range(ROUNDS):
            bares.append(_bare_loop(url, broker, frames))
            tutorials.append(_tutorial(url, broker, frames))
            seconds, records = _krakenfeed(url, broker, frames)
            ours.append(seconds)
    bare, tutorial, kf_seconds = (statistics.median(x) for x in (bares, tutorials, ours))
    return Result(
        name="ingest",
        description=(
            f"{frames:,} futures ticker+trade frames replayed at max pace over a real "
            "WebSocket to the real broker, client on one core"
        ),
        measurements=[
            Measurement(
                "frames vs bare loop",
                "frames/s",
                frames / kf_seconds,
                frames / bare,
                "bare loop",
                target_ratio=0.8,
            ),
            Measurement(
                "frames vs tutorial",
                "frames/s",
                frames / kf_seconds,
                frames / tutorial,
                "tutorial pattern",
                target_ratio=5.0,
            ),
            Measurement(
                "records produced",
                "records/s",
                records / kf_seconds,
                frames / bare,
                "bare loop frames",
            ),
        ],
        details={
            "frames": frames,
            "records": records,
            "rounds": ROUNDS,
            "frames_per_s_each_round": {
                "krakenfeed": [round(frames / t) for t in ours],
                "bare loop": [round(frames / t) for t in bares],
                "tutorial pattern": [round(frames / t) for t in tutorials],
            },
        },
    )
