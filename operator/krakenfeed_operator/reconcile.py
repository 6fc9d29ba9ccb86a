"""Observe → validate → reconcile one KrakenFeed.

One pass parses the spec, builds the desired children, creates the missing ones
and re-applies those that drifted, reads what Kubernetes reports about them and
writes the feed's status. Passes for one feed never overlap: a trigger that
arrives during a pass causes exactly one more pass after it.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from krakenfeed.contracts import SpecError, parse_spec
from krakenfeed_operator.builders import (
    DETECTOR,
    FEED_LABEL,
    KAFKA_TOPIC_API,
    Owner,
    build_children,
    detector_name,
    detector_selector,
    ingest_name,
)
from krakenfeed_operator.kube import KubeApi, KubeError
from krakenfeed_operator.status import (
    READY,
    Event,
    Observation,
    Workload,
    feed_status,
    invalid_status,
    same_status,
)

FeedKey = tuple[str, str]
ChildKey = tuple[str, str, str]


def contains(live: Any, desired: Any) -> bool:
    """Whether every field of ``desired`` has that value in ``live``. Fields the
    API server adds (defaults, status, uid) are ignored; lists must match item
    by item, so an added, removed or edited env entry is drift."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and contains(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)


def child_key(kind: str, obj: Mapping[str, Any]) -> ChildKey:
    meta = obj.get("metadata", {})
    return (kind, str(meta.get("namespace")), str(meta.get("name")))


