"""The operator under kopf.testing.KopfRunner against KMock's Kubernetes emulator.

KMock runs no controllers and no garbage collection: these tests play the
Deployment, Pod and KafkaTopic controllers by writing ``status``, and check
ownerReferences instead of garbage collection.
"""

from __future__ import annotations

import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner

from krakenfeed.contracts import parse_spec
from krakenfeed_operator.builders import CONFIG_HASH, Owner, build_detector, build_ingest
from tests.kube_emulator import Emulator, emulator, eventually

NS = "markets"
IMAGE = "registry.test/krakenfeed:test"
FEEDS = f"/apis/krakenfeed.io/v1alpha1/namespaces/{NS}/krakenfeeds"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
CONFIG_MAPS = f"/api/v1/namespaces/{NS}/configmaps"
TOPICS = f"/apis/kafka.strimzi.io/v1beta2/namespaces/{NS}/kafkatopics"
PODS = f"/api/v1/namespaces/{NS}/pods"
EVENTS = f"/api/v1/namespaces/{NS}/events"
SPEC: dict[str, Any] = {
    "sources": [
        {"api": "futures", "products": ["PF_XBTUSD"], "channels": ["ticker", "trade"]},
        {"api": "spot", "products": ["BTC/USD"], "channels": ["trade"]},
    ],
    "postgres": {"cnpgCluster": "pg"},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """A fresh emulator per test, and the operator's environment pointing at it."""
    with emulator([NS, "elsewhere"]) as running:
        monkeypatch.setenv("KUBECONFIG", str(running.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.setenv("KRAKENFEED_WORKER_IMAGE", IMAGE)
        monkeypatch.setenv("KRAKENFEED_RESYNC_INTERVAL_S", "0.5")
        yield running


def run_operator(liveness_port: int | None = None) -> KopfRunner:
    args = ["run", "--standalone", "--namespace", NS, "-m", "krakenfeed_operator.handlers"]
    if liveness_port:
        args += ["--liveness", f"http://127.0.0.1:{liveness_port}/healthz"]
    settings = kopf.OperatorSettings()
    # Stop in a blink: per-object workers need not linger for more events.
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 0.5
    # kmock never changes resourceVersion, so kopf would wait this long after each
    # of its own patches for a version that never comes (5 s by default).
    settings.persistence.consistency_timeout = 0.2
    return KopfRunner(args, timeout=30, settings=settings)


@pytest.fixture
def operator(kube: Emulator) -> Iterator[KopfRunner]:
    port = free_port()
    with run_operator(port) as runner:
        runner.liveness_port = port  # type: ignore[attr-defined]
        yield runner
    assert runner.exception is None


def create_feed(kube: Emulator, spec: dict[str, Any] = SPEC) -> str:
    name = f"feed-{uuid.uuid4().hex[:6]}"
    kube.create(
        FEEDS,
        {
            "apiVersion": "krakenfeed.io/v1alpha1",
            "kind": "KrakenFeed",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        },
    )
    return name


def update_spec(kube: Emulator, name: str, **changes: Any) -> None:
    """As the API server does on a spec change: merge it and bump the generation."""
    feed = kube.get(f"{FEEDS}/{name}")
    generation = feed["metadata"]["generation"] + 1
    kube.patch(f"{FEEDS}/{name}", {"metadata": {"generation": generation}, "spec": changes})


def condition(kube: Emulator, name: str, kind: str) -> tuple[str, str] | None:
    feed = kube.get(f"{FEEDS}/{name}") or {}
    for c in (feed.get("status") or {}).get("conditions", []):
        if c["type"] == kind:
            return c["status"], c["reason"]
    return None


def deployment(kube: Emulator, name: str) -> Any:
    return kube.get(f"{DEPLOYMENTS}/{name}")


def container(obj: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return found


def as_sent(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without the fields the API server adds on creation."""
    added = {"uid", "resourceVersion", "generation", "creationTimestamp"}
    meta = {k: v for k, v in obj["metadata"].items() if k not in added}
    return {**obj, "metadata": meta}


def config_hash(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH])


def children(kube: Emulator, name: str) -> list[dict[str, Any]]:
    return [
        child
        for collection in (CONFIG_MAPS, DEPLOYMENTS, TOPICS)
        for child in kube.items(collection)
        if child["metadata"]["labels"].get("krakenfeed.io/feed") == name
    ]


def play_controllers(kube: Emulator, name: str) -> None:
    """Report every Deployment available and every KafkaTopic ready."""
    for child in children(kube, name):
        path = {"Deployment": DEPLOYMENTS, "KafkaTopic": TOPICS}.get(child["kind"])
        if path is None:
            continue
        if child["kind"] == "Deployment":
            replicas = child["spec"]["replicas"]
            status: dict[str, Any] = {"replicas": replicas, "availableReplicas": replicas}
        else:
            status = {"conditions": [{"type": "Ready", "status": "True"}]}
        kube.patch(f"{path}/{child['metadata']['name']}/status", {"status": status})


def test_a_new_feed_gets_every_child_with_exact_env_and_an_owner(
    kube: Emulator, operator: KopfRunner
) -> None:
    name = create_feed(kube)
    found = eventually(lambda: len(children(kube, name)) == 9 and children(kube, name))
    feed = kube.get(f"{FEEDS}/{name}")
    assert sorted(c["metadata"]["name"] for c in found) == sorted(
        [f"{name}-config", f"{name}-ingest-futures", f"{name}-ingest-spot", f"{name}-detector"]
        + [f"{name}-{s}" for s in ("ticker", "trade", "dlq", "quality", "anomalies")]
    )
    for child in found:
        assert child["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "krakenfeed.io/v1alpha1",
                "kind": "KrakenFeed",
                "name": name,
                "uid": feed["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    assert container(deployment(kube, f"{name}-detector"))["env"] == [
        {"name": "KRAKENFEED_RETENTION_DAYS", "value": "30"},
        {"name": "KRAKENFEED_STATE_DIR", "value": "/var/lib/krakenfeed/state"},
        {"name": "PGHOST", "value": "pg-rw"},
        {
            "name": "PGPORT",
            "valueFrom": {"secretKeyRef": {"name": "pg-app", "key": "port"}},
        },
        {"name": "PGDATABASE", "valueFrom": {"secretKeyRef": {"name": "pg-app", "key": "dbname"}}},
        {"name": "PGUSER", "valueFrom": {"secretKeyRef": {"name": "pg-app", "key": "user"}}},
        {
            "name": "PGPASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "pg-app", "key": "password"}},
        },
        {"name": "OTEL_SERVICE_NAME", "value": "krakenfeed-detector"},
        {"name": "KRAKENFEED_HTTP_PORT", "value": "9464"},
    ]
    assert container(deployment(kube, f"{name}-ingest-spot"))["env"] == [
        {"name": "KRAKENFEED_API", "value": "spot"},
        {"name": "KRAKENFEED_PRODUCTS", "value": "BTC/USD"},
        {"name": "KRAKENFEED_CHANNELS", "value": "trade"},
        {"name": "OTEL_SERVICE_NAME", "value": "krakenfeed-ingest"},
        {"name": "KRAKENFEED_HTTP_PORT", "value": "9464"},
    ]
    assert container(deployment(kube, f"{name}-ingest-futures"))["image"] == IMAGE
    assert kube.get(f"{CONFIG_MAPS}/{name}-config")["data"] == {
        "KRAKENFEED_NAMESPACE": NS,
        "KRAKENFEED_FEED": name,
        "KRAKENFEED_BROKER": "krakenfeed-kafka-bootstrap:9092",
        "OTEL_SDK_DISABLED": "true",
    }
    # The live children are what the pure builders produce for this feed.
    owner, spec = Owner(NS, name, feed["metadata"]["uid"]), parse_spec(SPEC)
    assert as_sent(deployment(kube, f"{name}-detector")) == build_detector(owner, spec, IMAGE)
    assert as_sent(deployment(kube, f"{name}-ingest-futures")) == build_ingest(
        owner, spec, spec.sources[0], IMAGE
    )
    port = operator.liveness_port  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        assert response.status == 200


def test_status_reports_what_the_children_report(kube: Emulator, operator: KopfRunner) -> None:
    name = create_feed(kube)
    eventually(lambda: len(children(kube, name)) == 9)
    assert eventually(lambda: condition(kube, name, "Ready")) == ("False", "Progressing")
    play_controllers(kube, name)
    eventually(lambda: condition(kube, name, "Ready") == ("True", "Ready"))
    status = kube.get(f"{FEEDS}/{name}")["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True", "IngestReady": "True", "DetectorReady": "True", "TopicsReady": "True",
    }  # fmt: skip
    assert status["observedGeneration"] == 1
    assert status["source"] == "futures+spot"
    assert status["products"] == "PF_XBTUSD,BTC/USD"
    assert status["detectorReplicas"] == 1
    assert all(
        c["lastTransitionTime"] and c["observedGeneration"] == 1 for c in status["conditions"]
    )
    reasons = eventually(
        lambda: (
            {
                e["reason"]
                for e in kube.items(EVENTS)
                if e["involvedObject"]["name"] == name and e["reason"] in {"Progressing", "Ready"}
            }
            == {"Progressing", "Ready"}
        )
    )
    assert reasons


def test_a_spec_change_rolls_the_workers_it_concerns(kube: Emulator, operator: KopfRunner) -> None:
    name = create_feed(kube)
    eventually(lambda: len(children(kube, name)) == 9)
    detector, ingest = deployment(kube, f"{name}-detector"), deployment(kube, f"{name}-ingest-spot")
    update_spec(kube, name, detector={"settings": {"price_jump": {"threshold": 9}}})
    rolled = eventually(
        lambda: (
            config_hash(deployment(kube, f"{name}-detector")) != config_hash(detector)
            and deployment(kube, f"{name}-detector")
        )
    )
    assert {"name": "KRAKENFEED_DETECTOR_CONFIG", "value": '{"price_jump":{"threshold":9}}'} in (
        container(rolled)["env"]
    )
    assert config_hash(deployment(kube, f"{name}-ingest-spot")) == config_hash(ingest)
    eventually(lambda: kube.get(f"{FEEDS}/{name}")["status"]["observedGeneration"] == 2)


def test_a_deleted_child_is_restored(kube: Emulator, operator: KopfRunner) -> None:
    name = create_feed(kube)
    eventually(lambda: len(children(kube, name)) == 9)
    original = deployment(kube, f"{name}-detector")
    kube.delete(f"{DEPLOYMENTS}/{name}-detector")
    kube.delete(f"{CONFIG_MAPS}/{name}-config")
    kube.delete(f"{TOPICS}/{name}-ticker")
    restored = eventually(
        lambda: len(children(kube, name)) == 9 and deployment(kube, f"{name}-detector")
    )
    assert restored["spec"] == original["spec"]


def test_a_child_edited_by_hand_is_reverted(kube: Emulator, operator: KopfRunner) -> None:
    name = create_feed(kube)
    eventually(lambda: len(children(kube, name)) == 9)
    path = f"{DEPLOYMENTS}/{name}-ingest-futures"
    original = kube.get(path)
    edited = container(original) | {"env": [{"name": "KRAKENFEED_API", "value": "spot"}]}
    kube.patch(path, {"spec": {"replicas": 3, "template": {"spec": {"containers": [edited]}}}})
    eventually(lambda: kube.get(path)["spec"] == original["spec"])
    kube.patch(f"{CONFIG_MAPS}/{name}-config", {"data": {"KRAKENFEED_BROKER": "evil:9092"}})
    eventually(
        lambda: (
            kube.get(f"{CONFIG_MAPS}/{name}-config")["data"]["KRAKENFEED_BROKER"]
            == "krakenfeed-kafka-bootstrap:9092"
        )
    )


def test_suspend_scales_both_workers_to_zero_and_keeps_topics(
    kube: Emulator, operator: KopfRunner
) -> None:
    name = create_feed(kube)
    eventually(lambda: len(children(kube, name)) == 9)
    update_spec(kube, name, suspend=True)
    eventually(
        lambda: (
            [
                deployment(kube, f"{name}-{worker}")["spec"]["replicas"]
                for worker in ("ingest-futures", "ingest-spot", "detector")
            ]
            == [0, 0, 0]
        )
    )
    assert eventually(lambda: condition(kube, name, "Ready") == ("False", "Suspended"))
    assert len(children(kube, name)) == 9, "topics and the ConfigMap stay"
    update_spec(kube, name, suspend=False)
    eventually(lambda: deployment(kube, f"{name}-detector")["spec"]["replicas"] == 1)


def test_a_pod_that_cannot_get_its_secret_turns_the_feed_not_ready(
    kube: Emulator, operator: KopfRunner
) -> None:
    name = create_feed(kube)
    eventually(lambda: len(children(kube, name)) == 9)
    play_controllers(kube, name)
    eventually(lambda: condition(kube, name, "Ready") == ("True", "Ready"))
    template = deployment(kube, f"{name}-detector")["spec"]["template"]
    waiting = {"reason": "CreateContainerConfigError", "message": 'secret "pg-app" not found'}
    kube.create(
        PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-detector-5f7c9-abcde",
                "labels": template["metadata"]["labels"],
            },
            "status": {"containerStatuses": [{"name": "detector", "state": {"waiting": waiting}}]},
        },
    )
    eventually(
        lambda: condition(kube, name, "DetectorReady") == ("False", "CreateContainerConfigError")
    )
    assert condition(kube, name, "Ready") == ("False", "CreateContainerConfigError")
    ready = kube.get(f"{FEEDS}/{name}")["status"]["conditions"][0]
    assert 'secret "pg-app" not found' in ready["message"]


def test_an_invalid_spec_is_reported_once_and_touches_no_child(
    kube: Emulator, operator: KopfRunner
) -> None:
    name = create_feed(kube)
    eventually(lambda: len(children(kube, name)) == 9)
    before = children(kube, name)
    # The CRD schema admits BTC/USD as a product id; the spec model refuses it for futures.
    update_spec(kube, name, sources=[{"api": "futures", "products": ["BTC/USD"]}])
    eventually(lambda: condition(kube, name, "Ready") == ("False", "InvalidSpec"))
    message = kube.get(f"{FEEDS}/{name}")["status"]["conditions"][0]["message"]
    assert "products[0] 'BTC/USD' is not a futures product id" in message
    writes = kube.calls("PATCH", DEPLOYMENTS) + kube.calls("POST", DEPLOYMENTS)
    status_writes = kube.calls("PATCH", f"{FEEDS}/{name}/status")
    # Several resync periods later: no retries, no new writes, one Event.
    time.sleep(1.5)  # three resync periods in which nothing may happen
    assert kube.calls("PATCH", DEPLOYMENTS) + kube.calls("POST", DEPLOYMENTS) == writes
    assert kube.calls("PATCH", f"{FEEDS}/{name}/status") == status_writes
    assert children(kube, name) == before
    invalid = [
        e for e in kube.items(EVENTS)
        if e["involvedObject"]["name"] == name and e["reason"] == "InvalidSpec"
    ]  # fmt: skip
    assert len(invalid) == 1
    assert invalid[0]["type"] == "Warning"


def test_a_restarted_operator_creates_no_duplicate_children(kube: Emulator) -> None:
    with run_operator():
        name = create_feed(kube)
        eventually(lambda: len(children(kube, name)) == 9)
    passes = f"{PODS}?labelSelector="  # each pass lists the feed's pods
    observed = kube.calls("GET", passes)
    writes = [
        kube.calls(m, p) for m in ("POST", "PATCH") for p in (DEPLOYMENTS, CONFIG_MAPS, TOPICS)
    ]
    with run_operator():
        # The new process resumes the feed and makes a pass over its children...
        eventually(lambda: kube.calls("GET", passes) > observed)
    # ...and finds them as desired: nothing is created or applied again.
    assert writes == [
        kube.calls(m, p) for m in ("POST", "PATCH") for p in (DEPLOYMENTS, CONFIG_MAPS, TOPICS)
    ]
    assert len(children(kube, name)) == 9


def test_only_the_watched_namespaces_are_run(kube: Emulator, operator: KopfRunner) -> None:
    elsewhere = "/apis/krakenfeed.io/v1alpha1/namespaces/elsewhere/krakenfeeds"
    kube.create(
        elsewhere,
        {
            "apiVersion": "krakenfeed.io/v1alpha1",
            "kind": "KrakenFeed",
            "metadata": {"name": "ignored", "namespace": "elsewhere"},
            "spec": SPEC,
        },
    )
    name = create_feed(kube)
    eventually(lambda: len(children(kube, name)) == 9)
    assert kube.items("/apis/apps/v1/namespaces/elsewhere/deployments") == []
    assert "status" not in kube.get(f"{elsewhere}/ignored")


def test_without_the_kafka_topic_crd_the_workers_own_their_topics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with emulator([NS], kafka_topics=False) as bare:
        monkeypatch.setenv("KUBECONFIG", str(bare.kubeconfig(tmp_path / "kubeconfig")))
        with run_operator():
            name = create_feed(bare)
            eventually(lambda: condition(bare, name, "TopicsReady"))
            kinds = sorted(
                c["kind"] for path in (CONFIG_MAPS, DEPLOYMENTS) for c in bare.items(path)
            )
            assert kinds == ["ConfigMap", "Deployment", "Deployment", "Deployment"]
            assert condition(bare, name, "TopicsReady") == ("True", "KafkaTopicCRDMissing")
