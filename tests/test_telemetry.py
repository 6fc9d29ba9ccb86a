"""Tracing set up from the OTEL_* variables alone, its sampling decision, and the logs."""

from __future__ import annotations

import io
import itertools
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from oteltest.sink import HttpSink

from krakenfeed.embedded import wait_until
from krakenfeed.embedded.net import free_port, port_open
from krakenfeed.telemetry import configure_logging, configure_tracing, redact
from krakenfeed.telemetry.tracing import (
    ANOMALY_DETECTORS,
    BURST_NS,
    BURST_RECORDS,
    LAST_OFFSET,
    PRODUCTS,
)
from tests.conftest import Kafka
from tests.trace_receiver import TraceReceiver

OTEL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_without_an_endpoint_nothing_is_built(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    clean_env.setenv("OTEL_SERVICE_NAME", "krakenfeed-ingest")
    assert configure_tracing("krakenfeed-ingest") is None


def test_a_disabled_sdk_builds_nothing_even_with_an_endpoint(
    clean_env: pytest.MonkeyPatch, otlp: TraceReceiver
) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
    clean_env.setenv("OTEL_SDK_DISABLED", "true")
    assert configure_tracing("krakenfeed-ingest") is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("OTEL_TRACES_SAMPLER", "jaeger_remote", "OTEL_TRACES_SAMPLER: got 'jaeger_remote'"),
        ("OTEL_TRACES_SAMPLER_ARG", "2", "OTEL_TRACES_SAMPLER_ARG: got '2'; expected a ratio"),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/json",
            "OTEL_EXPORTER_OTLP_PROTOCOL: got 'http/json'",
        ),
    ],
)
def test_a_value_it_cannot_use_is_named(
    clean_env: pytest.MonkeyPatch, otlp: TraceReceiver, name: str, value: str, message: str
) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
    clean_env.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        configure_tracing("krakenfeed-ingest")


def test_roots_are_sampled_by_the_trace_id_ratio_rule_before_any_span_exists(
    clean_env: pytest.MonkeyPatch, otlp: TraceReceiver
) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
    clean_env.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    clean_env.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    clean_env.setenv("OTEL_RESOURCE_ATTRIBUTES", "krakenfeed.feed=test/ratio")
    tracing = configure_tracing("krakenfeed-ingest")
    assert tracing is not None
    draws = 4000
    sampled = []
    at = []
    for draw in range(draws):
        # A burst's time apart: each record starts a burst of its own.
        headers = tracing.start_send("krakenfeed.test.ratio.ticker", b"PF_XBTUSD", draw * BURST_NS)
        if headers is not None:
            tracing.end_send("krakenfeed.test.ratio.ticker")
            sampled.append(headers)
            at.append(draw)
    tracing.shutdown()
    # Binomial(4000, 0.25): mean 1000, standard deviation 27.
    assert 850 < len(sampled) < 1150
    # Each record is sampled on its own, not every fourth: the unsampled runs
    # between two sampled records are geometric (a run of 10 or more has
    # probability 0.75**10 = 5.6%, so about 56 of them are expected).
    runs = [b - a - 1 for a, b in itertools.pairwise(at)]
    assert runs.count(0) > 150
    assert sum(run >= 10 for run in runs) > 20
    # W3C traceparent: version-trace id-span id-flags, the sampled flag set.
    assert all(name == "traceparent" and int(value[-2:], 16) & 1 for [(name, value)] in sampled)
    spans = otlp.spans(lambda s: s.resource.get("krakenfeed.feed") == "test/ratio")
    assert len(spans) == len(sampled)
    assert {s.service for s in spans} == {"krakenfeed-ingest"}
    bound = round(0.25 * 2**64)
    assert all(int(s.trace_id, 16) & (2**64 - 1) < bound for s in spans)
    assert {f"00-{s.trace_id}-{s.span_id}".encode() for s in spans} == {
        value[:-3] for [(_, value)] in sampled
    }