def _fingerprint(obj: Mapping[str, Any], desired: Mapping[str, Any]) -> str:
    matched = "match" if contains(obj, desired) else "drift"
    return f"{matched}:{json.dumps(obj.get('status'), sort_keys=True)}"


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(
        self,
        api: KubeApi,
        default_image: str,
        *,
        clock: Callable[[], str] = utc_now,
        discovery_ttl_s: float = 60.0,
    ) -> None:
        self._api = api
        self._default_image = default_image
        self._clock = clock
        self._discovery_ttl_s = discovery_ttl_s
        self._topics_served: tuple[float, bool] | None = None
        self._locks: dict[FeedKey, asyncio.Lock] = {}
        self._pending: dict[FeedKey, Mapping[str, Any]] = {}
        self._written: dict[FeedKey, dict[str, Any]] = {}
        self._last_pass: dict[FeedKey, float] = {}
        # What the last pass saw of each child: whether it matched the desired
        # manifest, and its status. An event that changes neither (our own
        # create echoing back) needs no pass.
        self._seen: dict[ChildKey, tuple[Mapping[str, Any], str]] = {}
        # The children as their watch streams last showed them: a pass reads
        # the API only for a child it has not seen yet.
        self._cache: dict[ChildKey, Mapping[str, Any]] = {}

    async def reconcile(self, body: Mapping[str, Any]) -> list[Event]:
        """Run a pass for this feed, or join the one that a concurrent trigger
        will run with an even newer body."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        self._pending[key] = body
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            latest = self._pending.pop(key, None)
            if latest is None:
                return []
            return await self._pass(latest)

    def idle_for(self, body: Mapping[str, Any]) -> float:
        """Seconds since the feed's last pass began (infinite before the first)."""
        meta = body["metadata"]
        started = self._last_pass.get((meta["namespace"], meta["name"]))
        return float("inf") if started is None else time.monotonic() - started

    def ready_conditions(self) -> dict[FeedKey, str]:
        """The status of each feed's Ready condition as last written (for metrics)."""
        return {
            key: next(
                (
                    c.get("status", "Unknown")
                    for c in status.get("conditions", [])
                    if c.get("type") == READY
                ),
                "Unknown",
            )
            for key, status in list(self._written.items())
        }

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._written.pop(key, None)
        self._last_pass.pop(key, None)
        self._locks.pop(key, None)
        self._seen = {k: v for k, v in self._seen.items() if k[1:] != key}
        self._cache = {k: v for k, v in self._cache.items() if k[1:] != key}

    def is_news(self, kind: str, obj: Mapping[str, Any], deleted: bool) -> bool:
        """Whether a child's watch event says something the last pass did not
        see: a deletion, a drift from the desired manifest, or a new status."""
        key = child_key(kind, obj)
        if deleted:
            self._cache.pop(key, None)
            return True
        self._cache[key] = obj
        seen = self._seen.get(key)
        return seen is None or seen[1] != _fingerprint(obj, seen[0])

    def _remember(self, kind: str, obj: Mapping[str, Any], desired: Mapping[str, Any]) -> None:
        key = child_key(kind, obj)
        self._seen[key] = (desired, _fingerprint(obj, desired))
        self._cache[key] = obj

    async def _serves_kafka_topics(self) -> bool:
        now = time.monotonic()
        if self._topics_served is None or now - self._topics_served[0] > self._discovery_ttl_s:
            served = await self._api.serves(KAFKA_TOPIC_API, "kafkatopics")
            self._topics_served = (now, served)
        return self._topics_served[1]

    async def _converge(self, desired: dict[str, Any]) -> Mapping[str, Any]:
        live = self._cache.get(child_key(desired["kind"], desired)) or await self._api.get(desired)
        if live is None:
            try:
                live = await self._api.create(desired)
            except KubeError as exc:
                if exc.status != 409:
                    raise
                live = await self._api.apply(desired)
        elif not contains(live, desired):
            live = await self._api.apply(desired)
        self._remember(desired["kind"], live, desired)
        return live

    async def _pass(self, body: Mapping[str, Any]) -> list[Event]:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if meta.get("deletionTimestamp"):
            return []  # garbage collection removes the children; never recreate them
        generation = meta.get("generation")
        key = (namespace, name)
        self._last_pass[key] = time.monotonic()
        previous = self._written.get(key, dict(body.get("status") or {}))
        try:
            spec = parse_spec(body.get("spec"))
        except SpecError as exc:
            status, events = invalid_status(str(exc), generation, previous, self._clock())
        else:
            owner = Owner(namespace, name, meta["uid"])
            kafka_topics = spec.kafka.cluster is not None and await self._serves_kafka_topics()
            desired = build_children(
                owner, spec, default_image=self._default_image, kafka_topics=kafka_topics
            )
            live = await asyncio.gather(*(self._converge(child) for child in desired))
            by_name = {child["metadata"]["name"]: child for child in live}
            pods = await self._api.list("v1", "Pod", namespace, {FEED_LABEL: name})
            for pod in pods:
                self._remember("Pod", pod, {})

            def workload(deployment: str, component: str, replicas: int) -> Workload:
                return Workload(
                    name=deployment,
                    replicas=replicas,
                    deployment=by_name.get(deployment),
                    pods=[
                        pod
                        for pod in pods
                        if pod.get("metadata", {})
                        .get("labels", {})
                        .get("app.kubernetes.io/component")
                        == component
                    ],
                )

            observation = Observation(
                generation=generation,
                suspended=spec.suspend,
                ingest=[
                    workload(ingest_name(owner, source), f"ingest-{source.api}", 1)
                    for source in spec.sources
                ],
                detector=workload(detector_name(owner), DETECTOR, spec.detector.replicas),
                topics=[c for c in live if c["kind"] == "KafkaTopic"] if kafka_topics else None,
                topics_reason=(
                    "NoStrimziCluster" if spec.kafka.cluster is None else "KafkaTopicCRDMissing"
                ),
                source="+".join(source.api for source in spec.sources),
                products=",".join(p for source in spec.sources for p in source.products),
                selector=detector_selector(owner),
            )
            status, events = feed_status(observation, previous, self._clock())
        if not same_status(status, previous):
            await self._api.patch_feed_status(namespace, name, status)
        self._written[key] = status
        return events
