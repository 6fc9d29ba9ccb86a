"""The chart's RBAC, enforced on the operator.

The operator image's entrypoint runs with exactly the environment the chart's
Deployment gives it, against KMock's Kubernetes emulator, through a feed's life:
created, its children reported ready, one child deleted and one edited by hand.
KMock enforces no RBAC, so the emulator here answers 403 Forbidden, as an API
server would, to every request of the operator that the rendered Role or
ClusterRole does not allow. The feed must still get everything done, nothing
but kopf's optional CRD observation may be denied, and every verb granted must
have been used.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import pytest
import yaml

from tests import kube_emulator
from tests.deploy_tools import Charts, venv_tool
from tests.kube_emulator import Emulator, eventually

NS = "markets"
ROOT = Path(__file__).parents[1]
FEEDS = f"/apis/krakenfeed.io/v1alpha1/namespaces/{NS}/krakenfeeds"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
CONFIG_MAPS = f"/api/v1/namespaces/{NS}/configmaps"
TOPICS = f"/apis/kafka.strimzi.io/v1beta2/namespaces/{NS}/kafkatopics"

TOLERATED_DENIALS = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}
"""kopf may watch CRDs appearing at run time; forbidden that, it keeps the initial
discovery scan and carries on at once, so the chart does not grant it."""


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    watch: bool
    agent: str


@dataclass
class Rbac:
    """The rendered Roles and ClusterRoles in force, and what the operator asked under them."""

    roles: list[dict[str, Any]] = field(default_factory=list)
    used: set[tuple[str, str, str]] = field(default_factory=set)
    denied: set[tuple[str, str, str, str | None]] = field(default_factory=set)

    def authorize(self, call: Call) -> bool:
        attributes = _authorization_attributes(call)
        if attributes is None:
            return True
        group, resource, verb, namespace = attributes
        for role in self.roles:
            if role["kind"] == "Role" and role["metadata"]["namespace"] != namespace:
                continue
            if _allowed(role["rules"], group, resource, verb):
                self.used.add((group, resource, verb))
                return True
        self.denied.add(attributes)
        return False


RBAC = Rbac()


class _AuthorizingApiServer(kube_emulator._ApiServer):
    async def _handle(self, request: kmock.Request) -> Any:
        call = Call(
            method=request.method.value.upper(),
            path=request.url.path,
            watch=request.params.get("watch") in {"true", "1"},
            agent=request.headers.get("User-Agent", ""),
        )
        # The test's own requests (urllib) act as a cluster admin.
        if not call.agent.startswith("Python-urllib") and not RBAC.authorize(call):
            return aiohttp.web.json_response(
                {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 403,
                 "reason": "Forbidden", "message": f"{call.method} {call.path} is forbidden"},
                status=403,
            )  # fmt: skip
        return await super()._handle(request)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)
_DISCOVERY = re.compile(r"/api(/v1)?|/apis(/[^/]+){0,2}|/version")
_VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def _authorization_attributes(call: Call) -> tuple[str, str, str, str | None] | None:
    """(apiGroup, resource[/subresource], verb, namespace), or None for discovery."""
    if _DISCOVERY.fullmatch(call.path):
        return None  # discovery: every authenticated user may
    match = _PATH.match(call.path)
    assert match, f"unexpected request path {call.path}"
    parts = match.groupdict()
    namespace = parts["namespace"]
    resource, name = parts["resource"], parts["name"]
    if parts["sub"]:
        resource = f"{resource}/{parts['sub']}"
    if call.method == "GET":
        verb = "watch" if call.watch else ("get" if name else "list")
    else:
        verb = _VERBS[call.method]
    return parts["group"] or "", resource, verb, namespace


def _allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for rule in rules
    )


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    monkeypatch.setattr(kube_emulator, "_ApiServer", _AuthorizingApiServer)
    with kube_emulator.emulator([NS, "elsewhere"]) as running:
        yield running


def _operator_container(charts: Charts, tmp_path: Path, values: dict[str, Any]) -> dict[str, Any]:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    docs = charts.template(
        "krakenfeed-operator", values_file, namespace=NS, release="kf", kube_version="1.32"
    )
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["rbac"] = [d for d in docs if d["kind"] in {"Role", "ClusterRole"}]
    return container


def _entrypoint() -> list[str]:
    dockerfile = (ROOT / "docker/operator.Dockerfile").read_text()
    (line,) = [x for x in dockerfile.splitlines() if x.startswith("ENTRYPOINT ")]
    command: list[str] = yaml.safe_load(line.removeprefix("ENTRYPOINT "))
    return [str(venv_tool(command[0])), *command[1:]]


def _play_controllers(kube: Emulator, feed: str) -> None:
    """Report every Deployment of the feed available and every KafkaTopic ready."""
    for path, kind in ((DEPLOYMENTS, "Deployment"), (TOPICS, "KafkaTopic")):
        for child in kube.items(path):
            if child["metadata"].get("labels", {}).get("krakenfeed.io/feed") != feed:
                continue
            if kind == "Deployment":
                replicas = child["spec"]["replicas"]
                status: dict[str, Any] = {"replicas": replicas, "availableReplicas": replicas}
            else:
                status = {"conditions": [{"type": "Ready", "status": "True"}]}
            kube.patch(f"{path}/{child['metadata']['name']}/status", {"status": status})


def _ready(kube: Emulator, feed: str) -> bool:
    conditions = ((kube.get(f"{FEEDS}/{feed}") or {}).get("status") or {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.mark.parametrize(
    ("watch", "kinds"),
    [([], ["ClusterRole", "Role"]), (["*"], ["ClusterRole"])],
    ids=["namespaced", "clusterwide"],
)
def test_the_operator_needs_exactly_the_rules_the_chart_grants(
    kube: Emulator, tmp_path: Path, watch: list[str], kinds: list[str]
) -> None:
    port = _free_port()
    container = _operator_container(
        Charts(tmp_path / "helm"), tmp_path, {"watchNamespaces": watch, "livenessPort": port}
    )
    roles: list[dict[str, Any]] = container["rbac"]
    assert sorted(role["kind"] for role in roles) == kinds
    RBAC.roles, RBAC.used, RBAC.denied = roles, set(), set()
    env = {item["name"]: item["value"] for item in container["env"]}
    environment = {**os.environ, **env, "KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig"))}
    environment["KRAKENFEED_RESYNC_INTERVAL_S"] = "0.5"  # restore drift quickly in this test
    log = (tmp_path / "operator.log").open("w")
    operator = subprocess.Popen(
        _entrypoint(), env=environment, stdout=log, stderr=subprocess.STDOUT
    )
    failure: AssertionError | None = None
    try:
        _live_through_a_feed(kube, port, container["livenessProbe"]["httpGet"]["path"])
    except AssertionError as exc:
        failure = exc
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(timeout=30)
        finally:
            operator.kill()
            log.close()
    operator_log = (tmp_path / "operator.log").read_text()
    assert failure is None, (
        f"{failure}\ndenied: {sorted(RBAC.denied, key=str)}\n{operator_log[-4000:]}"
    )
    assert RBAC.used, "the operator made no request"
    unexpected = {d for d in RBAC.denied if d[:3] not in TOLERATED_DENIALS}
    assert not unexpected, f"forbidden: {sorted(unexpected, key=str)}\n{operator_log[-3000:]}"
    granted = {
        (group, resource, verb)
        for role in roles
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted - RBAC.used == set(), f"granted, never used: {sorted(granted - RBAC.used)}"


def _live_through_a_feed(kube: Emulator, port: int, health_path: str) -> None:
    """A feed created, its children reported ready, one deleted, one edited by hand."""
    eventually(lambda: _get_ok(f"http://127.0.0.1:{port}{health_path}"), timeout=30)
    feed = f"feed-{uuid.uuid4().hex[:6]}"
    kube.create(
        FEEDS,
        {
            "apiVersion": "krakenfeed.io/v1alpha1",
            "kind": "KrakenFeed",
            "metadata": {"name": feed, "namespace": NS},
            "spec": {"sources": [{"api": "futures", "products": ["PF_XBTUSD"]}]},
        },
    )
    eventually(lambda: len(_children(kube, DEPLOYMENTS, feed)) >= 2, timeout=30)
    _play_controllers(kube, feed)
    eventually(lambda: _ready(kube, feed), timeout=30)
    ingest, *_ = sorted(d["metadata"]["name"] for d in _children(kube, DEPLOYMENTS, feed))
    kube.delete(f"{DEPLOYMENTS}/{ingest}")
    eventually(lambda: kube.get(f"{DEPLOYMENTS}/{ingest}") is not None, timeout=30)
    for collection, field_name in ((DEPLOYMENTS, "replicas"), (TOPICS, "partitions")):
        child = _children(kube, collection, feed)[0]
        path, wanted = f"{collection}/{child['metadata']['name']}", child["spec"][field_name]
        kube.patch(path, {"spec": {field_name: wanted + 7}})
        eventually(lambda: kube.get(path)["spec"][field_name] == wanted, timeout=30)  # noqa: B023
    config_map = _children(kube, CONFIG_MAPS, feed)[0]
    name, key = config_map["metadata"]["name"], next(iter(config_map["data"]))
    kube.patch(f"{CONFIG_MAPS}/{name}", {"data": {key: "edited by hand"}})
    eventually(
        lambda: kube.get(f"{CONFIG_MAPS}/{name}")["data"][key] == config_map["data"][key],
        timeout=30,
    )


def _get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _children(kube: Emulator, collection: str, feed: str) -> list[dict[str, Any]]:
    return [
        child
        for child in kube.items(collection)
        if child["metadata"].get("labels", {}).get("krakenfeed.io/feed") == feed
    ]
