"""Traces end to end: replay server → ``krakenfeed ingest`` → broker → ``krakenfeed
detect`` → PostgreSQL, both workers exporting to a real OTLP receiver, configured
by exactly the variables the operator gives them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from krakenfeed.contracts import (
    Anomaly,
    FeedId,
    KrakenFeedSpec,
    Stream,
    consumer_group,
    decode_record,
    parse_spec,
    topic,
)
from krakenfeed.embedded import wait_until
from krakenfeed.replay.server import ReplayServer
from krakenfeed.replay.session import generate_session
from krakenfeed.telemetry.tracing import ANOMALY_DETECTORS, LAST_OFFSET, PRODUCTS
from krakenfeed_operator.builders import Owner, build_detector, build_ingest, shared_env
from tests.conftest import RETENTION_DAYS, Kafka
from tests.kafka_reader import read_topic
from tests.trace_receiver import ReceivedSpan, TraceReceiver

PRODUCT = "PF_XBTUSD"
# The generated session is calm: at the default thresholds it holds no anomaly.
DETECTOR_CONFIG = (
    '{"price_jump": {"threshold": 3, "min_move_bps": 1, "warmup": 20, "cooldown_ms": 1000}}'
)


def _operator_env(owner: Owner, spec: KrakenFeedSpec, manifest: dict[str, Any]) -> dict[str, str]:
    """The OTEL variables the operator's manifests give the worker of ``manifest``."""
    env = shared_env(owner, spec)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    env.update({item["name"]: item["value"] for item in container["env"] if "value" in item})
    otel = {name: value for name, value in env.items() if name.startswith("OTEL_")}
    assert otel["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert float(otel["OTEL_TRACES_SAMPLER_ARG"]) == spec.telemetry.sampling_ratio
    # Export at once: the test waits for spans, not for the batch timer.
    return {**os.environ, **otel, "OTEL_BSP_SCHEDULE_DELAY": "100"}


@contextmanager
def _worker(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "krakenfeed", *command],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, log.read_text()[-3000:]


def _rows(url: str) -> tuple[int, list[tuple[str, str | None]]]:
    """Market rows, and each anomaly's detector and trace id; none before migration."""
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('anomalies')").fetchone() == (None,):
            return 0, []
        markets = conn.execute(
            "SELECT (SELECT count(*) FROM ticker) + (SELECT count(*) FROM trades)"
        ).fetchone()
        anomalies = conn.execute("SELECT detector, trace_id FROM anomalies").fetchall()
    assert markets is not None
    return markets[0], anomalies


def _run(
    kafka: Kafka,
    postgres_url: str,
    feed: FeedId,
    otlp: TraceReceiver,
    tmp_path: Path,
    sampling_ratio: float,
) -> None:
    """Replay a session through both workers, configured by the operator's builders
    to export to ``otlp`` at ``sampling_ratio``, until every record is a row."""
    session = generate_session("futures", [PRODUCT], count_per_product_channel=400, seed=11)
    owner = Owner(feed.namespace, feed.name, "uid")
    spec = parse_spec(
        {
            "sources": [{"api": "futures", "products": [PRODUCT]}],
            "telemetry": {"otlpEndpoint": otlp.endpoint, "samplingRatio": sampling_ratio},
        }
    )
    ingest_env = _operator_env(owner, spec, build_ingest(owner, spec, spec.sources[0], "image"))
    detector_env = _operator_env(owner, spec, build_detector(owner, spec, "image"))
    common = ["--namespace", feed.namespace, "--feed", feed.name, "--broker", kafka.bootstrap]
    detect = [
        "detect", *common, "--postgres-url", postgres_url,
        "--state-dir", str(tmp_path / "state"), "--retention-days", str(RETENTION_DAYS),
        "--detector-config", DETECTOR_CONFIG,
    ]  # fmt: skip
    records = 2 * 400
    with ReplayServer(session, keep_times=True) as server:
        ingest = [
            "ingest", *common, "--api", "futures", "--products", PRODUCT,
            "--url", server.url("futures"), "--max-clock-skew-ms", "0",
        ]  # fmt: skip
        with (
            _worker(detect, detector_env, tmp_path / "detect.log"),
            _worker(ingest, ingest_env, tmp_path / "ingest.log"),
        ):
            wait_until(
                lambda: _rows(postgres_url)[0] >= records,
                90,
                f"{records} market rows in PostgreSQL",
                interval=0.2,
            )


def test_one_trace_follows_each_record_from_ingest_to_its_postgresql_batch(
    kafka: Kafka, postgres_url: str, feed: FeedId, otlp: TraceReceiver, tmp_path: Path
) -> None:
    _run(kafka, postgres_url, feed, otlp, tmp_path, sampling_ratio=1.0)
    markets = _rows(postgres_url)[0]

    def counted(spans: list[ReceivedSpan], kind: str) -> int:
        return sum(
            s.attributes.get("messaging.batch.message_count", 0) for s in spans if s.kind == kind
        )

    otlp.wait_for(
        lambda spans: min(counted(spans, "PRODUCER"), counted(spans, "CONSUMER")) >= markets,
        lambda s: s.resource.get("krakenfeed.feed") == str(feed),
        30,
        "the send and process spans of every ticker and trade",
    )
    markets, anomaly_rows = _rows(postgres_url)
    assert anomaly_rows, "the lowered thresholds should find anomalies in the session"

    ours = otlp.spans(lambda s: s.resource.get("krakenfeed.feed") == str(feed))
    sends = [s for s in ours if s.kind == "PRODUCER"]
    processes = [s for s in ours if s.kind == "CONSUMER"]
    writes = [s for s in ours if s.kind == "CLIENT"]
    market_sends = _check_sends(feed, sends, markets)
    _check_processes(feed, {s.span_id: s for s in ours}, processes, markets)
    assert {s.parent_span_id for s in processes} == {s.span_id for s in market_sends}
    _check_writes(writes, processes, markets)
    _check_anomalies(kafka, feed, ours, anomaly_rows, sampled_at_ingest=True)

    # Both workers logged JSON lines only, quixstreams' included (no terminal).
    for name in ("ingest", "detect"):
        lines = (tmp_path / f"{name}.log").read_text().splitlines()
        entries = [json.loads(line) for line in lines if line.strip()]
        assert entries, name
        assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)


