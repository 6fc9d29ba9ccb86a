"""Traces and logs for every krakenfeed process, the operator's included.

Shared with the operator like ``krakenfeed.contracts``: it imports nothing of
krakenfeed's but the contracts, and no worker I/O library.
"""

from krakenfeed.telemetry.logs import configure_logging, redact
from krakenfeed.telemetry.tracing import (
    SpanContext,
    Tracing,
    configure_tracing,
    trace_id_hex,
)

__all__ = [
    "SpanContext",
    "Tracing",
    "configure_logging",
    "configure_tracing",
    "redact",
    "trace_id_hex",
]
