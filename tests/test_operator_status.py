"""Observed state: what the children report in, conditions and Events out."""

from __future__ import annotations

from typing import Any

from krakenfeed_operator.status import (
    Event,
    Observation,
    Workload,
    feed_status,
    invalid_status,
)

T0, T1 = "2026-11-21T08:00:00Z", "2026-11-21T08:05:00Z"


def deployment(available: int, replicas: int = 1) -> dict[str, Any]:
    return {"status": {"availableReplicas": available, "replicas": replicas}}


def pod(reason: str, message: str) -> dict[str, Any]:
    waiting = {"reason": reason, "message": message}
    return {
        "metadata": {"name": "btc-detector-7d9f-x2"},
        "status": {"containerStatuses": [{"name": "detector", "state": {"waiting": waiting}}]},
    }


def topic(ready: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "btc-ticker"},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def observe(
    *, ingest: int = 1, detector: int = 1, pods: list[dict[str, Any]] | None = None,
    topics: str = "True", suspended: bool = False,
) -> Observation:  # fmt: skip
    return Observation(
        generation=3,
        suspended=suspended,
        ingest=[Workload("btc-ingest-futures", 1, deployment(ingest))],
        detector=Workload("btc-detector", 1, deployment(detector), pods or []),
        topics=[topic(topics)],
        topics_reason="",
        source="futures",
        products="PF_XBTUSD",
        selector="krakenfeed.io/feed=btc,app.kubernetes.io/component=detector",
    )


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_ready_when_every_child_reports_ready() -> None:
    status, events = feed_status(observe(), {}, T0)
    assert conditions(status) == {
        "Ready": ("True", "Ready"),
        "IngestReady": ("True", "Available"),
        "DetectorReady": ("True", "Available"),
        "TopicsReady": ("True", "Ready"),
    }
    assert status["observedGeneration"] == 3
    assert status["conditions"][0] == {
        "type": "Ready",
        "status": "True",
        "reason": "Ready",
        "message": "ingest, detector and topics are ready",
        "lastTransitionTime": T0,
        "observedGeneration": 3,
    }
    assert {e.reason for e in events} == {"Ready", "Available"}
    assert status["detectorReplicas"] == 1
    assert status["source"] == "futures"


def test_a_missing_secret_in_a_pod_turns_ready_false_with_its_reason() -> None:
    ready, _ = feed_status(observe(), {}, T0)
    stuck = pod("CreateContainerConfigError", 'secret "pg-app" not found')
    status, events = feed_status(observe(detector=0, pods=[stuck]), ready, T1)
    assert conditions(status)["DetectorReady"] == ("False", "CreateContainerConfigError")
    assert conditions(status)["Ready"] == ("False", "CreateContainerConfigError")
    assert 'secret "pg-app" not found' in status["conditions"][0]["message"]
    assert status["conditions"][0]["lastTransitionTime"] == T1
    assert status["conditions"][1]["lastTransitionTime"] == T0, "IngestReady did not change"
    assert [e.type for e in events] == ["Warning", "Warning"]


def test_an_unchanged_observation_keeps_times_and_posts_no_event() -> None:
    first, _ = feed_status(observe(ingest=0), {}, T0)
    again, events = feed_status(observe(ingest=0), first, T1)
    assert again == first
    assert events == []


def test_progressing_and_unready_topics_name_what_is_missing() -> None:
    status, _ = feed_status(observe(ingest=0, topics="False"), {}, T0)
    assert conditions(status)["IngestReady"] == ("False", "Progressing")
    assert conditions(status)["TopicsReady"] == ("False", "TopicsNotReady")
    assert "btc-ingest-futures: 0/1 replicas available" in status["conditions"][0]["message"]


def test_suspended_is_not_ready_and_says_why() -> None:
    status, events = feed_status(observe(ingest=0, detector=0, suspended=True), {}, T0)
    assert conditions(status)["Ready"] == ("False", "Suspended")
    assert conditions(status)["IngestReady"] == ("False", "Suspended")
    assert ("Normal", "Suspended") in {(e.type, e.reason) for e in events}


def test_an_invalid_spec_keeps_what_was_observed_of_the_children() -> None:
    ready, _ = feed_status(observe(), {}, T0)
    status, events = invalid_status("Expected `int` - at `spec.retentionDays`", 4, ready, T1)
    assert conditions(status) == {
        "Ready": ("False", "InvalidSpec"),
        "IngestReady": ("True", "Available"),
        "DetectorReady": ("True", "Available"),
        "TopicsReady": ("True", "Ready"),
    }
    assert status["observedGeneration"] == 4
    assert events == [
        Event("Warning", "InvalidSpec", "Ready=False: Expected `int` - at `spec.retentionDays`")
    ]
    again, events = invalid_status("Expected `int` - at `spec.retentionDays`", 4, status, T1)
    assert again == status
    assert events == [], "no event storm while the spec stays invalid"
