"""Reading a worker's HTTP endpoint the way Prometheus and the kubelet do."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from krakenfeed.contracts.monitoring import LIVENESS_PATH, METRICS_PATH, READINESS_PATH

Labels = frozenset[tuple[str, str]]


def get(port: int, path: str) -> tuple[int, str]:
    """``GET http://127.0.0.1:port/path`` → (status, body), 5xx included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def ready(port: int) -> tuple[int, str]:
    return get(port, READINESS_PATH)


def live(port: int) -> tuple[int, str]:
    return get(port, LIVENESS_PATH)


class Scrape:
    """One scrape of ``/metrics``, parsed with prometheus_client's own parser."""

    def __init__(self, port: int) -> None:
        status, text = get(port, METRICS_PATH)
        assert status == 200, text
        self.samples: dict[str, dict[Labels, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                series = self.samples.setdefault(sample.name, {})
                series[frozenset(sample.labels.items())] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The one sample of ``name`` with exactly these labels."""
        return self.samples[name][frozenset(labels.items())]

    def by(self, name: str, label: str, **where: str) -> dict[str, float]:
        """Samples of ``name`` matching ``where``, keyed by ``label``."""
        return {
            dict(labels)[label]: value
            for labels, value in self.samples.get(name, {}).items()
            if _matches(labels, where)
        }


def _matches(labels: Labels, where: Mapping[str, str]) -> bool:
    found = dict(labels)
    return all(found.get(key) == value for key, value in where.items())
