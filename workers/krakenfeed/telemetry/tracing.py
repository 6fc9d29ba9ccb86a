"""OpenTelemetry traces, configured only through the standard ``OTEL_*`` variables.

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``): where
  spans go. Unset, or ``OTEL_SDK_DISABLED=true``: no provider at all, and every hook
  on the data path is skipped by one ``None`` check.
- ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``grpc`` (the default) or ``http/protobuf``.
- ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``: the resource; a process
  names itself (``krakenfeed-ingest``…) only when they do not.
- ``OTEL_TRACES_SAMPLER`` / ``_ARG``: the sampler (default
  ``parentbased_always_on``).

Records run at tens of thousands per second, and a span costs tens of
microseconds to make and as much again to export, so ingest traces bursts, not
records: the records of one topic read within ``BURST_NS`` of the first, at most
``BURST_RECORDS`` of them, share one sampling decision and, when sampled, one
``send`` span (``messaging.batch.message_count``, ``krakenfeed.products``) whose
context every one of them carries in its ``traceparent`` header. At live rates a
burst is mostly one record; at full speed one span stands for a hundred.

The decision is taken before any span exists, by the configured sampler's own
rule: a root is sampled when the low 64 bits of its trace id fall under the
ratio's bound. The provider's id generator hands the span the id drawn for that
decision, so its sampler agrees. The read loop does not even draw an id per burst:
each burst is a root sampled with probability bound / 2**64, independently, so the
number of bursts until the next sampled one is geometric, and the loop counts it
down (``start_send``); the sampled burst then gets an id drawn uniformly from those
under the bound, which is the distribution a draw-then-check would give it. Every
burst is sampled alike whatever its size, so the share of records traced is the
ratio. Unsampled records carry no header and cost a comparison at ingest and one
header check in the detector.

A record read from Kafka is traced when its ``traceparent`` header says sampled,
as a parent-based sampler would (``sampled_traceparent``). The detector gives the
consecutive records of one burst on a partition one ``process`` span, the child of
the burst's ``send`` span, with the first offset and the last
(``krakenfeed.kafka.last_offset``); it ends when the partition moves on to a record
of another burst or none, or at the next checkpoint; the PostgreSQL batch that
holds the records links to it.

Anomalies are the exception: a record that raises one is always traced. When its
producer sampled it, its burst's ``process`` span is marked with the detectors; when not,
the detector opens a root ``process`` span for it that the sampler keeps whatever
the ratio (``raised``). Either way the anomaly carries that span's trace id, and
its Kafka record a ``traceparent`` header, so every anomaly has a trace to open.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from random import getrandbits, random, randrange
from typing import Any, Final

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_SDK_DISABLED,
    OTEL_SPAN_LINK_COUNT_LIMIT,
    OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging
from opentelemetry.semconv.attributes import db_attributes as db
from opentelemetry.semconv.attributes.k8s_attributes import K8S_NAMESPACE_NAME
from opentelemetry.trace import Link, SpanContext, SpanKind
from opentelemetry.util.types import Attributes

__all__ = [
    "SpanContext",
    "Tracing",
    "configure_tracing",
    "trace_id_hex",
]

TRACEPARENT: Final = "traceparent"
ANOMALY_DETECTORS: Final = "krakenfeed.anomaly.detectors"
"""Attribute of a ``process`` span whose record raised anomalies: their detectors."""
PRODUCTS: Final = "krakenfeed.products"
"""Attribute of a span for a burst of records: the products (record keys) in it."""
LAST_OFFSET: Final = "krakenfeed.kafka.last_offset"
"""Attribute of a ``process`` span for several records: the offset of the last
(``messaging.kafka.offset`` is the first's)."""
BURST_RECORDS: Final = 100
BURST_NS: Final = 10_000_000
"""Ingest samples bursts: the records of one topic read within 10 ms of the first,
at most 100 of them. At live rates that is mostly one record; at tens of thousands
per second it is one span, and one sampling decision, per hundred."""
BATCH_LINKS: Final = 4096
"""Links a span keeps unless ``OTEL_SPAN_LINK_COUNT_LIMIT`` says otherwise: a
PostgreSQL batch holds up to a few thousand records, each traced at 100%."""
_ALL: Final = 1 << 64
"""The bound of a sampler that samples every root."""
_KAFKA: Final = messaging.MessagingSystemValues.KAFKA.value
_SEND: Final = messaging.MessagingOperationTypeValues.SEND.value
_PROCESS: Final = messaging.MessagingOperationTypeValues.PROCESS.value


def _ratio(text: str | None) -> float:
    if text is None or not text.strip():
        return 1.0
    try:
        ratio = float(text)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"{OTEL_TRACES_SAMPLER_ARG}: got {text!r}; expected a ratio from 0 to 1")
    return ratio


