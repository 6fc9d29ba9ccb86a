"""What tracing costs: ingest and detector throughput with tracing off, at 1% and at
100% sampling, side by side in one run, exporting over OTLP/gRPC to a real receiver
in its own process on the other core.

Wall-clock throughput on this shared machine moves by ±10% from round to round,
and drifts over minutes, so the process CPU time per record (the measured process
only: its librdkafka threads and the span exporter's thread included, the servers
and the receiver not) is reported too, and the comparison the target is about
(off against 1%) gets many short rounds in A-B-B-A order, so that a drift hits
both modes alike. 100% is an order of magnitude slower and runs fewer rounds.
Each figure is the median over its rounds.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.detector_throughput import THROUGHPUT_SECONDS, _detect_until_written, _TimedSink
from benchmarks.ingest_throughput import _krakenfeed, generated_session_server
from benchmarks.runner import Measurement, Result, Servers, benchmark, in_turn
from krakenfeed.contracts import (
    FeedId,
    Stream,
    Ticker,
    Trade,
    encode_record,
    record_key,
    record_timestamp_ms,
)
from krakenfeed.embedded import wait_until
from krakenfeed.embedded.net import free_port, port_open
from krakenfeed.kafka import contract_topics, make_application
from krakenfeed.market import generate_market
from krakenfeed.telemetry import Tracing, configure_tracing

MODES: dict[str, float | None] = {"off": None, "1%": 0.01, "100%": 1.0}
INGEST_ROUNDS = (8, 2)
"""Ingest rounds of off and 1% each, and of 100%."""
DETECTOR_ROUNDS = (6, 1)
_RECEIVER = """
import logging, sys, time
from oteltest.sink import GrpcSink
from oteltest.sink.handler import RequestHandler

class Drop(RequestHandler):
    def handle_trace(self, request, headers): pass
    def handle_metrics(self, request, headers): pass
    def handle_logs(self, request, headers): pass

sink = GrpcSink(Drop(), logging.getLogger("receiver"), port=int(sys.argv[1]))
sink.start()
while True:
    time.sleep(60)
"""


@contextmanager
def otlp_receiver() -> Iterator[str]:
    """An OTLP/gRPC receiver that drops what it gets, away from the measured core."""
    measured = max(os.sched_getaffinity(0))
    others = {c for c in range(os.cpu_count() or 1) if c != measured} or {measured}
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _RECEIVER, str(port)],
        preexec_fn=lambda: os.sched_setaffinity(0, others),  # noqa: PLW1509
    )
    try:
        wait_until(lambda: port_open(port), 30, "the OTLP receiver")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _tracing(endpoint: str, ratio: float | None, service: str) -> Tracing | None:
    """What ``krakenfeed`` builds from the operator's variables at this ratio."""
    if ratio is None:
        return None
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": f"{ratio:g}",
        "OTEL_SERVICE_NAME": service,
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return configure_tracing(service)
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def _ingest_round(url: str, broker: str, frames: int, endpoint: str, ratio: float | None) -> Any:
    tracing = _tracing(endpoint, ratio, "bench-ingest")
    cpu = time.process_time()
    seconds, records = _krakenfeed(url, broker, frames, tracing)
    if tracing:
        tracing.shutdown()  # the export of what is still queued counts as CPU too
    return seconds, records, time.process_time() - cpu


def _publish(
    servers: Servers, feed: FeedId, records: list[Ticker | Trade], tracing: Tracing | None
) -> None:
    """The records as ingest would produce them at this ratio: sampled ones carry
    their send span's context in a ``traceparent`` header."""
    app = make_application(servers.kafka.bootstrap)
    topics = contract_topics(app, servers.kafka.bootstrap, feed, list(Stream))
    names = {Ticker: topics[Stream.TICKER].name, Trade: topics[Stream.TRADE].name}
    with app.get_producer() as producer:
        for record in records:
            name, key = names[type(record)], record_key(record)
            headers = tracing.start_send(name, key, time.time_ns()) if tracing else None
            producer.produce(
                name,
                encode_record(record),
                key,
                timestamp=record_timestamp_ms(record),
                headers=headers,
            )
            if headers is not None and tracing is not None:
                tracing.end_send(name)
    if tracing:
        tracing.shutdown()


