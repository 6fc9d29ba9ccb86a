"""Build the KrakenFeed CustomResourceDefinition from the contracts' spec model.

Pure: ``build_crd()`` returns the manifest as data. ``python -m
krakenfeed_operator.crd`` prints it as YAML; the chart ships that output, and a
test asserts the two are equal.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec
import yaml

from krakenfeed.contracts import (
    CRD_GROUP,
    CRD_KIND,
    CRD_PLURAL,
    CRD_SHORT_NAMES,
    CRD_SINGULAR,
    CRD_VERSION,
    KrakenFeedSpec,
)

# JSON-schema keywords a Kubernetes structural schema accepts as they are.
_KEPT = {
    "type", "description", "properties", "required", "items", "enum", "pattern",
    "minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "format", "default",
}  # fmt: skip


def structural_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Convert msgspec's JSON schema into a Kubernetes structural OpenAPI v3 schema.

    Structural schemas allow no ``$ref``, need a ``type`` on every node and spell
    optional values as ``nullable`` rather than ``anyOf`` with ``null``.
    """
    definitions: dict[str, Any] = schema.get("$defs", {})

    def convert(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return convert({**definitions[node["$ref"].rsplit("/", 1)[-1]], **extra})
        if "anyOf" in node:
            branches = [branch for branch in node["anyOf"] if branch != {"type": "null"}]
            if len(branches) != 1:
                raise ValueError(f"cannot express a union in a structural schema: {node}")
            merged = {**branches[0], **{k: v for k, v in node.items() if k != "anyOf"}}
            converted = convert(merged)
            converted["nullable"] = True
            if converted.get("default", ...) is None:
                del converted["default"]
            return converted
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key not in _KEPT:
                continue
            if key == "properties":
                out[key] = {name: convert(child) for name, child in value.items()}
            elif key == "items":
                out[key] = convert(value)
            else:
                out[key] = value
        if "type" not in out and "enum" in out:
            out["type"] = "string" if all(isinstance(v, str) for v in out["enum"]) else "integer"
        return out

    return convert(schema)


def build_crd() -> dict[str, Any]:
    spec_schema = structural_schema(msgspec.json.schema(KrakenFeedSpec))
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{CRD_PLURAL}.{CRD_GROUP}"},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": CRD_KIND,
                "plural": CRD_PLURAL,
                "singular": CRD_SINGULAR,
                "shortNames": list(CRD_SHORT_NAMES),
            },
            "versions": [
                {
                    "name": CRD_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "spec": spec_schema,
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd() -> str:
    header = (
        "# Generated from krakenfeed.contracts.KrakenFeedSpec by\n"
        "# `python -m krakenfeed_operator.crd`; do not edit by hand.\n"
    )
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render_crd())
