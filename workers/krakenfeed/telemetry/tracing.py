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
microseconds, so the sampling decision is taken before any span exists, by the
configured sampler's own rule: a root is sampled when the low 64 bits of its
trace id fall under the ratio's bound. The provider's id generator hands the span
the id drawn for that decision, so its sampler agrees. Ingest's read loop does not
even draw an id per record: each record is a root sampled with probability
bound / 2**64, independently, so the number of records until the next sampled one
is geometric, and the loop counts it down (``start_send``); the sampled record then
gets an id drawn uniformly from those under the bound, which is the distribution a
draw-then-check would give it. A record read from Kafka is traced when its
``traceparent`` header says sampled (``sampled_parent``), as a parent-based sampler
would. Unsampled records carry no header and cost one decrement at ingest and one
header check in the detector.

Anomalies are the exception: a record that raises one is always traced. When its
producer sampled it, its ``process`` span is marked with the detectors; when not,
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


class Tracing:
    """One process's tracer and the cheap decisions in front of it."""

    def __init__(self, provider: TracerProvider, ids: _DrawnIds, root_bound: int) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("krakenfeed")
        self._ids = ids
        self._root_bound = root_bound
        self._open: trace.Span | None = None
        self._unsampled_ahead = self._gap()

    # --- ingest: producer spans ----------------------------------------------------

    def root_trace_id(self) -> int:
        """A fresh trace id when the sampler samples a root with it, else 0."""
        low = getrandbits(64)
        if low >= self._root_bound:
            return 0
        return (getrandbits(64) << 64) | low or 1

    def _gap(self) -> int:
        """How many roots go unsampled before the next sampled one: geometric, with
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

    def start_send(self, topic: str, key: bytes | None) -> list[tuple[str, bytes]] | None:
        """For the read loop, per record: None when the record is not sampled;
        otherwise opens its ``send`` span and returns the headers that carry it,
        to be closed by ``end_send`` once the record is handed to the producer.
        One span open at a time: the loop's thread only."""
        if self._unsampled_ahead:
            self._unsampled_ahead -= 1
            return None
        self._unsampled_ahead = self._gap()
        span = self._send_span(self._sampled_trace_id(), topic, key)
        self._open = span
        return self._inject(span)

    def end_send(self) -> None:
        span, self._open = self._open, None
        if span is not None:
            span.end()

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
    def sampled_parent(headers: Sequence[tuple[str, Any]] | None) -> Context | None:
        """The producer's context when a Kafka record's headers say it was sampled."""
        if not headers:
            return None
        for name, value in headers:
            if name == TRACEPARENT:
                # version-trace_id-span_id-flags: the last two hex digits are the flags.
                if int(value[-2:], 16) & 1:
                    return propagate.extract(headers, getter=_HEADERS)
                return None
        return None

    def processing(
        self,
        parent: Context,
        topic: str,
        partition: int,
        offset: int,
        key: Any,
        group: str,
    ) -> contextlib.AbstractContextManager[trace.Span]:
        """The detector's span for one record, a child of its ``send`` span."""
        return self.tracer.start_as_current_span(
            f"process {topic}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=_process_attributes(topic, partition, offset, key, group),
        )

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
            current.set_attribute(ANOMALY_DETECTORS, list(detectors))
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
        """Export what is buffered and stop."""
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
