"""The operator's /metrics under KopfRunner against KMock's emulator: passes are
counted and timed, and feeds are counted by their Ready condition as it changes."""

from __future__ import annotations

import pytest

from krakenfeed.contracts import env_var
from krakenfeed.contracts import monitoring as m
from tests import test_operator_kopf
from tests.kube_emulator import Emulator, eventually
from tests.scrape import Scrape
from tests.test_operator_kopf import (
    NS,
    children,
    condition,
    create_feed,
    free_port,
    play_controllers,
    run_operator,
)

kube = test_operator_kopf.kube
"""A fresh emulator per test, as the operator's own tests get it."""


def test_reconciles_and_feeds_by_ready_are_exported(
    kube: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv(env_var("--metrics-port"), str(port))
    with run_operator() as runner:
        name = create_feed(kube)
        eventually(lambda: len(children(kube, name)) == 9)
        eventually(lambda: condition(kube, name, "Ready") == ("False", "Progressing"))
        scrape = eventually(lambda: _scrape_with(port, name))
        assert scrape.by(m.OPERATOR_FEEDS.name, m.READY) == {
            "True": 0.0, "False": 1.0, "Unknown": 0.0,
        }  # fmt: skip
        assert scrape.value(m.OPERATOR_FEED_READY.name, feed_namespace=NS, feed=name) == 0
        passes = scrape.by(m.OPERATOR_RECONCILES.name, m.RESULT)
        assert passes["ok"] >= 1
        timed = scrape.value(m.OPERATOR_RECONCILE_SECONDS.name + "_count")
        assert timed == sum(passes.values())

        play_controllers(kube, name)
        eventually(lambda: condition(kube, name, "Ready") == ("True", "Ready"))
        ready = eventually(
            lambda: Scrape(port).by(m.OPERATOR_FEEDS.name, m.READY)["True"] == 1 and Scrape(port)
        )
        assert ready.value(m.OPERATOR_FEED_READY.name, feed_namespace=NS, feed=name) == 1
    assert runner.exception is None


def _scrape_with(port: int, name: str) -> Scrape | None:
    try:
        scrape = Scrape(port)
    except OSError:
        return None
    feeds = scrape.by(m.OPERATOR_FEED_READY.name, m.FEED)
    return scrape if name in feeds else None
