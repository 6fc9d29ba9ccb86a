"""Ingest counters, kept as plain data; the observability layer exports them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class IngestMetrics:
    frames: Counter[str] = field(default_factory=Counter)
    """Frames received, by kind: ``ticker``, ``trade``, ``heartbeat``, ``event:subscribed``…"""
    produced: Counter[str] = field(default_factory=Counter)
    """Records produced, by stream."""
    invalid: Counter[str] = field(default_factory=Counter)
    """Dead letters, by reason code."""
    duplicates: int = 0
    """Trades and tickers already emitted (a snapshot repeating them), skipped."""
    stale_events: int = 0
    """``stale_product`` events, produced by the monitor thread (not in ``produced``)."""
    reconnects: Counter[str] = field(default_factory=Counter)
    """Connections re-established, by the kind of the loss that preceded them."""
    connect_failures: Counter[str] = field(default_factory=Counter)
    """Attempts to connect that failed, by kind (``unreachable``, ``upgrade_429``…)."""
    last_frame_ns: dict[str, int] = field(default_factory=dict)
    """Receive time of the latest valid data for each product."""

    def last_frame_age_s(self, now_ns: int) -> dict[str, float]:
        return {product: (now_ns - t) / 1e9 for product, t in self.last_frame_ns.items()}