def test_with_half_the_bursts_sampled_each_traced_record_is_in_one_process_span(
    kafka: Kafka, postgres_url: str, feed: FeedId, otlp: TraceReceiver, tmp_path: Path
) -> None:
    # Sampled and unsampled bursts follow each other on each partition: the
    # detector's span for a burst ends when its partition moves on, and the spans
    # under each send span hold exactly that burst's records, each once.
    _run(kafka, postgres_url, feed, otlp, tmp_path, sampling_ratio=0.5)
    markets = _rows(postgres_url)[0]
    market_topics = {topic(feed, Stream.TICKER), topic(feed, Stream.TRADE)}
    # Both workers have exited, and exported everything, by now.
    ours = otlp.spans(lambda s: s.resource.get("krakenfeed.feed") == str(feed))
    sends = {
        s.span_id: s
        for s in ours
        if s.kind == "PRODUCER" and s.attributes["messaging.destination.name"] in market_topics
    }
    sampled = sum(s.attributes["messaging.batch.message_count"] for s in sends.values())
    assert 0 < sampled < markets
    # Records that raised an anomaly without being sampled have root spans of their own.
    processes = [s for s in ours if s.kind == "CONSUMER" and s.parent_span_id]
    held: dict[str, int] = dict.fromkeys(sends, 0)
    offsets: dict[str, list[int]] = {name: [] for name in market_topics}
    for span in processes:
        send = sends[span.parent_span_id]
        assert span.trace_id == send.trace_id
        destination = send.attributes["messaging.destination.name"]
        assert span.attributes["messaging.destination.name"] == destination
        first, last = span.attributes["messaging.kafka.offset"], span.attributes[LAST_OFFSET]
        assert span.attributes["messaging.batch.message_count"] == last - first + 1
        held[send.span_id] += last - first + 1
        offsets[destination].extend(range(first, last + 1))
    assert held == {i: s.attributes["messaging.batch.message_count"] for i, s in sends.items()}
    assert all(len(set(o)) == len(o) for o in offsets.values())
    assert sum(len(o) for o in offsets.values()) == sampled