@pytest.mark.parametrize(("ratio", "sampled"), [("0", 0), ("1", 2000)])
def test_ratios_zero_and_one_sample_no_record_and_every_record(
    clean_env: pytest.MonkeyPatch, ratio: str, sampled: int
) -> None:
    clean_env.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    clean_env.setenv("OTEL_TRACES_SAMPLER_ARG", ratio)
    tracing = configure_tracing("krakenfeed-ingest", SimpleSpanProcessor(InMemorySpanExporter()))
    assert tracing is not None
    count = 0
    for draw in range(2000):
        if tracing.start_send("krakenfeed.test.ratio.ticker", None, draw * BURST_NS) is not None:
            tracing.end_send("krakenfeed.test.ratio.ticker")
            count += 1
    tracing.shutdown()
    assert count == sampled


def test_a_burst_of_records_shares_one_send_span_per_topic(
    clean_env: pytest.MonkeyPatch,
) -> None:
    # At 100% every burst is sampled. Records of one topic read within BURST_NS of
    # the burst's first, up to BURST_RECORDS of them, carry the same traceparent;
    # each topic has bursts of its own; a span ends when its last record was sent.
    clean_env.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    exporter = InMemorySpanExporter()
    tracing = configure_tracing("krakenfeed-ingest", SimpleSpanProcessor(exporter))
    assert tracing is not None
    ticker, trade = "krakenfeed.test.burst.ticker", "krakenfeed.test.burst.trade"
    start = 1_000_000_000
    sent: dict[str, list[bytes]] = {ticker: [], trade: []}
    handed_over: dict[str, list[tuple[int, int]]] = {ticker: [], trade: []}

    def send(topic: str, key: bytes, now_ns: int) -> None:
        headers = tracing.start_send(topic, key, now_ns)
        assert headers is not None
        before = time.time_ns()
        tracing.end_send(topic)
        handed_over[topic].append((before, time.time_ns()))
        [(name, value)] = headers
        assert name == "traceparent" and int(value[-2:], 16) & 1
        sent[topic].append(value[:-3])

    def finished() -> set[bytes]:
        return {
            f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}".encode()
            for s in exporter.get_finished_spans()
        }

    # 150 ticker records within 10 ms, three trades among them: a full ticker
    # burst of BURST_RECORDS, then the other 50 in a second one.
    for i in range(150):
        send(ticker, b"PF_XBTUSD" if i % 2 else b"PF_ETHUSD", start + i)
        if i % 50 == 0:
            send(trade, b"PF_XBTUSD", start + i)
    # A record after the window opens a new burst on its topic, ending the last.
    send(ticker, b"PF_XBTUSD", start + 100 + BURST_NS)
    send(trade, b"PF_XBTUSD", start + BURST_NS + 1)
    ticker_bursts = [set(sent[ticker][a:b]) for a, b in ((0, 100), (100, 150), (150, 151))]
    assert [len(burst) for burst in ticker_bursts] == [1, 1, 1]
    assert len(set(sent[ticker])) == 3
    assert len(set(sent[trade][:3])) == 1 and sent[trade][3] != sent[trade][0]
    assert finished() == {sent[ticker][0], sent[ticker][100], sent[trade][0]}
    # Bursts whose time is up end; the ticker burst has 99 ns left, and the loop
    # is told when that is.
    assert tracing.bursts_due_ns == start + BURST_NS
    tracing.end_bursts(start + 2 * BURST_NS + 1)
    assert sent[trade][3] in finished() and sent[ticker][150] not in finished()
    assert tracing.bursts_due_ns == start + 100 + 2 * BURST_NS
    tracing.shutdown()

    spans = exporter.get_finished_spans()
    assert finished() == set(sent[ticker]) | set(sent[trade]) and len(spans) == 5
    counts = sorted(s.attributes["messaging.batch.message_count"] for s in spans if s.attributes)
    assert counts == [1, 1, 3, 50, BURST_RECORDS]
    [first] = [s for s in spans if s.context.span_id == int(sent[ticker][0][36:52], 16)]
    assert first.name == f"send {ticker}"
    assert first.parent is None
    assert first.attributes is not None
    assert first.attributes[PRODUCTS] == ("PF_ETHUSD", "PF_XBTUSD")
    assert first.attributes["messaging.operation.type"] == "send"
    assert first.attributes["messaging.destination.name"] == ticker
    assert "messaging.kafka.message.key" not in first.attributes
    # It ended when its last record had been handed over, not when that was noticed.
    before, after = handed_over[ticker][BURST_RECORDS - 1]
    assert first.end_time is not None and before <= first.end_time <= after


