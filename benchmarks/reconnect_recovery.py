"""Reconnect recovery: how long from a dropped socket to the first record after
resubscribing, over 50 drops, against a floor measured in the same run.

``krakenfeed replay-server --live true`` plays a futures market at 20× on the other
core and drops every connection (no close frame) after 40 data frames. The worker
runs with no backoff penalty (every connection counts as healthy, so each drop is
retried at once); its clock marks the drop (the failed read) and the first ticker
or trade it hands to the producer on the new connection.

Baseline: a bare websocket-client doing the least a client can — connect,
subscribe, wait for the first new data frame — against a second live server with
the same market and no faults. Both wait for the market's next frame, which at
20× comes every ~5 ms.
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

import msgspec
import websocket

from benchmarks.runner import Measurement, Result, Servers, benchmark
from krakenfeed.contracts import FeedId
from krakenfeed.embedded import wait_until
from krakenfeed.ingest.protocol import FuturesProtocol
from krakenfeed.ingest.resilience import BackoffPolicy
from krakenfeed.ingest.worker import IngestSettings, IngestWorker

PRODUCTS = ("PF_XBTUSD", "PI_XBTUSD")
DROPS = 50
FRAMES_BEFORE_DROP = 40
FRAMES_PER_STREAM = 1_500
PACE = "20x"
TARGET_P99_S = 2.0


@contextmanager
def live_server(faults: str | None) -> Iterator[str]:
    """A live, paced ``krakenfeed replay-server`` pinned away from the measured core."""
    measured = max(os.sched_getaffinity(0))
    other_core = {c for c in range(os.cpu_count() or 1) if c != measured} or {measured}
    args = [
        sys.executable, "-m", "krakenfeed", "replay-server",
        "--generate-products", ",".join(PRODUCTS),
        "--generate-count", str(FRAMES_PER_STREAM),
        "--pace", PACE, "--keep-times", "true", "--live", "true",
        "--heartbeat-interval-s", "1",
    ]  # fmt: skip
    if faults:
        args += ["--faults", faults]
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, other_core),  # noqa: PLW1509
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().split()[1]
    finally:
        process.terminate()
        process.wait(timeout=10)


def _bare_recoveries(url: str, count: int) -> list[float]:
    """Seconds from starting to connect to the first data frame that is not a snapshot."""
    requests = FuturesProtocol(PRODUCTS, ("ticker", "trade")).subscribe_requests()
    out = []
    for _ in range(count):
        started = time.perf_counter_ns()
        ws = websocket.create_connection(url, skip_utf8_validation=True)
        for request in requests:
            ws.send(request)
        while True:
            _, data = ws.recv_data()
            message = msgspec.json.decode(data)
            if "event" not in message and message.get("feed") in ("ticker", "trade"):
                break
        out.append((time.perf_counter_ns() - started) / 1e9)
        ws.close()
    return out


def _percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


@benchmark("reconnect")
def reconnect_recovery(servers: Servers) -> Result:
    with live_server(None) as url:
        bare = _bare_recoveries(url, DROPS)
    script = f"drop@{FRAMES_BEFORE_DROP}*{DROPS}"
    with live_server(script) as url:
        worker = IngestWorker(
            IngestSettings(
                feed=FeedId("bench", f"reconnect-{uuid.uuid4().hex[:8]}"),
                api="futures",
                products=PRODUCTS,
                channels=("ticker", "trade"),
                broker=servers.kafka.bootstrap,
                url=url,
                max_clock_skew_ms=0,
                backoff=BackoffPolicy(healthy_s=0),
            )
        )
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            wait_until(lambda: len(worker.recoveries) >= DROPS, 300, f"{DROPS} recoveries", 0.05)
        finally:
            worker.stop()
            thread.join()
    seconds = [
        (r.first_record_ns - r.dropped_ns) / 1e9
        for r in list(worker.recoveries)[:DROPS]
        if r.first_record_ns is not None
    ]
    downtime = [(r.connected_ns - r.dropped_ns) / 1e9 for r in list(worker.recoveries)[:DROPS]]
    p99 = _percentile(seconds, 99)
    return Result(
        name="reconnect",
        description=(
            f"{DROPS} drops without a close frame, live futures replay at {PACE}:"
            " drop → first record after resubscribing, no backoff penalty"
        ),
        measurements=[
            Measurement(
                "recovery p50",
                "s",
                statistics.median(seconds),
                statistics.median(bare),
                "bare connect+subscribe to first frame",
                higher_is_better=False,
            ),
            Measurement(
                "recovery p99",
                "s",
                p99,
                _percentile(bare, 99),
                "bare connect+subscribe to first frame",
                higher_is_better=False,
            ),
        ],
        details={
            "drops": len(seconds),
            "target_p99_s": TARGET_P99_S,
            "target_met": p99 <= TARGET_P99_S,
            "max_s": round(max(seconds), 4),
            "reconnect_downtime_p50_s": round(statistics.median(downtime), 4),
            "reconnect_downtime_p99_s": round(_percentile(downtime, 99), 4),
            "recovery_s_each_drop": [round(s, 4) for s in seconds],
        },
    )