def _check_sends(feed: FeedId, sends: list[ReceivedSpan], markets: int) -> list[ReceivedSpan]:
    # Ingest: one root PRODUCER span per burst of records on a topic, named and
    # described by the messaging conventions, its count of records among them.
    market_topics = {topic(feed, Stream.TICKER), topic(feed, Stream.TRADE)}
    market_sends = [s for s in sends if s.attributes["messaging.destination.name"] in market_topics]
    assert sum(s.attributes["messaging.batch.message_count"] for s in market_sends) == markets
    # The session is replayed as fast as the socket goes: records come in bursts.
    assert len(market_sends) < markets
    for span in sends:
        destination = span.attributes["messaging.destination.name"]
        assert span.service == "krakenfeed-ingest"
        assert span.name == f"send {destination}"
        assert span.parent_span_id == ""
        assert span.attributes["messaging.system"] == "kafka"
        assert span.attributes["messaging.operation.type"] == "send"
        assert span.attributes["messaging.operation.name"] == "send"
    assert {p for s in market_sends for p in s.attributes[PRODUCTS]} == {PRODUCT}
    return market_sends


def _check_processes(
    feed: FeedId, by_id: dict[str, ReceivedSpan], processes: list[ReceivedSpan], markets: int
) -> None:
    # Detector: one CONSUMER span per run of a burst's records on a partition, the
    # child of the burst's send span in the same trace (the context came through
    # the Kafka headers). Their offset ranges cover each topic once.
    offsets: dict[str, list[int]] = {}
    for span in processes:
        parent = by_id[span.parent_span_id]
        assert parent.kind == "PRODUCER"
        assert parent.trace_id == span.trace_id
        destination = parent.attributes["messaging.destination.name"]
        assert span.service == "krakenfeed-detector"
        assert span.name == f"process {destination}"
        assert span.attributes["messaging.destination.name"] == destination
        assert span.attributes["messaging.operation.type"] == "process"
        assert span.attributes["messaging.consumer.group.name"] == consumer_group(feed)
        assert span.attributes["messaging.destination.partition.id"] == "0"
        first, last = span.attributes["messaging.kafka.offset"], span.attributes[LAST_OFFSET]
        assert span.attributes["messaging.batch.message_count"] == last - first + 1
        assert span.attributes[PRODUCTS] == [PRODUCT]
        offsets.setdefault(destination, []).extend(range(first, last + 1))
    assert len(offsets) == 2 and sum(len(o) for o in offsets.values()) == markets
    assert all(sorted(o) == list(range(len(o))) for o in offsets.values())


def _check_writes(writes: list[ReceivedSpan], processes: list[ReceivedSpan], markets: int) -> None:
    # Sink: CLIENT spans for the PostgreSQL batches, linked to every record they hold.
    assert writes
    for span in writes:
        assert span.service == "krakenfeed-detector"
        assert span.attributes["db.system.name"] == "postgresql"
        assert span.attributes["db.system"] == "postgresql"
        assert span.attributes["db.operation.name"] == "INSERT"
        assert span.name == span.attributes["db.query.summary"]
        assert span.name.startswith("INSERT ")
        assert span.attributes["db.operation.batch.size"] >= len(span.links)
        assert span.parent_span_id == ""
    linked = {link for span in writes for link in span.links}
    assert linked == {(s.trace_id, s.span_id) for s in processes}
    assert (
        sum(
            s.attributes.get("krakenfeed.rows.ticker", 0)
            + s.attributes.get("krakenfeed.rows.trades", 0)
            for s in writes
        )
        == markets
    )


