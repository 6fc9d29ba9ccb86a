"""The Helm charts, checked offline: lint, render, validate, and what they grant.

- ``helm lint --strict`` and ``helm template`` of both charts under several values sets
  (helm 3.17 from a PyPI wheel, see ``tests/deploy_tools.py``).
- Core resources (Deployments, Services, RBAC, ...) validated by ``kubernetes-validate``
  against the Kubernetes 1.32 OpenAPI schemas, strictly (unknown fields fail).
- ``kubernetes-validate`` has no Strimzi or CloudNativePG schemas. Their resources are
  checked field by field against the documented APIs instead: Strimzi
  ``kafka.strimzi.io/v1beta2`` Kafka and KafkaNodePool (KRaft with node pools, as in
  Strimzi's kafka-single-node example) and CloudNativePG ``postgresql.cnpg.io/v1`` Cluster.
- KrakenFeeds (the chart's sample and every example) validated against the generated CRD.
- Pod security (restricted) and RBAC (exact verbs, no wildcards, no Secrets) asserted.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from krakenfeed.contracts import API_VERSION, CRD_KIND, DEFAULT_CLUSTER, OPERATOR_OPTIONS
from krakenfeed_operator.builders import CONTAINER_SECURITY, POD_SECURITY
from tests.deploy_tools import Charts, venv_tool

ROOT = Path(__file__).parents[1]
CHARTS = ROOT / "charts"
OPERATOR = "krakenfeed-operator"
STACK = "krakenfeed-stack"
CRD_FILE = CHARTS / OPERATOR / "crds" / "krakenfeeds.krakenfeed.io.yaml"
KUBERNETES = "1.32"
NAMESPACE = "feeds"
RELEASE = "kf"
PROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

OPERATOR_VALUES: dict[str, dict[str, Any]] = {
    "default": {},
    "two-namespaces": {"watchNamespaces": ["team-a", "team-b"]},
    "clusterwide": {"watchNamespaces": ["*"], "logLevel": "DEBUG"},
    "own-account": {
        "serviceAccount": {"create": False, "name": "ops"},
        "image": {"repository": "registry.local/op", "tag": "dev", "pullPolicy": "Never"},
        "workerImage": {"repository": "registry.local/workers", "tag": "dev"},
        "livenessPort": 9090,
    },
    "monitoring": {
        "monitoring": {"podMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "metricsPort": 9100,
    },
    "traced": {"telemetry": {"otlpEndpoint": "http://jaeger:4317", "samplingRatio": 0.25}},
}
STACK_VALUES: dict[str, dict[str, Any]] = {
    "default": {},
    "replay-sample": {"replay": {"enabled": True}, "sample": {"enabled": True}},
    "three-brokers": {
        "kafka": {"replicas": 3, "storage": {"type": "persistent-claim", "size": "20Gi"}},
        "postgres": {"instances": 2},
        "jaeger": {"enabled": False},
        "sample": {"enabled": True, "spotProducts": []},
        "krakenfeed-operator": {"watchNamespaces": ["*"]},
    },
    "monitoring": {
        "grafanaDashboard": {"enabled": True},
        "krakenfeed-operator": {
            "monitoring": {"podMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
        },
    },
}

Render = Callable[[str, dict[str, Any]], list[dict[str, Any]]]


@pytest.fixture(scope="module")
def charts(tmp_path_factory: pytest.TempPathFactory) -> Charts:
    return Charts(tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="module")
def helm(charts: Charts) -> Callable[..., str]:
    return charts.helm


def _values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / f"values-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.fixture
def render(charts: Charts, tmp_path: Path) -> Render:
    def run(chart: str, values: dict[str, Any]) -> list[dict[str, Any]]:
        values_file = Path(_values_file(tmp_path, values))
        return charts.template(
            chart, values_file, namespace=NAMESPACE, release=RELEASE, kube_version=KUBERNETES
        )

    return run


def _cases() -> list[tuple[str, str, dict[str, Any]]]:
    return [(OPERATOR, name, values) for name, values in OPERATOR_VALUES.items()] + [
        (STACK, name, values) for name, values in STACK_VALUES.items()
    ]


CASES = pytest.mark.parametrize(
    ("chart", "case", "values"), _cases(), ids=[f"{c}:{n}" for c, n, _ in _cases()]
)


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = _by_kind(docs, kind)
    return found


# --- lint, render, schemas ----------------------------------------------------------------


@CASES
def test_helm_lint_passes_strictly(
    helm: Callable[..., str], tmp_path: Path, chart: str, case: str, values: dict[str, Any]
) -> None:
    out = helm("lint", "--strict", chart, "--values", _values_file(tmp_path, values))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@CASES
def test_rendered_core_resources_are_valid_kubernetes(
    render: Render, chart: str, case: str, values: dict[str, Any]
) -> None:
    docs = render(chart, values)
    # No schemas offline for Strimzi, CloudNativePG or the Prometheus Operator's kinds.
    others = (".strimzi.io/v1beta2", "cnpg.io/v1", "monitoring.coreos.com/v1")
    core = [d for d in docs if not d["apiVersion"].endswith(others)]
    core = [d for d in core if d["kind"] != CRD_KIND]
    assert {"Deployment", "CustomResourceDefinition"} <= {d["kind"] for d in core}
    for doc in core:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


@pytest.mark.parametrize(
    ("chart", "values", "complaint"),
    [
        (OPERATOR, {"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
        (OPERATOR, {"logLevel": "TRACE"}, "logLevel"),
        (OPERATOR, {"replicas": 2}, "replicas"),
        (STACK, {"kafka": {"storage": {"type": "nfs"}}}, "kafka.storage.type"),
        (STACK, {"replay": {"pace": "fast"}}, "replay.pace"),
        (STACK, {"krakenfeed-operator": {"livenessPort": 80}}, "livenessPort"),
        (OPERATOR, {"telemetry": {"otlpEndpoint": "jaeger:4317"}}, "otlpEndpoint"),
    ],
)
def test_values_schema_rejects_bad_values_by_name(
    helm: Callable[..., str], tmp_path: Path, chart: str, values: dict[str, Any], complaint: str
) -> None:
    out = helm("template", "x", chart, "--values", _values_file(tmp_path, values), check=False)
    assert "values don't meet the specifications of the schema" in out, out
    assert complaint.rsplit(".", maxsplit=1)[-1] in out, out


def test_chart_versions_follow_the_project() -> None:
    for chart in (OPERATOR, STACK):
        meta = yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())
        assert meta["appVersion"] == PROJECT_VERSION
        assert meta["version"] == PROJECT_VERSION
    stack = yaml.safe_load((CHARTS / STACK / "Chart.yaml").read_text())
    assert stack["dependencies"] == [
        {"name": OPERATOR, "version": PROJECT_VERSION, "repository": f"file://../{OPERATOR}"}
    ]


@CASES
def test_every_resource_carries_the_recommended_labels(
    render: Render, chart: str, case: str, values: dict[str, Any]
) -> None:
    wanted = {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
        "app.kubernetes.io/part-of",
        "app.kubernetes.io/managed-by",
    }
    for doc in render(chart, values):
        if doc["kind"] == "CustomResourceDefinition":
            continue  # generated from the spec model, installed by helm from crds/
        labels = doc["metadata"].get("labels", {})
        assert wanted <= labels.keys(), f"{doc['kind']}/{doc['metadata']['name']}: {labels}"
        assert labels["app.kubernetes.io/instance"] == RELEASE


# --- the operator Deployment ---------------------------------------------------------------


def _operator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [d for d in _by_kind(docs, "Deployment") if "operator" in d["metadata"]["name"]]
    return deployment


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


@pytest.mark.parametrize(
    ("case", "watched"),
    [
        ("default", NAMESPACE),
        ("two-namespaces", "team-a,team-b"),
        ("clusterwide", "*"),
        ("own-account", NAMESPACE),
    ],
)
def test_the_operator_is_configured_through_its_contract_variables(
    render: Render, case: str, watched: str
) -> None:
    (container,) = _operator(render(OPERATOR, OPERATOR_VALUES[case]))["spec"]["template"]["spec"][
        "containers"
    ]
    env = _env(container)
    contract = {option.env: option for option in OPERATOR_OPTIONS}
    otel = {name for name in env if name.startswith("OTEL_")}
    assert set(env) - otel - {"KRAKENFEED_LOG_LEVEL"} <= contract.keys(), "unknown variable"
    assert not otel, "no endpoint, no OpenTelemetry variables"
    assert env["KRAKENFEED_WATCH_NAMESPACES"] == watched
    port = int(env["KRAKENFEED_LIVENESS_PORT"])
    metrics = int(env["KRAKENFEED_METRICS_PORT"])
    assert container["ports"] == [
        {"name": "health", "containerPort": port, "protocol": "TCP"},
        {"name": "metrics", "containerPort": metrics, "protocol": "TCP"},
    ]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    if case == "own-account":
        assert container["image"] == "registry.local/op:dev"
        assert env["KRAKENFEED_WORKER_IMAGE"] == "registry.local/workers:dev"
        assert port == 9090
    else:
        assert container["image"] == f"ghcr.io/krakenfeed/krakenfeed-operator:{PROJECT_VERSION}"
        assert env["KRAKENFEED_WORKER_IMAGE"] == f"ghcr.io/krakenfeed/krakenfeed:{PROJECT_VERSION}"
        assert port == int(contract["KRAKENFEED_LIVENESS_PORT"].default or 0)


def test_the_operator_exports_its_spans_only_where_the_values_point(render: Render) -> None:
    (container,) = _operator(render(OPERATOR, OPERATOR_VALUES["traced"]))["spec"]["template"][
        "spec"
    ]["containers"]
    otel = {name: value for name, value in _env(container).items() if name.startswith("OTEL_")}
    assert otel == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317",
        "OTEL_SERVICE_NAME": "krakenfeed-operator",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }


def test_one_operator_runs_at_a_time(render: Render) -> None:
    spec = _operator(render(OPERATOR, {}))["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


# --- pod security ----------------------------------------------------------------------------


@CASES
def test_every_pod_runs_restricted(
    render: Render, chart: str, case: str, values: dict[str, Any]
) -> None:
    deployments = _by_kind(render(chart, values), "Deployment")
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert pod["securityContext"] == POD_SECURITY, name
        assert not {"hostNetwork", "hostPID", "hostIPC"} & pod.keys(), name
        assert all("hostPath" not in volume for volume in pod.get("volumes", [])), name
        for container in pod["containers"] + pod.get("initContainers", []):
            # The operator's builders give the worker pods exactly these.
            assert container["securityContext"] == CONTAINER_SECURITY, name
            assert container["resources"]["limits"]["memory"], name


# --- RBAC ------------------------------------------------------------------------------------

NAMESPACED_RULES = [
    {"apiGroups": ["krakenfeed.io"], "resources": ["krakenfeeds"],
     "verbs": ["list", "watch", "patch"]},
    {"apiGroups": ["krakenfeed.io"], "resources": ["krakenfeeds/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["configmaps"],
     "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"],
     "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": ["kafka.strimzi.io"], "resources": ["kafkatopics"],
     "verbs": ["get", "list", "watch", "create", "patch"]},
]  # fmt: skip
NAMESPACE_OBSERVATION = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}
]
"""kopf lists and watches namespaces when it serves chosen ones (tests/test_deploy_rbac.py)."""


def _rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for doc in docs if doc["kind"] in {"Role", "ClusterRole"} for rule in doc["rules"]]


@CASES
def test_rbac_grants_no_wildcard_and_no_secret(
    render: Render, chart: str, case: str, values: dict[str, Any]
) -> None:
    rules = _rules(render(chart, values))
    assert rules
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert not {"secrets", "secrets/*"} & set(rule["resources"]), rule
        assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(
            rule["verbs"]
        ), rule
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule


@pytest.mark.parametrize(
    ("case", "namespaces"),
    [("default", [NAMESPACE]), ("two-namespaces", ["team-a", "team-b"])],
)
def test_watching_named_namespaces_grants_a_role_in_each_and_only_namespace_reads_beyond(
    render: Render, case: str, namespaces: list[str]
) -> None:
    docs = render(OPERATOR, OPERATOR_VALUES[case])
    roles = _by_kind(docs, "Role")
    bindings = _by_kind(docs, "RoleBinding")
    assert [r["metadata"]["namespace"] for r in roles] == namespaces
    assert [b["metadata"]["namespace"] for b in bindings] == namespaces
    account = _one(docs, "ServiceAccount")["metadata"]
    subject = {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
    for role, binding in zip(roles, bindings, strict=True):
        assert role["rules"] == NAMESPACED_RULES
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [subject]
    cluster_role = _one(docs, "ClusterRole")
    assert cluster_role["rules"] == NAMESPACE_OBSERVATION
    cluster_binding = _one(docs, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert cluster_binding["subjects"] == [subject]


def test_watching_every_namespace_grants_one_cluster_role(render: Render) -> None:
    docs = render(OPERATOR, OPERATOR_VALUES["clusterwide"])
    assert not _by_kind(docs, "Role") and not _by_kind(docs, "RoleBinding")
    role = _one(docs, "ClusterRole")
    assert role["rules"] == NAMESPACED_RULES
    binding = _one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["namespace"] == NAMESPACE


def test_an_existing_service_account_is_bound_and_none_is_created(render: Render) -> None:
    docs = render(OPERATOR, OPERATOR_VALUES["own-account"])
    assert not _by_kind(docs, "ServiceAccount")
    assert _one(docs, "RoleBinding")["subjects"][0]["name"] == "ops"
    assert _operator(docs)["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


def test_the_rules_cover_what_the_operator_watches() -> None:
    """Every resource the kopf handlers subscribe to can be listed and watched."""
    handlers = (ROOT / "operator" / "krakenfeed_operator" / "handlers.py").read_text()
    watched = set(re.findall(r'kopf\.on\.event\(\s*"([^"]*)",\s*"[^"]+",\s*"([^"]+)"', handlers))
    assert watched, "no kopf.on.event handler found"
    granted = {
        (group, resource)
        for rule in NAMESPACED_RULES
        if {"list", "watch"} <= set(rule["verbs"])
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert watched <= granted, watched - granted


def test_every_kind_the_reconciler_reads_or_writes_is_granted() -> None:
    from krakenfeed_operator.kube import _PLURALS

    granted = {resource for rule in NAMESPACED_RULES for resource in rule["resources"]}
    assert set(_PLURALS.values()) <= granted, set(_PLURALS.values()) - granted


# --- the stack: Strimzi, CloudNativePG, Jaeger, the sample feed ---------------------------------

LISTENER_TYPES = {"internal", "route", "loadbalancer", "nodeport", "ingress", "cluster-ip"}
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


@pytest.mark.parametrize("case", list(STACK_VALUES))
def test_strimzi_kafka_runs_kraft_with_a_node_pool(render: Render, case: str) -> None:
    """Checked against Strimzi's documented v1beta2 API (no schema is available offline)."""
    docs = render(STACK, STACK_VALUES[case])
    kafka = _one(docs, "Kafka")
    pool = _one(docs, "KafkaNodePool")
    for doc in (kafka, pool):
        assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert doc["metadata"]["namespace"] == NAMESPACE
    # The operator's KrakenFeed default: <cluster>-kafka-bootstrap:9092 of this cluster.
    assert kafka["metadata"]["name"] == DEFAULT_CLUSTER
    assert kafka["metadata"]["annotations"] == {
        "strimzi.io/node-pools": "enabled",
        "strimzi.io/kraft": "enabled",
    }
    spec = kafka["spec"]
    assert "zookeeper" not in spec
    listeners = spec["kafka"]["listeners"]
    assert {"name": "plain", "port": 9092, "type": "internal", "tls": False} in listeners
    for listener in listeners:
        assert re.fullmatch(r"[a-z0-9]{1,11}", listener["name"])
        assert listener["port"] >= 9092 and listener["port"] not in {9404, 9999}
        assert listener["type"] in LISTENER_TYPES
        assert isinstance(listener["tls"], bool)
    replicas = pool["spec"]["replicas"]
    config = spec["kafka"]["config"]
    assert config["offsets.topic.replication.factor"] == min(3, replicas)
    assert 1 <= config["min.insync.replicas"] <= config["default.replication.factor"] <= replicas
    assert "topicOperator" in spec["entityOperator"], "feeds' KafkaTopics need the topic operator"
    # KafkaNodePool: bound to the Kafka by label; roles, replicas and storage are required.
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    assert sorted(pool["spec"]["roles"]) == ["broker", "controller"]
    assert isinstance(replicas, int) and replicas >= 1
    storage = pool["spec"]["storage"]
    assert storage["type"] == "jbod"
    (volume,) = storage["volumes"]
    assert volume["id"] == 0 and volume["kraftMetadata"] == "shared"
    assert volume["type"] in {"ephemeral", "persistent-claim"}
    size = volume["size"] if volume["type"] == "persistent-claim" else volume["sizeLimit"]
    assert QUANTITY.match(size)
    assert pool["spec"]["resources"]["limits"]["memory"]


