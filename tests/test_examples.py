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
    manifest = yaml.safe_load(path.read_text())
    assert manifest["apiVersion"] == API_VERSION
    assert manifest["kind"] == CRD_KIND
    spec = parse_spec(manifest["spec"])
    assert all(source.products for source in spec.sources)


def test_the_replay_example_reads_the_server_its_comment_starts() -> None:
    text = EXAMPLES[2].read_text()
    assert "kubectl run kraken-replay" in text
    assert "kubectl expose pod kraken-replay --port=8765" in text
    spec = parse_spec(yaml.safe_load(text)["spec"])
    assert [source.url for source in spec.sources] == [
        "ws://kraken-replay:8765/ws/v1",  # the replay server's Futures v1 path
        "ws://kraken-replay:8765/v2",  # and its Spot v2 path
    ]
