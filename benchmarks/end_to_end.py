"""End to end, every stage its own process as in production: the replay server
(a local Kraken, on the other core) → ``krakenfeed ingest`` → Tansu → ``krakenfeed
detect`` → the anomalies topic and PostgreSQL.

Latency runs from the moment ingest received the frame (its record's
``received_time_ns``) to the anomaly that frame raised, read from the anomalies topic,
and to the commit of the anomaly's row (PostgreSQL's own commit timestamp of the
row, ``pg_xact_commit_timestamp(xmin)``, on the same clock). An anomaly is paired
with its frame through its event time, which is the Kafka timestamp (exchange time)
of the record that raised it (``record_triggered``). Baseline: the bare hop, a bare
confluent-kafka loop stamping each frame's receive time into a header → the same
broker → a consumer on the other side.

The market is the detector benchmark's, futures only: 320 products at about 1k
events/s. Its warm-up is produced straight to the input topics (as a backlog the
detector works through first); then ingest connects, and the replay server plays
the rest in real time. Exchange times are planned so that the paced part follows
the warm-up; ingest stamps receive times with its own clock, and the run reports
how far the two clocks ended up apart (it does not enter the latencies).

RSS: each process's resident memory sampled under that load (and its VmHWM), beside
the baselines' processes under the same frames: the bare loop, the tutorial pattern
and one stateful quixstreams ``apply`` reading the tutorial's topic.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks.baseline_processes import RECEIVED_HEADER
from benchmarks.detector_throughput import (
    LATENCY_MARKETS,
    percentile,
    publish,
    read_anomalies,
    realtime_market,
    record_triggered,
    shifted,
)
from benchmarks.ingest_throughput import replay_server
from benchmarks.runner import Measurement, Result, Servers, benchmark, rss_mb
from krakenfeed.contracts import TOPIC_CONFIG, Anomaly, FeedId, Ticker, Trade, record_timestamp_ms
from krakenfeed.embedded import wait_until
from krakenfeed.ingest.protocol import FuturesProtocol
from krakenfeed.kafka import PRODUCER_CONFIG, ProcessingGuarantee
from krakenfeed.local.supervisor import Backoff, Child, ChildSpec, krakenfeed_argv
from krakenfeed.replay.capture import CaptureWriter
from krakenfeed.replay.session import session_from_records
from krakenfeed.store.connection import connect

MARKETS = 2 * LATENCY_MARKETS
"""Futures only, so twice the detector benchmark's markets for the same rate."""
LATENCY_SECONDS = 40
"""Market seconds paced in real time."""
PACING_DELAY_S = 25
"""Wall seconds from the start of a run to the first paced frame: the detector's
start, group join and pass through the warm-up must fit in it."""
INGEST_LEAD_S = 1.5
"""Ingest starts this long before the paced part is due: about its start-up time."""
STEADY_AFTER_S = 5
"""Seconds under load before latencies and RSS samples count as steady state: the
first frames of a connection also wait for the producer's first metadata."""
BASELINE_SECONDS = 15
STOP_TIMEOUT_S = 15
QUIET_POLLS = 4
"""Polls of the stored rows, half a second apart, that find nothing new: caught up."""


@dataclass
class _Memory:
    """Resident memory of some processes under load: the largest sample of each after
    STEADY_AFTER_S, and the peak the kernel recorded (VmHWM, start-up included)."""

    steady_mb: dict[str, float] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)


