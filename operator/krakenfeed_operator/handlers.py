"""The kopf handlers: thin triggers of one reconcile pass per feed.

- create, update, resume: a pass now (a spec change rolls the workers through
  the config hash the builders put on the pod templates);
- a timer per feed: a pass when none ran for ``--resync-interval-s`` (drift
  backstop);
- any event of a child (Deployment, ConfigMap, KafkaTopic, worker Pod) that the
  last pass did not see: a pass for its feed, so a deleted or edited child is
  restored at once and status follows the children;
- delete: nothing but a log line; owner references let Kubernetes remove the
  children.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any, cast

import kopf

from krakenfeed.contracts import CRD_GROUP, CRD_PLURAL, CRD_VERSION
from krakenfeed.telemetry import Tracing
from krakenfeed_operator.builders import FEED_LABEL, MANAGED_BY_LABEL, MANAGER
from krakenfeed_operator.config import config_from_env
from krakenfeed_operator.kube import KubeApi
from krakenfeed_operator.metrics import OperatorMetrics
from krakenfeed_operator.reconcile import Reconciler
from krakenfeed_operator.status import Event

FEEDS = (CRD_GROUP, CRD_VERSION, CRD_PLURAL)
_OURS = {MANAGED_BY_LABEL: MANAGER}
RESYNC_TICK_S = min(15.0, config_from_env(os.environ).resync_interval_s / 2)
"""How often each feed's timer checks whether its resync interval has passed:
kopf fixes a timer's interval when the handler is registered, at import."""


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = memo.get("config") or config_from_env(os.environ)
    memo["config"] = config
    # kopf's own "handler succeeded" events are noise; the reconciler posts its own.
    settings.posting.level = logging.WARNING
    # Status and annotations written by kopf must not look like spec changes.
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="krakenfeed.io", key="last-handled-configuration"
    )
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="krakenfeed.io")
    memo["api"] = KubeApi(lambda: memo.get("connection"))
    memo["reconciler"] = Reconciler(memo["api"], config.worker_image)
    memo["metrics"] = OperatorMetrics(memo["reconciler"])
    if config.metrics_port:
        memo["metrics"].serve(config.metrics_port)


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own minimal logins (service account, then kubeconfig); the
    reconciler's client reuses the credentials found."""
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    memo["connection"] = info
    return info


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo["api"].close()
    memo["metrics"].stop()


def _post(body: Mapping[str, Any], events: list[Event]) -> None:
    for event in events:
        kopf.event(
            cast(kopf.Body, body), type=event.type, reason=event.reason, message=event.message
        )


async def _reconcile(body: Mapping[str, Any], memo: kopf.Memo) -> None:
    reconciler: Reconciler = memo["reconciler"]
    tracing: Tracing | None = memo.get("tracing")
    meta = body.get("metadata", {})
    with (
        tracing.reconciling(meta.get("namespace", ""), meta.get("name", ""), meta.get("generation"))
        if tracing
        else contextlib.nullcontext()
    ):
        with memo["metrics"].timed():
            events = await reconciler.reconcile(body)
        _post(body, events)


@kopf.index(*FEEDS)
def feeds(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): {**body}}


@kopf.on.create(*FEEDS)
@kopf.on.update(*FEEDS)
@kopf.on.resume(*FEEDS)
async def reconcile_feed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _reconcile(body, memo)


@kopf.timer(*FEEDS, interval=RESYNC_TICK_S)
async def resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A pass at most every ``--resync-interval-s``, counted since any pass."""
    reconciler: Reconciler = memo["reconciler"]
    if reconciler.idle_for(body) >= memo["config"].resync_interval_s:
        await _reconcile(body, memo)


@kopf.on.delete(*FEEDS, optional=True)
def feed_deleted(
    namespace: str | None, name: str, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    memo["reconciler"].forget(str(namespace), name)
    logger.info("KrakenFeed deleted; Kubernetes garbage collection removes its children")


@kopf.on.event("apps", "v1", "deployments", labels=_OURS)
@kopf.on.event("", "v1", "configmaps", labels=_OURS)
@kopf.on.event("", "v1", "pods", labels=_OURS)
@kopf.on.event("kafka.strimzi.io", "v1beta2", "kafkatopics", labels=_OURS)
async def child_changed(
    event: kopf.RawEvent,
    resource: kopf.Resource,
    namespace: str | None,
    labels: kopf.Labels,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    feeds: kopf.Index[Any, Any] = kwargs["feeds"]  # the index above, by its name
    reconciler: Reconciler = memo["reconciler"]
    kind = resource.kind or resource.plural
    if not reconciler.is_news(kind, event["object"], deleted=event["type"] == "DELETED"):
        return
    for body in feeds.get((namespace, labels.get(FEED_LABEL)), []):
        await _reconcile(body, memo)
