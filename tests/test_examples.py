"""Every example manifest is a valid KrakenFeed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from krakenfeed.contracts import API_VERSION, CRD_KIND, parse_spec

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*/*.yaml"))


def test_there_are_the_issue_s_examples() -> None:
    assert [path.parent.name for path in EXAMPLES][:3] == [
        "01-futures-perpetuals",
        "02-spot",
        "03-replay-server",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_is_a_valid_krakenfeed(path: Path) -> None:
    documents = list(yaml.safe_load_all(path.read_text()))
    feeds = [doc for doc in documents if doc["kind"] == CRD_KIND]
    assert len(feeds) == 1, "each example shows one KrakenFeed"
    assert feeds[0]["apiVersion"] == API_VERSION
    spec = parse_spec(feeds[0]["spec"])
    assert all(source.products for source in spec.sources)


def test_the_replay_example_points_each_source_at_the_in_cluster_server() -> None:
    documents = list(yaml.safe_load_all((EXAMPLES[2]).read_text()))
    service = next(doc for doc in documents if doc["kind"] == "Service")
    spec = parse_spec(next(doc for doc in documents if doc["kind"] == CRD_KIND)["spec"])
    assert {source.url for source in spec.sources} == {
        f"ws://{service['metadata']['name']}:8765/ws/v1",
        f"ws://{service['metadata']['name']}:8765/v2",
    }