@contextmanager
def _sampled(children: dict[str, Child], memory: _Memory) -> Iterator[None]:
    """Sample each child's VmRSS every half second while the block runs."""
    done = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not done.wait(0.5):
            if time.monotonic() - started < STEADY_AFTER_S:
                continue
            for name, child in children.items():
                assert child.process is not None
                rss = rss_mb(child.process.pid, "VmRSS")
                memory.steady_mb[name] = max(memory.steady_mb.get(name, 0.0), rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        for name, child in children.items():
            assert child.process is not None
            memory.peak_mb[name] = rss_mb(child.process.pid)
        done.set()
        sampler.join()


def _start(stack: ExitStack, logs: Path, name: str, argv: list[str]) -> Child:
    """A process that the run's end stops (SIGTERM, then SIGKILL) and that ends with
    this one should it die first; its output goes to ``logs``."""
    # The baselines run as ``python -m benchmarks.…`` from any directory.
    env = {"PYTHONPATH": str(Path(__file__).parent.parent)}
    spec = ChildSpec(name, argv, env=env, log_path=logs / f"{name}.log")
    child = Child(spec, Backoff(), time.monotonic)
    child.start()
    stack.callback(child.stop, STOP_TIMEOUT_S)
    return child


def _tails(logs: Path, *children: Child) -> str:
    return "\n".join(
        f"--- {child.name}\n{(logs / f'{child.name}.log').read_text()[-3000:]}"
        for child in children
    )


def _alive(logs: Path, *children: Child) -> None:
    for child in children:
        assert child.process is not None
        if child.process.poll() is not None:
            code = child.process.returncode
            raise RuntimeError(f"{child.name} exited with {code}:\n{_tails(logs, child)}")


@contextmanager
def _kraken(records: Sequence[Ticker | Trade], directory: Path) -> Iterator[str]:
    """The replay server playing ``records`` in real time with their own exchange times."""
    session = session_from_records(records)
    capture = directory / "kraken.jsonl"
    with CaptureWriter(capture) as writer:
        for frame in session.frames["futures"]:
            payload = msgspec.json.encode(frame.payload)
            writer.write("futures", session.start_ns + frame.offset_ns, payload)
    options = ["--capture", str(capture), "--pace", "original", "--keep-times", "true"]
    with replay_server(*options) as url:
        yield url


def _stored(conninfo: str, feed: FeedId) -> int:
    """Market rows of ``feed`` in PostgreSQL (0 until the detector created the schema)."""
    with connect(conninfo) as conn:
        try:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM ticker WHERE feed = %(feed)s)"
                " + (SELECT count(*) FROM trades WHERE feed = %(feed)s)",
                {"feed": str(feed)},
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def received_times(
    records: Sequence[tuple[str, int, int]],
) -> dict[tuple[str, int], tuple[int, int]]:
    """(product, event time ms) → the earliest and latest receive time (ns) of the
    records with that Kafka timestamp, from (product, event_time_ms, received_time_ns)."""
    times: dict[tuple[str, int], tuple[int, int]] = {}
    for product, event_ms, received_ns in records:
        first, last = times.get((product, event_ms), (received_ns, received_ns))
        times[product, event_ms] = (min(first, received_ns), max(last, received_ns))
    return times


@dataclass
class _Run:
    to_topic_ms: list[float]
    to_row_ms: list[float]
    detectors: Counter[str]
    unpaired: int
    """Record-triggered anomalies whose record was not found."""
    ambiguity_ms: float
    """The widest spread of receive times among the records an anomaly could come
    from (same product and Kafka timestamp); the latest is used."""
    warmup_slack_s: float
    clock_offset_ms: float
    events: int
    memory: _Memory


def _pipeline(
    servers: Servers,
    market: list[Ticker | Trade],
    paced_from: int,
    products: list[str],
    guarantee: ProcessingGuarantee,
) -> _Run:
    feed = FeedId("bench", f"e2e-{uuid.uuid4().hex[:8]}")
    shift_ms = int(time.time() * 1000 + PACING_DELAY_S * 1000) - paced_from
    records = [shifted(record, shift_ms) for record in market]
    paced_from += shift_ms
    split = next(i for i, r in enumerate(records) if record_timestamp_ms(r) >= paced_from)
    bootstrap, conninfo = servers.kafka.bootstrap, servers.postgres.url
    received: list[tuple[Anomaly, float]] = []
    done = threading.Event()
    memory = _Memory()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        logs = Path(tmp)
        url = stack.enter_context(_kraken(records[split:], logs))
        common = ["--namespace", feed.namespace, "--feed", feed.name, "--broker", bootstrap]
        detector = _start(
            stack, logs, "detector",
            krakenfeed_argv(
                "detect", *common, "--postgres-url", conninfo, "--state-dir", str(logs / "state"),
                "--processing-guarantee", guarantee, "--instance-id", feed.name,
            ),
        )  # fmt: skip
        publish(servers, feed, records[:split])

        def warmed_up() -> bool:
            _alive(logs, detector)
            return _stored(conninfo, feed) >= split

        wait_until(warmed_up, PACING_DELAY_S + 60, "the warm-up in PostgreSQL", interval=0.2)
        slack_s = paced_from / 1000 - time.time()
        time.sleep(max(0.0, slack_s - INGEST_LEAD_S))
        reader = threading.Thread(
            target=read_anomalies, args=(bootstrap, feed, done, received), daemon=True
        )
        reader.start()
        stack.callback(reader.join)
        stack.callback(done.set)
        ingest = _start(
            stack, logs, "ingest",
            krakenfeed_argv(
                "ingest", *common, "--api", "futures", "--products", ",".join(products),
                "--url", url, "--max-clock-skew-ms", "0",
            ),
        )  # fmt: skip

        # Ingest paces its subscriptions (20 products a request), so the first
        # seconds of some products are not sent at all: the run is over once the
        # replay has ended and the stored rows stopped growing.
        ended_at = record_timestamp_ms(records[-1]) / 1000 + INGEST_LEAD_S
        counts: list[int] = []

        def caught_up() -> bool:
            _alive(logs, detector, ingest)
            counts.append(_stored(conninfo, feed))
            settled = len(counts) > QUIET_POLLS and counts[-1] == counts[-1 - QUIET_POLLS]
            return time.time() > ended_at and settled

        with _sampled({"ingest": ingest, "detector": detector}, memory):
            try:
                wait_until(caught_up, LATENCY_SECONDS + 60, "the detector to catch up", 0.5)
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}; logs:\n{_tails(logs, detector, ingest)}") from None
        # The last rows are in; give the topic reader a moment for their anomalies.
        time.sleep(1)
    return _measure(conninfo, feed, paced_from, received, slack_s, memory)


