"""The CRD in the chart is exactly what the contracts' spec model generates."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from krakenfeed.contracts import API_VERSION, CRD_KIND
from krakenfeed_operator.crd import build_crd, render_crd

CHART_CRD = (
    Path(__file__).parents[1] / "charts/krakenfeed-operator/crds/krakenfeeds.krakenfeed.io.yaml"
)


def test_the_chart_crd_equals_the_generated_one() -> None:
    assert CHART_CRD.read_text() == render_crd(), (
        "charts CRD is stale: run `python -m krakenfeed_operator.crd > " + str(CHART_CRD) + "`"
    )
    assert yaml.safe_load(CHART_CRD.read_text()) == build_crd()


def test_the_crd_serves_the_contract_kind_and_version() -> None:
    crd = build_crd()
    group, version = API_VERSION.split("/")
    assert crd["spec"]["group"] == group
    assert crd["spec"]["names"]["kind"] == CRD_KIND
    assert [v["name"] for v in crd["spec"]["versions"]] == [version]


def _walk(node: object, path: str = "") -> list[tuple[str, dict[str, object]]]:
    found: list[tuple[str, dict[str, object]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, child in node.items():
            if key != "default":  # a value, not a schema
                found.extend(_walk(child, f"{path}.{key}"))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found.extend(_walk(child, f"{path}[{index}]"))
    return found


def test_the_spec_schema_is_structural() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    forbidden = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "additionalProperties"}
    for path, node in _walk(schema):
        assert not forbidden & node.keys(), f"{path} uses {forbidden & node.keys()}"
        if path.endswith(".properties"):
            continue
        assert "type" in node, f"{path} has no type: {json.dumps(node)[:120]}"
    sources = schema["properties"]["sources"]
    assert sources["minItems"] == 1
    url = sources["items"]["properties"]["url"]
    assert url == {
        "description": "WebSocket URL; defaults to Kraken's public endpoint for the api",
        "type": "string",
        "pattern": "^wss?://",
        "nullable": True,
    }


def _spec_schema() -> dict[str, object]:
    crd = build_crd()
    schema: dict[str, object] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_every_field_has_a_description_for_kubectl_explain() -> None:
    for path, node in _walk(_spec_schema()):
        if path.endswith(".properties"):
            for name, field in node.items():
                assert isinstance(field, dict)
                assert field.get("description"), f"{path}.{name} has no description"


def test_the_schema_carries_enums_patterns_bounds_and_defaults() -> None:
    spec = _spec_schema()["properties"]["spec"]["properties"]  # type: ignore[index]
    source = spec["sources"]["items"]["properties"]
    assert source["api"]["enum"] == ["futures", "spot"]
    assert source["channels"]["items"]["enum"] == ["ticker", "trade"]
    assert source["products"]["items"]["pattern"] == "^[A-Z0-9]+([_/][A-Z0-9]+)+$"
    detector = spec["detector"]
    assert detector["default"] == {}, "so the API server fills in detector.replicas"
    assert detector["properties"]["replicas"] == {
        "description": "Detector replicas; they share the feed's partitions as one consumer group",
        "type": "integer",
        "minimum": 0,
        "maximum": 64,
        "default": 1,
    }
    assert detector["properties"]["settings"]["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["kafka"]["properties"]["partitions"]["minimum"] == 1
    assert spec["telemetry"]["properties"]["samplingRatio"]["maximum"] == 1
    assert spec["suspend"]["default"] is False


def test_printer_columns_and_subresources() -> None:
    version = build_crd()["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Source", "Products", "Ready", "Reason", "Age",
    ]  # fmt: skip
    assert version["additionalPrinterColumns"][2]["jsonPath"] == (
        '.status.conditions[?(@.type=="Ready")].status'
    )
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.detector.replicas",
            "statusReplicasPath": ".status.detectorReplicas",
            "labelSelectorPath": ".status.detectorSelector",
        },
    }
    assert build_crd()["spec"]["names"]["shortNames"] == ["kf"]