def _check_anomalies(
    kafka: Kafka,
    feed: FeedId,
    ours: list[ReceivedSpan],
    anomaly_rows: list[Any],
    *,
    sampled_at_ingest: bool,
) -> list[ReceivedSpan]:
    # Every anomaly row names the trace of the record that raised it: a process
    # span at the receiver, marked with the detectors, whose parent is ingest's send
    # span when ingest sampled the record, and which is a root of its own when not.
    # The anomaly's Kafka record carries that span as its traceparent.
    by_id = {s.span_id: s for s in ours}
    raised = [s for s in ours if s.kind == "CONSUMER" and ANOMALY_DETECTORS in s.attributes]
    for detector, trace_id in anomaly_rows:
        assert trace_id is not None, detector
        assert len(trace_id) == 32 and int(trace_id, 16)
        marked = [
            s
            for s in raised
            if s.trace_id == trace_id and detector in s.attributes[ANOMALY_DETECTORS]
        ]
        assert marked, (detector, trace_id)
        for process in marked:
            if sampled_at_ingest:
                assert by_id[process.parent_span_id].service == "krakenfeed-ingest"
            else:
                assert process.parent_span_id == ""
    on_kafka = read_topic(kafka.bootstrap, topic(feed, Stream.ANOMALIES), len(anomaly_rows))
    anomalies = [decode_record(m.value(), Anomaly) for m in on_kafka]
    assert sorted(a.trace_id or "" for a in anomalies) == sorted(t or "" for _, t in anomaly_rows)
    for message, anomaly in zip(on_kafka, anomalies, strict=True):
        version, trace_id, span_id, flags = dict(message.headers() or [])["traceparent"].split(b"-")
        assert (version, trace_id) == (b"00", (anomaly.trace_id or "").encode())
        assert int(flags, 16) & 1, "sampled"
        span = by_id[span_id.decode()]
        assert span in raised and anomaly.detector in span.attributes[ANOMALY_DETECTORS]
    return raised


def test_an_anomaly_raised_by_a_record_nobody_sampled_still_has_a_trace(
    kafka: Kafka, postgres_url: str, feed: FeedId, otlp: TraceReceiver, tmp_path: Path
) -> None:
    # At a ratio of 0 ingest traces nothing and no record carries a traceparent;
    # the records that raise anomalies are traced by the detector all the same,
    # and nothing else is.
    _run(kafka, postgres_url, feed, otlp, tmp_path, sampling_ratio=0.0)
    markets, anomaly_rows = _rows(postgres_url)
    assert anomaly_rows, "the lowered thresholds should find anomalies in the session"
    ours = otlp.spans(lambda s: s.resource.get("krakenfeed.feed") == str(feed))
    assert not [s for s in ours if s.kind == "PRODUCER"], "ingest sampled nothing"
    raised = _check_anomalies(kafka, feed, ours, anomaly_rows, sampled_at_ingest=False)
    processes = [s for s in ours if s.kind == "CONSUMER"]
    assert processes == raised and len(processes) < markets
    for span in processes:
        assert span.service == "krakenfeed-detector"
        assert span.name == f"process {span.attributes['messaging.destination.name']}"
        assert isinstance(span.attributes["messaging.kafka.offset"], int)
    # The PostgreSQL batches that hold those records link to their spans: sampled
    # because of the link, whatever the ratio.
    writes = [s for s in ours if s.kind == "CLIENT"]
    assert {link for s in writes for link in s.links} == {
        (s.trace_id, s.span_id) for s in processes
    }