def _measure(
    conninfo: str,
    feed: FeedId,
    paced_from: int,
    received: list[tuple[Anomaly, float]],
    slack_s: float,
    memory: _Memory,
) -> _Run:
    with connect(conninfo) as conn:
        markets = [
            (str(product), int(event_ms), int(received_ns))
            for product, event_ms, received_ns in conn.execute(
                "SELECT product, event_time_ms, received_time_ns FROM ticker"
                " WHERE feed = %(feed)s AND event_time_ms >= %(paced)s UNION ALL"
                " SELECT product, event_time_ms, received_time_ns FROM trades"
                " WHERE feed = %(feed)s AND event_time_ms >= %(paced)s",
                {"feed": str(feed), "paced": paced_from},
            )
        ]
        rows = conn.execute(
            "SELECT product, detector, event_time_ms, context,"
            " extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000"
            " FROM anomalies WHERE feed = %s AND event_time_ms >= %s",
            (str(feed), paced_from),
        ).fetchall()
    receipts = received_times(markets)
    offset_ms = percentile([received / 1e6 - event for _, event, received in markets], 50)
    committed = {
        (str(product), str(detector), int(event_ms)): (dict(context), float(commit_ms))
        for product, detector, event_ms, context, commit_ms in rows
    }
    to_topic: list[float] = []
    to_row: list[float] = []
    detectors: Counter[str] = Counter()
    unpaired = 0
    ambiguity_ms = 0.0
    steady_from = paced_from + STEADY_AFTER_S * 1000
    for anomaly, seen_ms in received:
        if anomaly.event_time_ms < steady_from or not record_triggered(anomaly):
            continue
        times = receipts.get((anomaly.product, anomaly.event_time_ms))
        if times is None:
            unpaired += 1
            continue
        ambiguity_ms = max(ambiguity_ms, (times[1] - times[0]) / 1e6)
        received_ms = times[1] / 1e6
        detectors[anomaly.detector] += 1
        to_topic.append(seen_ms - received_ms)
        row = committed.get((anomaly.product, anomaly.detector, anomaly.event_time_ms))
        if row is not None:
            to_row.append(row[1] - received_ms)
    return _Run(
        to_topic_ms=to_topic,
        to_row_ms=to_row,
        detectors=detectors,
        unpaired=unpaired,
        ambiguity_ms=ambiguity_ms,
        warmup_slack_s=slack_s,
        clock_offset_ms=offset_ms,
        events=len(markets),
        memory=memory,
    )


def _create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([NewTopic(name, 1, 1, config=dict(TOPIC_CONFIG))])[name]
    try:
        future.result()
    except KafkaException as exc:
        raise RuntimeError(f"cannot create the baseline topic {name}: {exc}") from exc


def _baselines(
    servers: Servers, paced: list[Ticker | Trade], products: list[str]
) -> tuple[list[float], _Memory]:
    """The bare hop's latencies (ms) and the baseline processes' memory, each on the
    paced frames in real time."""
    bootstrap = servers.kafka.bootstrap
    requests = json.dumps(
        [r.decode() for r in FuturesProtocol(products, ("ticker", "trade")).subscribe_requests()]
    )
    config = json.dumps(PRODUCER_CONFIG)
    hop = f"bench.hop.{uuid.uuid4().hex[:8]}"
    tutorial = f"bench.tutorial.{uuid.uuid4().hex[:8]}"
    for name in (hop, tutorial):
        _create_topic(bootstrap, name)
    latencies: list[float] = []
    memory = _Memory()
    done = threading.Event()

    def consume() -> None:
        steady_from_ns: int | None = None
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": hop, "fetch.wait.max.ms": 5}
        )
        consumer.assign([TopicPartition(hop, 0, OFFSET_BEGINNING)])
        while not done.is_set():
            message = consumer.poll(0.05)
            if message is not None and message.error() is None:
                stamp = int(dict(message.headers() or [])[RECEIVED_HEADER])
                if steady_from_ns is None:
                    steady_from_ns = stamp + STEADY_AFTER_S * 1_000_000_000
                if stamp >= steady_from_ns:
                    latencies.append((time.time_ns() - stamp) / 1e6)
        consumer.close()

    argv = [sys.executable, "-m", "benchmarks.baseline_processes"]
    with tempfile.TemporaryDirectory() as tmp, _kraken(paced, Path(tmp)) as url:
        logs = Path(tmp)
        with ExitStack() as stack:
            consumer = threading.Thread(target=consume, daemon=True)
            consumer.start()
            stack.callback(consumer.join)
            stack.callback(done.set)
            bare = _start(
                stack, logs, "bare", [*argv, "bare", url, bootstrap, hop, requests, config]
            )
            with _sampled({"bare loop": bare}, memory):
                _run_for(BASELINE_SECONDS, logs, bare)
        with ExitStack() as stack:
            apply = _start(stack, logs, "apply", [*argv, "apply", bootstrap, tutorial])
            pattern = _start(
                stack,
                logs,
                "tutorial",
                [*argv, "tutorial", url, bootstrap, tutorial, requests, config],
            )
            with _sampled({"tutorial pattern": pattern, "stateful apply": apply}, memory):
                _run_for(BASELINE_SECONDS, logs, apply, pattern)
    return latencies, memory


