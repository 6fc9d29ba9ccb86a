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