@pytest.mark.parametrize("case", list(STACK_VALUES))
def test_cloudnative_pg_cluster_is_what_feeds_expect(render: Render, case: str) -> None:
    """Checked against CloudNativePG's documented postgresql.cnpg.io/v1 Cluster API."""
    cluster = _one(render(STACK, STACK_VALUES[case]), "Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    # The detector's default: the <cluster>-rw service and the <cluster>-app secret.
    assert cluster["metadata"]["name"] == DEFAULT_CLUSTER
    spec = cluster["spec"]
    assert isinstance(spec["instances"], int) and spec["instances"] >= 1
    assert QUANTITY.match(spec["storage"]["size"])
    assert spec["bootstrap"] == {"initdb": {"database": "app", "owner": "app"}}
    assert set(spec) <= {"instances", "storage", "bootstrap", "resources", "imageName"}


def test_jaeger_receives_otlp_and_serves_the_query_api(render: Render) -> None:
    docs = render(STACK, {})
    config_map = next(d for d in _by_kind(docs, "ConfigMap") if "jaeger" in d["metadata"]["name"])
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["service"]["pipelines"]["traces"] == {
        "receivers": ["otlp"],
        "processors": ["batch"],
        "exporters": ["jaeger_storage_exporter"],
    }
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    assert config["extensions"]["jaeger_query"]["http"]["endpoint"] == "0.0.0.0:16686"
    storage = config["extensions"]["jaeger_query"]["storage"]["traces"]
    assert storage in config["extensions"]["jaeger_storage"]["backends"]
    assert config["exporters"]["jaeger_storage_exporter"]["trace_storage"] == storage
    service = next(d for d in _by_kind(docs, "Service") if "jaeger" in d["metadata"]["name"])
    assert {p["port"] for p in service["spec"]["ports"]} == {4317, 4318, 16686}
    deployment = next(d for d in _by_kind(docs, "Deployment") if "jaeger" in d["metadata"]["name"])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", container["image"])


def _crd_schema() -> dict[str, Any]:
    """The CRD's openAPIV3Schema as JSON schema: ``nullable`` becomes a ``null`` type."""

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: convert(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
            if out.pop("nullable", False):
                out["type"] = [out["type"], "null"]
            if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
                out.pop("type", None)
            elif out.get("type") == "object" and "properties" in out:
                out.setdefault("additionalProperties", False)
            return out
        if isinstance(node, list):
            return [convert(item) for item in node]
        return node

    crd = yaml.safe_load(CRD_FILE.read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = convert(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"]["apiVersion"] = {"const": API_VERSION}
    schema["properties"]["kind"] = {"const": CRD_KIND}
    return schema


def _assert_valid_feed(feed: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(_crd_schema()).validate(feed)


def test_the_crd_schema_check_rejects_what_the_api_server_would() -> None:
    with pytest.raises(jsonschema.ValidationError, match="sources"):
        _assert_valid_feed({"apiVersion": API_VERSION, "kind": CRD_KIND, "spec": {}})
    with pytest.raises(jsonschema.ValidationError, match="color"):
        _assert_valid_feed(
            {"apiVersion": API_VERSION, "kind": CRD_KIND,
             "spec": {"sources": [{"api": "futures", "products": ["PF_XBTUSD"]}], "color": "red"}}
        )  # fmt: skip


EXAMPLES = sorted((ROOT / "examples").glob("*/*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_every_example_is_valid_against_the_crd_and_kubernetes(path: Path) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    feeds = [doc for doc in docs if doc["kind"] == CRD_KIND]
    assert feeds, f"{path} holds no {CRD_KIND}"
    for doc in docs:
        if doc["kind"] == CRD_KIND:
            _assert_valid_feed(doc)
        else:  # e.g. the replay server beside a feed
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)


@pytest.mark.parametrize("case", ["replay-sample", "three-brokers"])
def test_the_sample_feed_is_valid_and_uses_the_release(render: Render, case: str) -> None:
    docs = render(STACK, STACK_VALUES[case])
    (feed,) = [d for d in docs if d["kind"] == CRD_KIND]
    _assert_valid_feed(feed)
    spec = feed["spec"]
    assert spec["kafka"] == {"strimziCluster": _one(docs, "Kafka")["metadata"]["name"]}
    assert spec["postgres"] == {"cnpgCluster": _one(docs, "Cluster")["metadata"]["name"]}
    if case == "replay-sample":
        replay = next(d for d in _by_kind(docs, "Service") if "replay" in d["metadata"]["name"])
        base = f"ws://{replay['metadata']['name']}:{replay['spec']['ports'][0]['port']}"
        assert [s["url"] for s in spec["sources"]] == [f"{base}/ws/v1", f"{base}/v2"]
        jaeger = next(d for d in _by_kind(docs, "Service") if "jaeger" in d["metadata"]["name"])
        assert spec["telemetry"]["otlpEndpoint"] == f"http://{jaeger['metadata']['name']}:4317"
    else:
        assert [s["api"] for s in spec["sources"]] == ["futures"]
        assert "url" not in spec["sources"][0], "without the replay server, the exchange"
        assert "telemetry" not in spec


def test_the_replay_server_speaks_the_worker_cli(render: Render) -> None:
    docs = render(STACK, STACK_VALUES["replay-sample"])
    deployment = next(d for d in _by_kind(docs, "Deployment") if "replay" in d["metadata"]["name"])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["krakenfeed", "replay-server"]
    from krakenfeed.replay.command import REPLAY_OPTIONS

    flags = {option.flag for option in REPLAY_OPTIONS}
    assert {arg.split("=")[0] for arg in container["args"]} <= flags
    assert "--host=0.0.0.0" in container["args"]


def test_the_stack_installs_the_crd_from_the_operator_chart(render: Render) -> None:
    crds = _by_kind(render(STACK, {}), "CustomResourceDefinition")
    assert crds == [yaml.safe_load(CRD_FILE.read_text())]


def test_notes_and_readme_document_the_crd_upgrade() -> None:
    command = "kubectl apply --server-side -f charts/krakenfeed-operator/crds/"
    for chart in (OPERATOR, STACK):
        assert command in (CHARTS / chart / "templates/NOTES.txt").read_text(), chart
    assert command in (ROOT / "README.md").read_text()


@CASES
def test_notes_render_with_the_next_commands(
    charts: Charts, tmp_path: Path, chart: str, case: str, values: dict[str, Any]
) -> None:
    values_file = Path(_values_file(tmp_path, values))
    notes = charts.notes(chart, values_file, namespace=NAMESPACE, release=RELEASE)
    assert "kubectl apply --server-side -f charts/krakenfeed-operator/crds/" in notes
    assert f"kubectl -n {NAMESPACE} delete kf --all), then helm uninstall" in notes
    assert f"kubectl -n {NAMESPACE} get kf" in notes or "kubectl get kf" in notes
    if chart == STACK:
        assert f"port-forward svc/{DEFAULT_CLUSTER}-rw 5432:5432" in notes
        assert ("port-forward svc/kf-jaeger 16686:16686" in notes) == (case != "three-brokers")
        assert ("wait kf/btc-sample" in notes) == ("sample" in values)
    else:
        watched = "every namespace" if case == "clusterwide" else "a Role in each"
        assert watched in notes


def test_values_schemas_are_json_schema() -> None:
    for chart in (OPERATOR, STACK):
        schema = json.loads((CHARTS / chart / "values.schema.json").read_text())
        jsonschema.Draft7Validator.check_schema(schema)
        values = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
        jsonschema.Draft7Validator(schema).validate(values)


def test_rendered_manifests_pass_yamllint(render: Render, tmp_path: Path) -> None:
    for chart, _, values in _cases():
        docs = render(chart, values)
        (tmp_path / f"{chart}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    result = subprocess.run(
        [str(venv_tool("yamllint")), "--strict", "-c", str(ROOT / ".yamllint.yaml"), str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
