"""The charts' monitoring: PodMonitors, the PrometheusRule and the Grafana dashboard
render only when asked, scrape the ports and paths the code serves, and query only
metrics and labels the contracts' catalogue names."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from krakenfeed.contracts import OPERATOR_OPTIONS, parse_spec
from krakenfeed.contracts import monitoring as m
from krakenfeed_operator.builders import Owner, build_detector, build_ingest
from tests.test_charts import (
    CHARTS,
    NAMESPACE,
    OPERATOR,
    STACK,
    STACK_VALUES,
    Render,
    _by_kind,
    _one,
    _operator,
    charts,
    helm,
    render,
)

__all__ = ["charts", "helm", "render"]  # the fixtures these tests share with test_charts

ALL_ON = {"podMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
DASHBOARD = CHARTS / STACK / "dashboards" / "krakenfeed.json"
METRIC = re.compile(r"\bkrakenfeed_[a-z0-9_]+")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
TARGET_LABELS = {"namespace", "pod", "le"}
"""Labels Prometheus adds to a scraped pod's series, and a histogram bucket's bound."""
SERIES = {series for metric in m.METRICS for series in metric.series}
LABELS = {label for metric in m.METRICS for label in metric.labels} | TARGET_LABELS
MONITORING_KINDS = {"PodMonitor", "PrometheusRule"}


def _dashboard_queries() -> Iterator[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["definition"]


def _rule_queries(render: Render) -> list[str]:
    rule = _one(render(OPERATOR, {"monitoring": ALL_ON}), "PrometheusRule")
    return [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]


def _assert_catalogued(queries: list[str]) -> None:
    assert queries
    for query in queries:
        names = set(METRIC.findall(query))
        assert names, f"no krakenfeed metric in {query!r}"
        assert names <= SERIES, f"{query!r}: {names - SERIES} not in contracts.monitoring"
        for grouping in GROUPING.findall(query):
            used = {label.strip() for label in grouping.split(",") if label.strip()}
            assert used <= LABELS, f"{query!r}: labels {used - LABELS} are no metric's"


def test_every_metric_the_alerts_query_is_in_the_catalogue(render: Render) -> None:
    _assert_catalogued(_rule_queries(render))


def test_every_metric_the_dashboard_queries_is_in_the_catalogue() -> None:
    _assert_catalogued(list(_dashboard_queries()))


def test_the_catalogue_follows_prometheus_naming() -> None:
    assert len({metric.name for metric in m.METRICS}) == len(m.METRICS)
    for metric in m.METRICS:
        assert re.fullmatch(r"krakenfeed_[a-z0-9_]+", metric.name), metric.name
        assert metric.name.endswith("_total") == (metric.type == "counter"), metric.name
        assert not re.search(r"_(ms|milliseconds|minutes|bytes_total)$", metric.name)
        assert len(set(metric.labels)) == len(metric.labels), metric.name


@pytest.mark.parametrize(("chart", "values"), [(OPERATOR, {}), (STACK, {})])
def test_monitoring_is_off_by_default(render: Render, chart: str, values: dict[str, Any]) -> None:
    docs = render(chart, values)
    assert not MONITORING_KINDS & {doc["kind"] for doc in docs}
    assert not [d for d in _by_kind(docs, "ConfigMap") if "grafana_dashboard" in _labels(d)]


def _labels(doc: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = doc["metadata"].get("labels", {})
    return labels


def test_the_operator_serves_metrics_on_the_contract_port(render: Render) -> None:
    (container,) = _operator(render(OPERATOR, {}))["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    (metrics_port,) = [o for o in OPERATOR_OPTIONS if o.flag == "--metrics-port"]
    assert int(env[metrics_port.env]) == m.OPERATOR_METRICS_PORT
    assert {"name": m.OPERATOR_METRICS_PORT_NAME, "containerPort": m.OPERATOR_METRICS_PORT,
            "protocol": "TCP"} in container["ports"]  # fmt: skip


@pytest.mark.parametrize(
    ("watch", "selector"),
    [
        ([], {"matchNames": [NAMESPACE]}),
        (["team-a", "team-b"], {"matchNames": ["team-a", "team-b"]}),
        (["*"], {"any": True}),
    ],
)
def test_pod_monitors_scrape_the_operator_and_every_worker_where_feeds_run(
    render: Render, watch: list[str], selector: dict[str, Any]
) -> None:
    docs = render(OPERATOR, {"watchNamespaces": watch, "monitoring": ALL_ON})
    monitors = {doc["metadata"]["name"]: doc["spec"] for doc in _by_kind(docs, "PodMonitor")}
    operator = monitors.pop("kf-krakenfeed-operator")
    pod_labels = _operator(docs)["spec"]["template"]["metadata"]["labels"]
    assert operator["selector"]["matchLabels"].items() <= pod_labels.items()
    assert operator["podMetricsEndpoints"] == [
        {"port": m.OPERATOR_METRICS_PORT_NAME, "path": m.METRICS_PATH, "interval": "30s"}
    ]
    (workers,) = monitors.values()
    assert workers["namespaceSelector"] == selector
    assert workers["podMetricsEndpoints"] == [
        {"port": m.WORKER_HTTP_PORT_NAME, "path": m.METRICS_PATH, "interval": "30s"}
    ]
    # It selects exactly the pods the operator builds, on the port they serve.
    spec = parse_spec({"sources": [{"api": "futures", "products": ["PF_XBTUSD"]}]})
    owner = Owner("team-a", "btc", "uid")
    workloads = [build_ingest(owner, spec, spec.sources[0], "i"), build_detector(owner, spec, "i")]
    for deployment in workloads:
        template = deployment["spec"]["template"]
        assert workers["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        for expression in workers["selector"]["matchExpressions"]:
            assert expression["key"] in template["metadata"]["labels"]
        ports = {p["name"] for c in template["spec"]["containers"] for p in c["ports"]}
        assert m.WORKER_HTTP_PORT_NAME in ports


def test_alerts_cover_the_issue_and_take_their_thresholds_from_values(render: Render) -> None:
    values = {
        "monitoring": {
            "podMonitor": {"enabled": False},
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "prom"},
                "staleFeedSeconds": 42,
                "lagRecords": 777,
                "deadLetterRatePerSecond": 0.5,
                "reconnectsPer10m": 9,
                "notReadyFor": "3m",
            },
        }
    }
    docs = render(OPERATOR, values)
    assert not _by_kind(docs, "PodMonitor")
    rule = _one(docs, "PrometheusRule")
    assert _labels(rule)["release"] == "prom"
    rules = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(rules) == {
        "KrakenfeedFeedStale", "KrakenfeedConsumerLagGrowing", "KrakenfeedDeadLettersRising",
        "KrakenfeedReconnectStorm", "KrakenfeedDisconnected", "KrakenfeedFeedNotReady",
    }  # fmt: skip
    assert "> 42" in rules["KrakenfeedFeedStale"]["expr"]
    assert "> 777" in rules["KrakenfeedConsumerLagGrowing"]["expr"]
    assert "> 0.5" in rules["KrakenfeedDeadLettersRising"]["expr"]
    assert "> 9" in rules["KrakenfeedReconnectStorm"]["expr"]
    assert rules["KrakenfeedFeedNotReady"]["for"] == "3m"
    for alert in rules.values():
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert alert["expr"].count("(") == alert["expr"].count(")")


def test_the_stack_ships_the_dashboard_for_grafanas_sidecar(render: Render) -> None:
    docs = render(STACK, STACK_VALUES["monitoring"])
    (config_map,) = [d for d in _by_kind(docs, "ConfigMap") if "grafana_dashboard" in _labels(d)]
    assert _labels(config_map)["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["krakenfeed.json"])
    assert dashboard == json.loads(DASHBOARD.read_text())
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("records produced", "consumed", "lag", "anomalies", "connected", "reconnects"):
        assert topic in titles
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # The stack passes monitoring values through to the operator subchart.
    assert {"PodMonitor", "PrometheusRule"} <= {doc["kind"] for doc in docs}