def _run_for(seconds: float, logs: Path, *children: Child) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _alive(logs, *children)
        time.sleep(0.2)


def _latency(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 2), "p99": round(percentile(values, 99), 2)}


@benchmark("e2e")
def end_to_end(servers: Servers) -> Result:
    market, paced_from = realtime_market(MARKETS, "futures", LATENCY_SECONDS)
    products = sorted({record.product for record in market})
    runs = {
        guarantee: _pipeline(servers, market, paced_from, products, guarantee)
        for guarantee in ("exactly-once", "at-least-once")
    }
    paced = [r for r in market if record_timestamp_ms(r) >= paced_from]
    hop, memory = _baselines(servers, paced, products)
    eos, alo = runs["exactly-once"], runs["at-least-once"]
    hop_p50, hop_p99 = percentile(hop, 50), percentile(hop, 99)
    measurements = []
    for label, run in (("exactly-once", eos), ("at-least-once", alo)):
        for leg, values in (
            ("anomaly on its topic", run.to_topic_ms),
            ("row committed", run.to_row_ms),
        ):
            for q, bare in ((50, hop_p50), (99, hop_p99)):
                measurements.append(
                    Measurement(
                        f"frame received → {leg}, p{q}, {label}",
                        "ms",
                        percentile(values, q),
                        bare,
                        "bare hop: frame → produce → consume",
                        higher_is_better=False,
                    )
                )
    steady = {**eos.memory.steady_mb, **memory.steady_mb}
    for process, baseline in (
        ("ingest", "bare loop"),
        ("ingest", "tutorial pattern"),
        ("detector", "stateful apply"),
    ):
        measurements.append(
            Measurement(
                f"{process} RSS under load",
                "MB",
                steady[process],
                steady[baseline],
                f"{baseline} process",
                higher_is_better=False,
            )
        )
    return Result(
        name="e2e",
        description=(
            f"replay server → krakenfeed ingest → Tansu → krakenfeed detect → PostgreSQL, "
            f"separate processes; {len(products)} futures products in real time "
            f"(~{len(paced) / LATENCY_SECONDS:,.0f} events/s), latency from the frame's "
            "receipt; RSS under that load"
        ),
        measurements=measurements,
        details={
            "events_per_s": round(len(paced) / LATENCY_SECONDS),
            "paced_records_sent": len(paced),
            "bare_hop_ms": {**_latency(hop), "frames": len(hop)},
            **{
                label: {
                    "anomalies_measured": len(run.to_topic_ms),
                    "rows_measured": len(run.to_row_ms),
                    "by_detector": dict(run.detectors),
                    "unpaired": run.unpaired,
                    "pairing_ambiguity_ms": round(run.ambiguity_ms, 2),
                    "to_anomaly_topic_ms": _latency(run.to_topic_ms),
                    "to_committed_row_ms": _latency(run.to_row_ms),
                    "warmup_done_before_pacing_s": round(run.warmup_slack_s, 2),
                    "receive_minus_exchange_time_ms_p50": round(run.clock_offset_ms, 1),
                    "paced_records_stored": run.events,
                    "rss_steady_mb": _rounded(run.memory.steady_mb),
                    "rss_peak_mb": _rounded(run.memory.peak_mb),
                }
                for label, run in runs.items()
            },
            "baseline_rss_steady_mb": _rounded(memory.steady_mb),
            "baseline_rss_peak_mb": _rounded(memory.peak_mb),
        },
    )


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 1) for name, value in values.items()}
