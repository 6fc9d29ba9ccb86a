"""Every example manifest is a valid KrakenFeed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from krakenfeed.contracts import API_VERSION, CRD_KIND, parse_spec

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*/*.yaml"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_is_a_valid_krakenfeed(path: Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    assert manifest["apiVersion"] == API_VERSION
    assert manifest["kind"] == CRD_KIND
    spec = parse_spec(manifest["spec"])
    assert all(source.products for source in spec.sources)
