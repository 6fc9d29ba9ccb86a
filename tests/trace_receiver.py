"""A real OTLP/gRPC receiver (``oteltest``'s sink) that keeps every span it is sent,
for tests to query."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from oteltest.sink import GrpcSink
from oteltest.sink.handler import RequestHandler

from krakenfeed.embedded.net import free_port

SPAN_KIND = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _value(any_value: Any) -> Any:
    field = any_value.WhichOneof("value")
    if field == "array_value":
        return [_value(item) for item in any_value.array_value.values]
    return getattr(any_value, field) if field else None


def _attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in key_values}


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    resource: dict[str, Any]
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    """Empty for a root span."""
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]
    """(trace id, span id) of each linked span."""
    status_code: int


class TraceReceiver(RequestHandler):  # type: ignore[misc]
    def __init__(self, port: int) -> None:
        self.port = port
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, sampler_ratio: float = 1.0) -> dict[str, str]:
        """The variables the operator gives a worker, pointed at this receiver."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": f"{sampler_ratio:g}",
            # Export at once: the tests wait for spans, not for the batch timer.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }

    def handle_trace(self, request: Any, headers: Any) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name")),
                            resource=resource,
                            name=span.name,
                            kind=SPAN_KIND.get(span.kind, str(span.kind)),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            links=tuple(
                                (link.trace_id.hex(), link.span_id.hex()) for link in span.links
                            ),
                            status_code=span.status.code,
                        )
                    )
        with self._lock:
            self._spans += received

    def handle_metrics(self, request: Any, headers: Any) -> None:
        pass

    def handle_logs(self, request: Any, headers: Any) -> None:
        pass

    def spans(self, where: Callable[[ReceivedSpan], bool] = lambda _: True) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self._spans if where(span)]

    def wait_for(
        self,
        enough: Callable[[list[ReceivedSpan]], bool],
        where: Callable[[ReceivedSpan], bool],
        timeout: float,
        what: str,
    ) -> list[ReceivedSpan]:
        """The spans ``where`` selects, once ``enough`` holds for them."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans(where)
            if enough(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:.0f} s; have {len(spans)} spans")
            time.sleep(0.1)


@contextmanager
def trace_receiver() -> Iterator[TraceReceiver]:
    port = free_port()
    receiver = TraceReceiver(port)
    sink = GrpcSink(receiver, logging.getLogger("tests.trace_receiver"), max_workers=4, port=port)
    sink.start()
    try:
        yield receiver
    finally:
        sink.stop()
