"""Operator: a KrakenFeed created → every child exists, against KMock's emulator.

- one feed at a time: latency from the feed's POST to its last child's
  creation, p50 and p99 over 20 feeds; baseline: a bare client that POSTs the
  same nine manifests itself (the emulator's own floor);
- 100 feeds at once: time from the first POST to the last of 900 children, and
  the operator process's peak RSS; baseline: the bare client creating the 900
  children, and the RSS of an idle ``kopf run`` with no handlers.

The operator runs as ``krakenfeed-operator`` in its own process on the other
core; the emulator and the measuring client share the measured core.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from tests.kube_emulator import Emulator, emulator

from benchmarks.runner import Measurement, Result, Servers, benchmark, other_cores, rss_mb
from krakenfeed.contracts import API_VERSION, CRD_KIND, parse_spec
from krakenfeed_operator.builders import Owner, build_children

NS = "bench"
FEEDS = f"/apis/{API_VERSION}/namespaces/{NS}/krakenfeeds"
SPEC = {
    "sources": [
        {"api": "futures", "products": ["PF_XBTUSD"]},
        {"api": "spot", "products": ["BTC/USD"]},
    ]
}
CHILDREN = 9  # ConfigMap, two ingest Deployments, the detector, five KafkaTopics
SEQUENTIAL = 20
AT_ONCE = 100
_PLURALS = {"ConfigMap": "configmaps", "Deployment": "deployments", "KafkaTopic": "kafkatopics"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _process(kube: Emulator, command: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig(Path(tmp) / "kubeconfig"))}
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.sched_setaffinity(process.pid, other_cores())
        try:
            yield process
        finally:
            process.terminate()
            process.wait(10)


def _operator(kube: Emulator) -> AbstractContextManager[subprocess.Popen[bytes]]:
    return _process(
        kube,
        [
            sys.executable, "-m", "krakenfeed_operator.cli", "--watch-namespaces", NS,
            "--liveness-port", str(_free_port()), "--log-level", "WARNING",
            "--resync-interval-s", "60",
        ],
    )  # fmt: skip


def _feed(name: str) -> dict[str, object]:
    return {
        "apiVersion": API_VERSION,
        "kind": CRD_KIND,
        "metadata": {"name": name, "namespace": NS},
        "spec": SPEC,
    }


def _children_created(kube: Emulator, name: str) -> list[float]:
    assert kube.kmock is not None
    created = dict(kube.kmock.created)
    prefixes = ("configmaps/", "deployments/", "kafkatopics/")
    return [
        t
        for key, t in created.items()
        if key.startswith(prefixes) and key.split("/")[1].startswith(f"{name}-")
    ]


def _wait_children(kube: Emulator, names: list[str], timeout: float) -> float:
    """The monotonic time the last child of ``names`` was created."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        times = [_children_created(kube, name) for name in names]
        if all(len(t) == CHILDREN for t in times):
            return max(max(t) for t in times)
        time.sleep(0.02)
    raise TimeoutError(f"children of {len(names)} feeds not created within {timeout} s")


def _bare_create(kube: Emulator, name: str) -> None:
    """What a client that knows the children does: POST them one by one."""
    owner = Owner(NS, name, str(uuid.uuid4()))
    for child in build_children(owner, parse_spec(SPEC), default_image="img", kafka_topics=True):
        prefix = "/api/v1" if child["apiVersion"] == "v1" else f"/apis/{child['apiVersion']}"
        kube.create(f"{prefix}/namespaces/{NS}/{_PLURALS[child['kind']]}", child)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@benchmark("operator")
def operator_reconcile(servers: Servers) -> Result:
    del servers  # the operator needs only the Kubernetes API
    latencies, bare = [], []
    with emulator([NS]) as kube, _operator(kube):
        # Warm up: the operator is watching once it has made its first feed's children.
        kube.create(FEEDS, _feed("warmup"))
        _wait_children(kube, ["warmup"], 60)
        for index in range(SEQUENTIAL):
            name = f"seq-{index}"
            started = time.monotonic()
            kube.create(FEEDS, _feed(name))
            latencies.append(_wait_children(kube, [name], 30) - started)
            started = time.monotonic()
            _bare_create(kube, f"bare-{index}")
            bare.append(time.monotonic() - started)
    with emulator([NS]) as kube, _operator(kube) as process:
        kube.create(FEEDS, _feed("warmup"))
        _wait_children(kube, ["warmup"], 60)
        names = [f"many-{index}" for index in range(AT_ONCE)]
        started = time.monotonic()
        for name in names:
            kube.create(FEEDS, _feed(name))
        all_at_once = _wait_children(kube, names, 120) - started
        rss = rss_mb(process.pid)
    with emulator([NS]) as kube:
        started = time.monotonic()
        for index in range(AT_ONCE):
            _bare_create(kube, f"bare-{index}")
        bare_at_once = time.monotonic() - started
        idle = [sys.executable, "-m", "kopf", "run", "--standalone", "-n", NS, "-m", "json"]
        with _process(kube, idle) as process:
            time.sleep(3)
            bare_rss = rss_mb(process.pid)
    p50, p99 = statistics.median(latencies), _percentile(latencies, 0.99)
    return Result(
        name="operator",
        description=(
            "KrakenFeed created → its 9 children exist (KMock emulator); 100 feeds at once;"
            " operator RSS. Targets: p99 ≤ 1 s, 100 feeds ≤ 30 s, RSS ≤ 150 MB"
        ),
        measurements=[
            Measurement(
                "created → all children, p50",
                "s",
                p50,
                statistics.median(bare),
                "bare client POSTing the 9 children",
                higher_is_better=False,
            ),
            Measurement(
                "created → all children, p99",
                "s",
                p99,
                _percentile(bare, 0.99),
                "bare client POSTing the 9 children",
                higher_is_better=False,
            ),
            Measurement(
                "100 feeds at once → 900 children",
                "s",
                all_at_once,
                bare_at_once,
                "bare client POSTing the 900 children",
                higher_is_better=False,
            ),
            Measurement(
                "operator peak RSS after 100 feeds",
                "MB",
                rss,
                bare_rss,
                "idle kopf run, no handlers",
                higher_is_better=False,
            ),
        ],
        details={
            "feeds_sequential": SEQUENTIAL,
            "feeds_at_once": AT_ONCE,
            "targets": {"p99_s": 1.0, "at_once_s": 30.0, "rss_mb": 150.0},
            "met": {"p99": p99 <= 1.0, "at_once": all_at_once <= 30.0, "rss": rss <= 150.0},
        },
    )