def sampler_from_env(environ: Mapping[str, str]) -> tuple[Sampler, int]:
    """The configured sampler and the bound under which a root's trace id (low 64
    bits) is sampled: the two always agree."""
    name = environ.get(OTEL_TRACES_SAMPLER, "parentbased_always_on").strip().lower()
    root_name = name.removeprefix("parentbased_")
    root: Sampler
    if root_name == "always_on":
        root, bound = ALWAYS_ON, _ALL
    elif root_name == "always_off":
        root, bound = ALWAYS_OFF, 0
    elif root_name == "traceidratio":
        ratio_sampler = TraceIdRatioBased(_ratio(environ.get(OTEL_TRACES_SAMPLER_ARG)))
        root, bound = ratio_sampler, ratio_sampler.bound
    else:
        allowed = [
            f"{prefix}{n}"
            for prefix in ("", "parentbased_")
            for n in ("always_on", "always_off", "traceidratio")
        ]
        raise ValueError(f"{OTEL_TRACES_SAMPLER}: got {name!r}; allowed: {', '.join(allowed)}")
    return (ParentBased(root) if name.startswith("parentbased_") else root), bound


class _FollowAnomaliesAndBatches(Sampler):
    """The configured sampler, except for two kinds of root span, always sampled:
    one that records anomalies (``ANOMALY_DETECTORS``), so that every anomaly has a
    trace; and one with a sampled link (a PostgreSQL batch holding a traced record),
    since a ratio would otherwise drop most of the batches the records point to."""

    def __init__(self, configured: Sampler) -> None:
        self._configured = configured

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        wanted = (attributes is not None and ANOMALY_DETECTORS in attributes) or (
            links and any(link.context.trace_flags.sampled for link in links)
        )
        if wanted and not trace.get_current_span(parent_context).get_span_context().is_valid:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return self._configured.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"FollowAnomaliesAndBatches{{{self._configured.get_description()}}}"


class _DrawnIds(RandomIdGenerator):
    """Random ids, except a trace id drawn (and judged) beforehand by this thread."""

    def __init__(self) -> None:
        self._drawn = threading.local()

    def hand_over(self, trace_id: int) -> None:
        self._drawn.trace_id = trace_id

    def generate_trace_id(self) -> int:
        trace_id: int = getattr(self._drawn, "trace_id", 0)
        if trace_id:
            self._drawn.trace_id = 0
            return trace_id
        return super().generate_trace_id()


class _HeaderList(Setter[list[tuple[str, bytes]]], Getter[Sequence[tuple[str, Any]]]):
    """Kafka headers as librdkafka and quixstreams pass them: (name, bytes) pairs."""

    def set(self, carrier: list[tuple[str, bytes]], key: str, value: str) -> None:
        carrier.append((key, value.encode()))

    def get(self, carrier: Sequence[tuple[str, Any]], key: str) -> list[str] | None:
        found = [
            value.decode() if isinstance(value, bytes) else str(value)
            for name, value in carrier
            if name == key
        ]
        return found or None

    def keys(self, carrier: Sequence[tuple[str, Any]]) -> list[str]:
        return [name for name, _ in carrier]


