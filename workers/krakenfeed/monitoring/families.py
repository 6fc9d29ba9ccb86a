"""Metric families built from the contracts' catalogue, so that a name, its type
and its labels are written down once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from krakenfeed.contracts import monitoring as m

_TYPES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}


def family(metric: m.Metric) -> Metric:
    """An empty counter or gauge family of a catalogued metric."""
    empty: Metric = _TYPES[metric.type](metric.name, metric.help, labels=metric.labels)
    return empty


def samples(metric: m.Metric, feed: str, values: Mapping[Any, float]) -> Metric:
    """A worker metric whose labels are the feed, then the keys of ``values`` (a
    string, a tuple of strings, or ``()`` for the feed alone)."""
    out = family(metric)
    for key, value in values.items():
        rest = list(key) if isinstance(key, tuple) else [str(key)]
        out.add_metric([feed, *rest], value)  # type: ignore[attr-defined]
    return out


def connected(feed: str, peers: Mapping[str, bool]) -> Metric:
    return samples(m.CONNECTED, feed, {peer: float(up) for peer, up in peers.items()})


def histogram(
    metric: m.Metric, registry: CollectorRegistry, buckets: tuple[float, ...], feed: str
) -> Any:
    """A catalogued histogram's child for ``feed``, observed as things happen (per
    batch, never per event)."""
    return Histogram(
        metric.name, metric.help, metric.labels, registry=registry, buckets=buckets
    ).labels(feed)
