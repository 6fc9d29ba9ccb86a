"""Reading a ``KrakenFeed`` manifest the way the CRD would take it.

The spec is checked by the contracts' spec model, the same rules the CRD is
generated from. Its errors name a path; this module adds the value found there
and what the schema allows, so that one line tells the user what to change.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from krakenfeed.contracts import (
    API_VERSION,
    CRD_KIND,
    LOCAL_NAMESPACE,
    FeedId,
    KrakenFeedSpec,
    SpecError,
    parse_spec,
)

_PATH = re.compile(r" - at `(spec[^`]*)`$")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


class ManifestError(ValueError):
    """The manifest cannot run; the message names the file, the field and the fix."""


def load_manifest(path: Path) -> tuple[FeedId, KrakenFeedSpec]:
    """The feed (in the local namespace) and the validated spec of a manifest file."""
    try:
        manifest = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: expected a KrakenFeed object, got {type(manifest).__name__}")
    for field, expected in (("apiVersion", API_VERSION), ("kind", CRD_KIND)):
        if manifest.get(field) != expected:
            raise ManifestError(
                f"{path}: {field}: got {manifest.get(field)!r}; allowed: {expected}"
            )
    metadata = manifest.get("metadata") or {}
    name = metadata.get("name") if isinstance(metadata, dict) else None
    try:
        feed = FeedId(LOCAL_NAMESPACE, name if isinstance(name, str) else "")
    except ValueError as exc:
        raise ManifestError(f"{path}: metadata.name: {exc}") from None
    spec = manifest.get("spec")
    try:
        return feed, parse_spec(spec)
    except SpecError as exc:
        raise ManifestError(f"{path}: {explain(exc, spec)}") from None


def explain(error: SpecError, spec: Any) -> str:
    """``<path>: got <value>; allowed: <values>`` followed by the model's own words."""
    message = str(error)
    match = _PATH.search(message)
    if match is None:
        return message
    path = match.group(1)
    reason = message[: match.start()]
    steps: list[str | int] = [name or int(index) for name, index in _STEP.findall(path)]
    node = _schema_at(steps)
    if reason.startswith("Object contains unknown field"):
        allowed = sorted(node.get("properties", {})) if node else []
        return f"{path}: {reason}; allowed fields: {', '.join(allowed)}"
    if node is not None and node.get("type") == "object":
        # A rule about the object as a whole (a missing field, or the model's own
        # check), whose message already names the field and the value.
        return f"{path}: {reason}"
    present, value = _value_at(spec, steps)
    got = f"got {value!r}" if present else "missing"
    allowed_text = _allowed(node)
    if allowed_text:
        return f"{path}: {got}; {allowed_text} ({reason})"
    return f"{path}: {got} ({reason})"


def _value_at(obj: Any, steps: list[str | int]) -> tuple[bool, Any]:
    for step in steps:
        in_list = isinstance(step, int) and isinstance(obj, list) and step < len(obj)
        in_object = isinstance(step, str) and isinstance(obj, dict) and step in obj
        if not (in_list or in_object):
            return False, None
        obj = obj[step]
    return True, obj


def _schema_at(steps: list[str | int]) -> dict[str, Any] | None:
    schema = msgspec.json.schema(KrakenFeedSpec)
    definitions = schema["$defs"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = definitions[node["$ref"].rsplit("/", 1)[-1]]
        for option in node.get("anyOf", ()):
            if option.get("type") != "null":
                return resolve(option)
        return node

    node = resolve(schema)
    for step in steps:
        if isinstance(step, int):
            items = node.get("items")
            if items is None:
                return None
            node = resolve(items)
        else:
            child = node.get("properties", {}).get(step)
            if child is None:
                return None
            node = resolve(child)
    return node


def _allowed(node: dict[str, Any] | None) -> str:
    if not node:
        return ""
    if "enum" in node:
        return "allowed: " + ", ".join(str(v) for v in node["enum"])
    if node.get("type") == "array" and "items" in node and "enum" in node["items"]:
        return "allowed: " + ", ".join(str(v) for v in node["items"]["enum"])
    parts = []
    if "pattern" in node:
        parts.append(f"a value matching {node['pattern']}")
    if "minItems" in node or "maxItems" in node:
        parts.append(f"{node.get('minItems', 0)} to {node.get('maxItems', 'any number of')} items")
    if "description" in node:
        parts.append(node["description"])
    return "allowed: " + "; ".join(parts) if parts else ""