_HEADERS: Final = _HeaderList()


def trace_id_hex(context: SpanContext) -> str:
    """A trace id as Jaeger and the W3C header write it: 32 hex digits."""
    return format(context.trace_id, "032x")


def _end_burst(span: trace.Span, keys: Counter[Any], last_ns: int) -> None:
    """End the span of a burst of records: their count and products, and the time
    its last one was done with."""
    span.set_attribute(messaging.MESSAGING_BATCH_MESSAGE_COUNT, keys.total())
    products = sorted(
        key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        for key in keys
        if key is not None
    )
    if products:
        span.set_attribute(PRODUCTS, products)
    span.end(end_time=last_ns or None)


class _Burst:
    """Ingest's records on one topic from ``started_ns`` on, up to ``BURST_RECORDS``
    of them within ``BURST_NS``: one sampling decision, and when sampled, one
    ``send`` span whose context all their headers carry."""

    __slots__ = ("headers", "keys", "last_ns", "left", "span", "until_ns")

    def __init__(self, started_ns: int) -> None:
        self.left = BURST_RECORDS - 1
        self.until_ns = started_ns + BURST_NS
        self.span: trace.Span | None = None
        self.headers: list[tuple[str, bytes]] | None = None
        self.keys: Counter[bytes | None] = Counter()
        self.last_ns = 0

    def add(self, key: bytes | None) -> None:
        self.keys[key] += 1

    def end(self) -> None:
        if self.span is not None:
            _end_burst(self.span, self.keys, self.last_ns)


class _Processing:
    """The detector's ``process`` span for consecutive records of one ingest burst
    on one partition."""

    __slots__ = ("keys", "last_ns", "last_offset", "span", "traceparent")

    def __init__(self, traceparent: Any, span: trace.Span) -> None:
        self.traceparent = traceparent
        self.span = span
        self.keys: Counter[Any] = Counter()
        self.last_offset = -1
        self.last_ns = 0

    def processed(self, key: Any, offset: int) -> None:
        """One more of its records went through the detectors."""
        self.keys[key] += 1
        self.last_offset = offset
        self.last_ns = time.time_ns()

    def end(self) -> None:
        self.span.set_attribute(LAST_OFFSET, self.last_offset)
        _end_burst(self.span, self.keys, self.last_ns)


