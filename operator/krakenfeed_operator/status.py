"""Observed state: the children as Kubernetes reports them in, a feed's status out.

Pure: the reconciler reads the children and the clock and passes them in. Readiness
comes only from what the children report (Deployment available replicas, pod
waiting reasons, KafkaTopic ``Ready``), never from what the operator last wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

READY: Final = "Ready"
INGEST_READY: Final = "IngestReady"
DETECTOR_READY: Final = "DetectorReady"
TOPICS_READY: Final = "TopicsReady"
CONDITION_TYPES: Final = (READY, INGEST_READY, DETECTOR_READY, TOPICS_READY)

INVALID_SPEC: Final = "InvalidSpec"
SUSPENDED: Final = "Suspended"

# Pod waiting reasons that will not clear without a change by someone.
_STUCK_REASONS: Final = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "RunContainerError",
    }
)

Condition = dict[str, Any]


@dataclass(frozen=True)
class Finding:
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Workload:
    """One Deployment of the feed as observed: its desired replicas, its
    Deployment (None when missing) and its pods."""

    name: str
    replicas: int
    deployment: Mapping[str, Any] | None
    pods: list[Mapping[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the feed for a meaningful transition."""

    type: str
    reason: str
    message: str


def _stuck_pod(pods: list[Mapping[str, Any]]) -> Finding | None:
    for pod in pods:
        statuses = pod.get("status", {}).get("containerStatuses", []) or []
        for container in statuses:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in _STUCK_REASONS:
                name = pod.get("metadata", {}).get("name", "?")
                detail = waiting.get("message") or reason
                return Finding(False, reason, f"pod {name}: {detail}")
    return None


def workload_finding(workload: Workload, suspended: bool) -> Finding:
    if suspended:
        return Finding(False, SUSPENDED, f"{workload.name} is scaled to zero (spec.suspend)")
    if workload.deployment is None:
        return Finding(False, "Missing", f"Deployment {workload.name} does not exist yet")
    stuck = _stuck_pod(workload.pods)
    if stuck is not None:
        return stuck
    status = workload.deployment.get("status") or {}
    available = int(status.get("availableReplicas") or 0)
    if workload.replicas == 0:
        return Finding(True, "ScaledToZero", f"{workload.name} has zero replicas by spec")
    if available >= workload.replicas:
        return Finding(
            True, "Available", f"{workload.name}: {available}/{workload.replicas} available"
        )
    return Finding(
        False,
        "Progressing",
        f"{workload.name}: {available}/{workload.replicas} replicas available",
    )


def _combine(findings: list[Finding]) -> Finding:
    failing = [f for f in findings if not f.status]
    if failing:
        return Finding(False, failing[0].reason, "; ".join(f.message for f in failing))
    return Finding(True, findings[0].reason, "; ".join(f.message for f in findings))


def topics_finding(topics: list[Mapping[str, Any]] | None, reason_without: str) -> Finding:
    """``topics`` are the observed KafkaTopics, or None when the operator does
    not manage topics (``reason_without`` says why)."""
    if topics is None:
        return Finding(True, reason_without, "the workers create their topics themselves")
    unready = []
    for topic in topics:
        conditions = (topic.get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if c.get("type") == "Ready"), None)
        if ready is None or ready.get("status") != "True":
            name = topic.get("metadata", {}).get("name", "?")
            why = (ready or {}).get("message") or "not reported Ready by the topic operator"
            unready.append(f"{name}: {why}")
    if unready:
        return Finding(False, "TopicsNotReady", "; ".join(unready))
    return Finding(True, "Ready", f"{len(topics)} KafkaTopics ready")


def _condition(
    kind: str,
    finding: Finding,
    previous: dict[str, Condition],
    generation: int | None,
    now: str,
) -> Condition:
    status = "True" if finding.status else "False"
    before = previous.get(kind)
    since = before.get("lastTransitionTime") if before and before.get("status") == status else None
    condition: Condition = {
        "type": kind,
        "status": status,
        "reason": finding.reason,
        "message": finding.message,
        "lastTransitionTime": since or now,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def _events(previous: dict[str, Condition], current: list[Condition]) -> list[Event]:
    events = []
    for condition in current:
        before = previous.get(condition["type"])
        changed = before is None or (
            before.get("status"),
            before.get("reason"),
        ) != (condition["status"], condition["reason"])
        if not changed:
            continue
        healthy = condition["status"] == "True" or condition["reason"] == SUSPENDED
        events.append(
            Event(
                "Normal" if healthy else "Warning",
                condition["reason"],
                f"{condition['type']}={condition['status']}: {condition['message']}",
            )
        )
    return events


def _previous(status: dict[str, Any]) -> dict[str, Condition]:
    return {c["type"]: c for c in status.get("conditions") or [] if "type" in c}


@dataclass(frozen=True)
class Observation:
    """Everything observed about one valid feed in one reconcile."""

    generation: int | None
    suspended: bool
    ingest: list[Workload]
    detector: Workload
    topics: list[Mapping[str, Any]] | None
    topics_reason: str
    source: str
    products: str
    selector: str


def feed_status(
    observed: Observation, current: dict[str, Any], now: str
) -> tuple[dict[str, Any], list[Event]]:
    """The feed's new status and the Events its transitions deserve."""
    previous = _previous(current)
    ingest = _combine([workload_finding(w, observed.suspended) for w in observed.ingest])
    detector = workload_finding(observed.detector, observed.suspended)
    topics = topics_finding(observed.topics, observed.topics_reason)
    if observed.suspended:
        ready = Finding(False, SUSPENDED, "spec.suspend is true: every worker is scaled to zero")
    else:
        ready = _combine([ingest, detector, topics])
        if ready.status:
            ready = Finding(True, READY, "ingest, detector and topics are ready")
    gen = observed.generation
    conditions = [
        _condition(READY, ready, previous, gen, now),
        _condition(INGEST_READY, ingest, previous, gen, now),
        _condition(DETECTOR_READY, detector, previous, gen, now),
        _condition(TOPICS_READY, topics, previous, gen, now),
    ]
    deployment_status = (observed.detector.deployment or {}).get("status") or {}
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "conditions": conditions,
        "source": observed.source,
        "products": observed.products,
        "detectorReplicas": int(deployment_status.get("replicas") or 0),
        "detectorSelector": observed.selector,
    }
    return status, _events(previous, conditions)


def invalid_status(
    error: str, generation: int | None, current: dict[str, Any], now: str
) -> tuple[dict[str, Any], list[Event]]:
    """A spec the model refuses: Ready is False with the field in the message;
    the other conditions keep what was last observed of the existing children."""
    previous = _previous(current)
    ready = _condition(READY, Finding(False, INVALID_SPEC, error), previous, generation, now)
    kept = [previous[kind] for kind in CONDITION_TYPES[1:] if kind in previous]
    status = {k: v for k, v in current.items() if k in {"source", "products"}}
    status.update(
        {
            "observedGeneration": generation,
            "conditions": [ready, *kept],
            "detectorReplicas": current.get("detectorReplicas", 0),
            "detectorSelector": current.get("detectorSelector", ""),
        }
    )
    return status, _events(previous, [ready])


def same_status(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether writing ``a`` over ``b`` would change any field the operator owns."""
    return all(b.get(key) == value for key, value in a.items())
