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
from krakenfeed_operator.status import CONDITION_TYPES

# JSON-schema keywords a Kubernetes structural schema accepts as they are.
_KEPT = {
    "type", "description", "properties", "required", "items", "enum", "pattern",
    "minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "format", "default",
    "x-kubernetes-preserve-unknown-fields",
}  # fmt: skip


def structural_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Convert msgspec's JSON schema into a Kubernetes structural OpenAPI v3 schema.

    Structural schemas allow no ``$ref``, need a ``type`` on every node and spell
    optional values as ``nullable`` rather than ``anyOf`` with ``null``. An
    optional nested object defaults to ``{}``, so the API server fills in its
    own defaults (``spec.detector.replicas`` always exists for the scale
    subresource).
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
                required = set(node.get("required", ()))
                out[key] = {}
                for name, child in value.items():
                    converted = convert(child)
                    if (
                        name not in required
                        and converted.get("type") == "object"
                        and not converted.get("nullable")
                        and "default" not in converted
                    ):
                        converted["default"] = {}
                    out[key][name] = converted
            elif key == "items":
                out[key] = convert(value)
            else:
                out[key] = value
        if "type" not in out and "enum" in out:
            out["type"] = "string" if all(isinstance(v, str) for v in out["enum"]) else "integer"
        return out

    return convert(schema)


def _condition_schema() -> dict[str, Any]:
    def text(description: str) -> dict[str, Any]:
        return {"type": "string", "description": description}

    return {
        "type": "object",
        "description": "One observed aspect of the feed, in the Kubernetes condition shape",
        "required": ["type", "status"],
        "properties": {
            "type": {
                "type": "string",
                "enum": list(CONDITION_TYPES),
                "description": "Ready sums up IngestReady, DetectorReady and TopicsReady",
            },
            "status": {
                "type": "string",
                "enum": ["True", "False", "Unknown"],
                "description": "Whether the condition holds",
            },
            "reason": text("CamelCase cause of the current status"),
            "message": text("What was observed and what to do about it"),
            "lastTransitionTime": {
                "type": "string",
                "format": "date-time",
                "description": "When status last changed",
            },
            "observedGeneration": {
                "type": "integer",
                "description": "metadata.generation this condition was computed for",
            },
        },
    }


def _status_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "What the operator observed; written by the operator only",
        # kopf keeps its handler progress under status.kopf.
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "observedGeneration": {
                "type": "integer",
                "description": "metadata.generation of the spec last reconciled",
            },
            "conditions": {
                "type": "array",
                "description": "Ready, IngestReady, DetectorReady and TopicsReady",
                "items": _condition_schema(),
            },
            "source": {"type": "string", "description": "The Kraken APIs read, e.g. futures+spot"},
            "products": {"type": "string", "description": "The products read, comma-separated"},
            "detectorReplicas": {
                "type": "integer",
                "description": "Detector replicas observed (the scale subresource's status)",
            },
            "detectorSelector": {
                "type": "string",
                "description": "Label selector of the detector pods (for the scale subresource)",
            },
        },
    }


_READY = '.status.conditions[?(@.type=="Ready")]'
PRINTER_COLUMNS = [
    {"name": "Source", "type": "string", "jsonPath": ".status.source"},
    {"name": "Products", "type": "string", "jsonPath": ".status.products"},
    {"name": "Ready", "type": "string", "jsonPath": f"{_READY}.status"},
    {"name": "Reason", "type": "string", "jsonPath": f"{_READY}.reason"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


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
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.detector.replicas",
                            "statusReplicasPath": ".status.detectorReplicas",
                            "labelSelectorPath": ".status.detectorSelector",
                        },
                    },
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "A feed of Kraken market data: ingest workers, a detector,"
                                " their Kafka topics and their PostgreSQL tables"
                            ),
                            "required": ["spec"],
                            "properties": {
                                "spec": spec_schema,
                                "status": _status_schema(),
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