class Tracing:
    """One process's tracer and the cheap decisions in front of it."""

    def __init__(self, provider: TracerProvider, ids: _DrawnIds, root_bound: int) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("krakenfeed")
        self._ids = ids
        self._root_bound = root_bound
        self._bursts: dict[str, _Burst] = {}
        """Ingest: each topic's current burst."""
        self.bursts_due_ns = sys.maxsize
        """Ingest: when the first open sampled burst's time is up (``end_bursts``)."""
        self._processing: dict[tuple[str, int], _Processing] = {}
        """Detector: each partition's open ``process`` span."""
        self._unsampled_ahead = self._gap()

    # --- ingest: producer spans ----------------------------------------------------

    def root_trace_id(self) -> int:
        """A fresh trace id when the sampler samples a root with it, else 0."""
        low = getrandbits(64)
        if low >= self._root_bound:
            return 0
        return (getrandbits(64) << 64) | low or 1

    def _gap(self) -> int:
        """How many bursts go unsampled before the next sampled one: geometric, with
        the sampler's probability bound / 2**64 of sampling each."""
        bound = self._root_bound
        if bound >= _ALL:
            return 0
        if bound <= 0:
            return sys.maxsize
        return int(math.log(1.0 - random()) / math.log1p(-bound / _ALL))

    def _sampled_trace_id(self) -> int:
        """A trace id drawn uniformly from those the sampler samples as a root."""
        return (getrandbits(64) << 64 | randrange(self._root_bound)) or 1 << 64

    def start_send(
        self, topic: str, key: bytes | None, now_ns: int
    ) -> list[tuple[str, bytes]] | None:
        """For the read loop, per record read at ``now_ns``: the headers of the
        record's burst on ``topic``, None when the burst is not sampled. A sampled
        burst's ``send`` span is open until the burst ends; ``end_send`` marks each
        of its records handed to the producer. The loop's thread only."""
        burst = self._bursts.get(topic)
        if burst is not None and burst.left and now_ns < burst.until_ns:
            burst.left -= 1
            if burst.span is not None:
                burst.add(key)
            return burst.headers
        return self._next_burst(topic, key, now_ns)

    def end_send(self, topic: str) -> None:
        """The latest record of ``topic``'s sampled burst was handed to the producer."""
        self._bursts[topic].last_ns = time.time_ns()

    def end_bursts(self, now_ns: int | None = None) -> None:
        """End the bursts whose time is up at ``now_ns`` (all when None), so that a
        topic gone quiet does not hold its span back from the exporter. The read
        loop calls it once a frame arrives at or after ``bursts_due_ns``."""
        due = sys.maxsize
        for topic, burst in list(self._bursts.items()):
            if now_ns is not None and now_ns < burst.until_ns:
                if burst.span is not None:
                    due = min(due, burst.until_ns)
                continue
            if self._bursts.pop(topic, None) is burst:
                burst.end()
        self.bursts_due_ns = due

    def _next_burst(
        self, topic: str, key: bytes | None, now_ns: int
    ) -> list[tuple[str, bytes]] | None:
        ended = self._bursts.pop(topic, None)
        if ended is not None:
            ended.end()
        burst = _Burst(now_ns)
        self._bursts[topic] = burst
        if self._unsampled_ahead:
            self._unsampled_ahead -= 1
            return None
        self._unsampled_ahead = self._gap()
        self.bursts_due_ns = min(self.bursts_due_ns, burst.until_ns)
        burst.span = self._send_span(self._sampled_trace_id(), topic, None)
        burst.headers = self._inject(burst.span)
        burst.add(key)
        return burst.headers

    @contextlib.contextmanager
    def sending(self, topic: str, key: bytes | None) -> Iterator[list[tuple[str, bytes]] | None]:
        """``start_send``/``end_send`` for any thread, off the hot loop."""
        trace_id = self.root_trace_id()
        if not trace_id:
            yield None
            return
        span = self._send_span(trace_id, topic, key)
        try:
            yield self._inject(span)
        finally:
            span.end()

    def _send_span(self, trace_id: int, topic: str, key: bytes | None) -> trace.Span:
        self._ids.hand_over(trace_id)
        attributes: dict[str, str] = {
            messaging.MESSAGING_SYSTEM: _KAFKA,
            messaging.MESSAGING_OPERATION_TYPE: _SEND,
            messaging.MESSAGING_OPERATION_NAME: "send",
            messaging.MESSAGING_DESTINATION_NAME: topic,
        }
        if key is not None:
            attributes[messaging.MESSAGING_KAFKA_MESSAGE_KEY] = key.decode("utf-8", "replace")
        return self.tracer.start_span(
            f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes
        )

    @staticmethod
    def _inject(span: trace.Span) -> list[tuple[str, bytes]]:
        headers: list[tuple[str, bytes]] = []
        propagate.inject(headers, context=trace.set_span_in_context(span), setter=_HEADERS)
        return headers

    # --- detector: process and sink spans --------------------------------------------

    @staticmethod
    def sampled_traceparent(headers: Sequence[tuple[str, Any]] | None) -> Any:
        """A Kafka record's ``traceparent`` header when it says sampled, else None."""
        if not headers:
            return None
        for name, value in headers:
            if name == TRACEPARENT:
                # version-trace_id-span_id-flags: the last two hex digits are the flags.
                return value if int(value[-2:], 16) & 1 else None
        return None

    def processing(
        self,
        headers: Sequence[tuple[str, Any]],
        traceparent: Any,
        topic: str,
        partition: int,
        offset: int,
        group: str,
    ) -> tuple[_Processing, bool]:
        """The detector's ``process`` span for a sampled record, and whether it is
        new: the records of one ingest burst that follow each other on a partition
        share one, a child of the burst's ``send`` span. Open until the partition
        moves on to another record, or the next checkpoint (``end_processing``)."""
        at = (topic, partition)
        opened = self._processing.get(at)
        if opened is not None:
            # The next record of the same burst; a replay after backpressure
            # starts over from the committed offset and gets a span of its own.
            if opened.traceparent == traceparent and offset == opened.last_offset + 1:
                return opened, False
            opened.end()
        span = self.tracer.start_span(
            f"process {topic}",
            context=propagate.extract(headers, getter=_HEADERS),
            kind=SpanKind.CONSUMER,
            attributes=_process_attributes(topic, partition, offset, None, group),
        )
        opened = self._processing[at] = _Processing(traceparent, span)
        return opened, True

    @staticmethod
    def within(opened: _Processing) -> contextlib.AbstractContextManager[trace.Span]:
        """``opened``'s span as the current one, left open."""
        return trace.use_span(opened.span, end_on_exit=False)

    @property
    def open_processes(self) -> Mapping[tuple[str, int], _Processing]:
        """The detector's open ``process`` spans by partition (a live view)."""
        return self._processing

    def end_processing(self, topic: str | None = None, partition: int = 0) -> None:
        """End the detector's open ``process`` span on ``topic``'s ``partition``, or
        all of them. The stream's thread only, between records: when a partition
        moves on from a burst, and at each checkpoint."""
        if topic is not None:
            opened = self._processing.pop((topic, partition), None)
            if opened is not None:
                opened.end()
            return
        for opened in self._processing.values():
            opened.end()
        self._processing.clear()

    def raised(
        self,
        detectors: Sequence[str],
        topic: str,
        partition: int,
        offset: int,
        key: Any,
        group: str,
    ) -> tuple[SpanContext, bool]:
        """The span of a record that raised anomalies, and whether it is new.

        Inside its sampled ``process`` span, that span, marked with the detectors.
        Otherwise a root ``process`` span for the record, which the sampler keeps
        whatever the ratio: ended at once, it holds the record's coordinates and the
        detectors, and the PostgreSQL batch of its rows links to it."""
        current = trace.get_current_span()
        context = current.get_span_context()
        if context.trace_flags.sampled:
            # A burst's span may hold several records that raised anomalies.
            marked = (getattr(current, "attributes", None) or {}).get(ANOMALY_DETECTORS, ())
            current.set_attribute(ANOMALY_DETECTORS, sorted({*marked, *detectors}))
            return context, False
        attributes = _process_attributes(topic, partition, offset, key, group)
        attributes[ANOMALY_DETECTORS] = list(detectors)
        span = self.tracer.start_span(
            f"process {topic}", context=Context(), kind=SpanKind.CONSUMER, attributes=attributes
        )
        span.end()
        return span.get_span_context(), True

    @staticmethod
    def headers(context: SpanContext) -> list[tuple[str, bytes]]:
        """Kafka headers that make ``context`` the parent of whatever reads the record."""
        return Tracing._inject(trace.NonRecordingSpan(context))

    def writing(
        self, rows_by_table: Mapping[str, int], links: Sequence[SpanContext]
    ) -> contextlib.AbstractContextManager[trace.Span]:
        """A span for one PostgreSQL batch, linked to the traced records it holds."""
        tables = sorted(rows_by_table)
        summary = " ".join(f"INSERT {table}" for table in tables) or "INSERT"
        attributes: dict[str, str | int] = {
            db.DB_SYSTEM_NAME: db.DbSystemNameValues.POSTGRESQL.value,
            # The name before semantic conventions 1.26, which Jaeger still reads.
            "db.system": db.DbSystemNameValues.POSTGRESQL.value,
            db.DB_OPERATION_NAME: "INSERT",
            db.DB_QUERY_SUMMARY: summary,
            db.DB_OPERATION_BATCH_SIZE: sum(rows_by_table.values()),
            **{f"krakenfeed.rows.{table}": rows for table, rows in rows_by_table.items()},
        }
        if len(tables) == 1:
            attributes[db.DB_COLLECTION_NAME] = tables[0]
        return self.tracer.start_as_current_span(
            summary,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            links=[Link(context) for context in links],
        )

    # --- operator ---------------------------------------------------------------------

    def reconciling(
        self, namespace: str, name: str, generation: int | None
    ) -> contextlib.AbstractContextManager[trace.Span]:
        """The operator's span for one reconcile pass of one feed."""
        attributes: dict[str, str | int] = {K8S_NAMESPACE_NAME: namespace, "krakenfeed.feed": name}
        if generation is not None:
            attributes["krakenfeed.generation"] = generation
        return self.tracer.start_as_current_span(
            "reconcile KrakenFeed", kind=SpanKind.INTERNAL, attributes=attributes
        )

    def shutdown(self) -> None:
        """End what is open, export what is buffered and stop."""
        self.end_bursts()
        self.end_processing()
        self.provider.shutdown()