def test_the_detector_gives_a_bursts_records_in_a_row_on_a_partition_one_process_span(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    sent, exporter = InMemorySpanExporter(), InMemorySpanExporter()
    ingest = configure_tracing("krakenfeed-ingest", SimpleSpanProcessor(sent))
    detector = configure_tracing("krakenfeed-detector", SimpleSpanProcessor(exporter))
    assert ingest is not None and detector is not None
    topic_name = "krakenfeed.test.process.ticker"
    burst = ingest.start_send(topic_name, b"PF_XBTUSD", 0)
    ingest.end_send(topic_name)
    ingest.shutdown()
    assert burst is not None
    [send] = sent.get_finished_spans()

    def process(offset: int, partition: int = 0, detectors: tuple[str, ...] = ()) -> bool:
        assert burst is not None and detector is not None
        traceparent = detector.sampled_traceparent(burst)
        opened, new = detector.processing(burst, traceparent, topic_name, partition, offset, "g")
        with detector.within(opened):
            if detectors:
                detector.raised(detectors, topic_name, partition, offset, "PF_XBTUSD", "g")
        opened.processed("PF_XBTUSD", offset)
        return new

    # Offsets 10-12 in a row share a span, which names the detectors of all of
    # them; partition 1 has its own; a replay from offset 10 starts a new one.
    in_a_row = [
        process(10, detectors=("price_jump",)),
        process(11),
        process(12, detectors=("spread_blowout",)),
    ]
    assert in_a_row == [True, False, False]
    assert process(3, partition=1)
    assert process(10)  # the replay
    assert len(exporter.get_finished_spans()) == 1, "the first span ended at the replay"
    detector.end_processing(topic_name, 0)
    assert len(exporter.get_finished_spans()) == 2
    detector.end_processing()
    detector.shutdown()
    spans = exporter.get_finished_spans()
    described = [
        (
            s.attributes["messaging.kafka.offset"],
            s.attributes[LAST_OFFSET],
            s.attributes["messaging.batch.message_count"],
            s.attributes.get(ANOMALY_DETECTORS),
        )
        for s in spans
        if s.attributes is not None
    ]
    assert described == [
        (10, 12, 3, ("price_jump", "spread_blowout")),
        (10, 10, 1, None),
        (3, 3, 1, None),
    ]
    assert all(s.parent is not None and s.parent.span_id == send.context.span_id for s in spans)
    assert all(s.context.trace_id == send.context.trace_id for s in spans)


def test_http_protobuf_goes_to_the_endpoints_v1_traces(clean_env: pytest.MonkeyPatch) -> None:
    port = free_port()
    receiver = TraceReceiver(port)
    sink = HttpSink(receiver, logging.getLogger("tests.http_receiver"), port=port)
    sink.start()
    try:
        wait_until(lambda: port_open(port), 10, "the OTLP/HTTP receiver")
        clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        clean_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        clean_env.setenv("OTEL_SERVICE_NAME", "krakenfeed-http-test")
        tracing = configure_tracing("krakenfeed-ingest")
        assert tracing is not None
        with tracing.sending("krakenfeed.test.http.trade", None) as headers:
            assert headers
        tracing.shutdown()
    finally:
        sink.stop()
    [span] = receiver.spans()
    assert (span.service, span.name, span.kind) == (
        "krakenfeed-http-test",
        "send krakenfeed.test.http.trade",
        "PRODUCER",
    )
    assert "messaging.kafka.message.key" not in span.attributes


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


PASSWORD = "s3cr3t-Pa55"


def test_logs_are_json_lines_with_the_active_span_and_no_secret(
    clean_env: pytest.MonkeyPatch, otlp: TraceReceiver, restore_logging: None
) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
    tracing = configure_tracing("krakenfeed-detector")
    assert tracing is not None
    out = io.StringIO()
    configure_logging("INFO", out)
    log = logging.getLogger("krakenfeed.test")
    url = f"postgresql://krakenfeed:{PASSWORD}@db.example:5432/markets?sslmode=require"
    log.info("connecting to %s", url)
    log.debug("not at INFO")
    with tracing.tracer.start_as_current_span("step") as span:
        log.warning("conninfo host=db password=%s dbname=markets", PASSWORD)
        try:
            raise ConnectionError(f"cannot reach {url}")
        except ConnectionError:
            log.exception("write failed")
    tracing.shutdown()

    lines = out.getvalue().splitlines()
    assert PASSWORD not in out.getvalue()
    entries = [json.loads(line) for line in lines]
    assert [e["level"] for e in entries] == ["INFO", "WARNING", "ERROR"]
    assert entries[0]["message"] == (
        "connecting to postgresql://krakenfeed:***@db.example:5432/markets?sslmode=require"
    )
    assert "trace_id" not in entries[0]
    context = span.get_span_context()
    for entry in entries[1:]:
        assert entry["trace_id"] == format(context.trace_id, "032x")
        assert entry["span_id"] == format(context.span_id, "016x")
        assert entry["logger"] == "krakenfeed.test"
    assert entries[1]["message"] == "conninfo host=db password=*** dbname=markets"
    assert "ConnectionError: cannot reach postgresql://krakenfeed:***@" in entries[2]["exception"]


def test_the_detector_never_logs_its_postgresql_password(kafka: Kafka, tmp_path: Path) -> None:
    """The real worker at DEBUG, PostgreSQL away: its log names the outage, in JSON
    lines, and not the password of the URL it was given."""
    url = f"postgresql://krakenfeed:{PASSWORD}@127.0.0.1:{free_port()}/markets"
    command = [
        sys.executable, "-m", "krakenfeed", "--log-level", "DEBUG", "detect",
        "--feed", "secret", "--broker", kafka.bootstrap, "--postgres-url", url,
        "--state-dir", str(tmp_path / "state"),
    ]  # fmt: skip
    log = tmp_path / "detect.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "database unavailable" in log.read_text(), 60, "the outage logged")
    finally:
        process.kill()
        process.wait()
    output = log.read_text()
    assert PASSWORD not in output
    entries = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert any(
        e["level"] == "WARNING" and "PostgreSQL unreachable" in e["message"] for e in entries
    )


def test_a_terminal_gets_readable_lines(restore_logging: None) -> None:
    out = _Terminal()
    configure_logging("DEBUG", out)
    logging.getLogger("krakenfeed.test").debug("token=abc123 sent")
    line = out.getvalue().strip()
    assert line.endswith("DEBUG krakenfeed.test: token=*** sent")
    assert not line.startswith("{")
    assert trace.get_current_span().get_span_context().is_valid is False


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("kafka://user:pw@broker:9092", "kafka://user:***@broker:9092"),
        ("postgresql://only-user@host/db", "postgresql://only-user@host/db"),
        ("PGPASSWORD='a b' next", "PGPASSWORD=*** next"),
        ("sasl.password: hunter2", "sasl.password: ***"),
        ("?api_key=xyz&x=1", "?api_key=***&x=1"),
        ("mail me at a@b.c", "mail me at a@b.c"),
    ],
)
def test_redaction(text: str, masked: str) -> None:
    assert redact(text) == masked