def _detector_round(
    servers: Servers, records: list[Ticker | Trade], endpoint: str, ratio: float | None
) -> tuple[float, float]:
    feed = FeedId("bench", f"traced-{uuid.uuid4().hex[:8]}")
    _publish(servers, feed, records, _tracing(endpoint, ratio, "bench-publisher"))
    tracing = _tracing(endpoint, ratio, "bench-detector")
    sink = _TimedSink(feed, servers.postgres.url, tracing=tracing)
    cpu = time.process_time()
    _detect_until_written(servers, feed, sink, "exactly-once", len(records), 300, tracing)
    if tracing:
        tracing.shutdown()
    cpu = time.process_time() - cpu
    assert sink.first_add is not None
    return len(records) / (sink.last_flush - sink.first_add), cpu


def _schedule(compared: int, full: int) -> list[str]:
    """The modes in running order: off and 1% in A-B-B-A pairs, 100% after the
    first ``full`` pairs."""
    order: list[str] = []
    for pair, modes in enumerate(in_turn(("off", "1%"), compared)):
        order += modes
        if pair < full:
            order.append("100%")
    return order


def _compare(
    what: str, unit: str, by_mode: dict[str, float], higher_is_better: bool
) -> list[Measurement]:
    return [
        Measurement(
            f"{what} at {mode}",
            unit,
            by_mode[mode],
            by_mode["off"],
            "tracing off",
            higher_is_better=higher_is_better,
            # The target: at most 10% overhead at 1%.
            target_ratio=(0.9 if higher_is_better else 1.1) if mode == "1%" else None,
        )
        for mode in ("1%", "100%")
    ]


@benchmark("tracing")
def tracing_overhead(servers: Servers) -> Result:
    broker = servers.kafka.bootstrap
    ingest: dict[str, list[tuple[float, int, float]]] = {mode: [] for mode in MODES}
    detector: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    records = generate_market(seed=1, duration_s=THROUGHPUT_SECONDS).records
    with otlp_receiver() as endpoint:
        with generated_session_server() as (url, frames):
            for mode in _schedule(*INGEST_ROUNDS):
                ingest[mode].append(_ingest_round(url, broker, frames, endpoint, MODES[mode]))
        for mode in _schedule(*DETECTOR_ROUNDS):
            detector[mode].append(_detector_round(servers, records, endpoint, MODES[mode]))

    frames_per_s = {
        m: statistics.median(frames / s for s, _, _ in runs) for m, runs in ingest.items()
    }
    ingest_cpu_us = {
        m: statistics.median(cpu / n * 1e6 for _, n, cpu in runs) for m, runs in ingest.items()
    }
    events_per_s = {m: statistics.median(rate for rate, _ in runs) for m, runs in detector.items()}
    detector_cpu_us = {
        m: statistics.median(cpu / len(records) * 1e6 for _, cpu in runs)
        for m, runs in detector.items()
    }
    return Result(
        name="tracing",
        description=(
            f"ingest: {frames:,} replayed futures frames; detector: {len(records):,} events,"
            " exactly-once; tracing off, at 1% and at 100% (parentbased_traceidratio),"
            " exporting over OTLP/gRPC to a receiver on the other core; rounds of"
            f" off/1%/100%: ingest {INGEST_ROUNDS[0]}/{INGEST_ROUNDS[0]}/{INGEST_ROUNDS[1]},"
            f" detector {DETECTOR_ROUNDS[0]}/{DETECTOR_ROUNDS[0]}/{DETECTOR_ROUNDS[1]}"
        ),
        measurements=[
            *_compare("ingest frames", "frames/s", frames_per_s, True),
            *_compare("ingest CPU per record", "µs", ingest_cpu_us, False),
            *_compare("detector events", "events/s", events_per_s, True),
            *_compare("detector CPU per event", "µs", detector_cpu_us, False),
        ],
        details={
            # Pair i is the i-th off round and the i-th 1% round, run back to back.
            "ingest_frames_1%_to_off_each_pair": [
                round(off_s / one_s, 3)
                for (off_s, _, _), (one_s, _, _) in zip(ingest["off"], ingest["1%"], strict=True)
            ],
            "detector_events_1%_to_off_each_pair": [
                round(one / off, 3)
                for (off, _), (one, _) in zip(detector["off"], detector["1%"], strict=True)
            ],
            "ingest_frames_per_s_each_round": {
                m: [round(frames / s) for s, _, _ in runs] for m, runs in ingest.items()
            },
            "ingest_cpu_us_per_record_each_round": {
                m: [round(cpu / n * 1e6, 2) for _, n, cpu in runs] for m, runs in ingest.items()
            },
            "detector_events_per_s_each_round": {
                m: [round(rate) for rate, _ in runs] for m, runs in detector.items()
            },
            "detector_cpu_us_per_event_each_round": {
                m: [round(cpu / len(records) * 1e6, 2) for _, cpu in runs]
                for m, runs in detector.items()
            },
        },
    )