def _process_attributes(
    topic: str, partition: int, offset: int, key: Any, group: str
) -> dict[str, str | int | list[str]]:
    """What messaging conventions say of a consumed Kafka record."""
    attributes: dict[str, str | int | list[str]] = {
        messaging.MESSAGING_SYSTEM: _KAFKA,
        messaging.MESSAGING_OPERATION_TYPE: _PROCESS,
        messaging.MESSAGING_OPERATION_NAME: "process",
        messaging.MESSAGING_DESTINATION_NAME: topic,
        messaging.MESSAGING_DESTINATION_PARTITION_ID: str(partition),
        messaging.MESSAGING_KAFKA_OFFSET: offset,
        messaging.MESSAGING_CONSUMER_GROUP_NAME: group,
    }
    if key is not None:
        attributes[messaging.MESSAGING_KAFKA_MESSAGE_KEY] = str(key)
    return attributes


def _exporter(environ: Mapping[str, str], endpoint: str) -> SpanExporter:
    protocol = (
        environ.get(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)
        or environ.get(OTEL_EXPORTER_OTLP_PROTOCOL)
        or "grpc"
    ).strip()
    traces_endpoint = environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        # The signal-specific variable is the full URL; the generic one is a base.
        url = traces_endpoint or f"{endpoint.rstrip('/')}/v1/traces"
        return HttpExporter(endpoint=url)
    raise ValueError(
        f"{OTEL_EXPORTER_OTLP_PROTOCOL}: got {protocol!r}; allowed: grpc, http/protobuf"
    )


def configure_tracing(service_name: str, processor: SpanProcessor | None = None) -> Tracing | None:
    """This process's tracing from the ``OTEL_*`` variables, or None when they
    name no endpoint (or disable the SDK): nothing is then exported, or even made.

    ``service_name`` is used when ``OTEL_SERVICE_NAME`` and the resource
    attributes name none. ``processor`` replaces the batch exporter (benchmarks).
    Raises ValueError naming the variable that holds a value it cannot use.
    """
    environ = os.environ
    endpoint = (
        environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
        or environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)
        or ""
    ).strip()
    if environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return None
    if not endpoint and processor is None:
        return None
    sampler, bound = sampler_from_env(environ)
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    ids = _DrawnIds()
    provider = TracerProvider(
        sampler=_FollowAnomaliesAndBatches(sampler),
        resource=resource,
        id_generator=ids,
        span_limits=SpanLimits(
            max_links=None if OTEL_SPAN_LINK_COUNT_LIMIT in environ else BATCH_LINKS
        ),
    )
    provider.add_span_processor(processor or BatchSpanProcessor(_exporter(environ, endpoint)))
    return Tracing(provider, ids, bound)
