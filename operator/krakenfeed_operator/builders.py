"""Desired state: a KrakenFeed's spec in, the manifests of its children out.

Pure: no I/O, no clock. The reconciler applies what these functions return, so
a test that compares their output with exact manifests pins the whole contract
between a feed and its workers: names, labels, env, security, owner references.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from krakenfeed.contracts import (
    API_VERSION,
    COMMON_OPTIONS,
    CRD_KIND,
    DEFAULT_CLUSTER,
    DETECT_OPTIONS,
    HTTP_OPTIONS,
    INGEST_OPTIONS,
    POSTGRES_ENV_VARS,
    TOPIC_CONFIG,
    TOPIC_OPTIONS,
    FeedId,
    KrakenFeedSpec,
    Option,
    Resources,
    SourceSpec,
    Stream,
    topic,
)
from krakenfeed.contracts.monitoring import (
    LIVENESS_PATH,
    READINESS_PATH,
    WORKER_HTTP_PORT,
    WORKER_HTTP_PORT_NAME,
)

Manifest = dict[str, Any]

MANAGER: Final = "krakenfeed-operator"
"""Field manager of every write and value of app.kubernetes.io/managed-by."""
FEED_LABEL: Final = "krakenfeed.io/feed"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
CONFIG_HASH: Final = "krakenfeed.io/config-hash"

STATE_DIR: Final = "/var/lib/krakenfeed/state"
DETECTOR: Final = "detector"

KAFKA_TOPIC_API: Final = "kafka.strimzi.io/v1beta2"
STRIMZI_CLUSTER_LABEL: Final = "strimzi.io/cluster"

# The keys of a CloudNativePG <cluster>-app secret, by the libpq variable they feed.
_SECRET_KEYS: Final = dict(
    zip(POSTGRES_ENV_VARS, ("host", "port", "dbname", "user", "password"), strict=True)
)
_OTEL_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"


def _env(options: tuple[Option, ...], flag: str) -> str:
    return next(option.env for option in options if option.flag == flag)


_NAMESPACE_ENV: Final = _env(COMMON_OPTIONS, "--namespace")
_FEED_ENV: Final = _env(COMMON_OPTIONS, "--feed")
_BROKER_ENV: Final = _env(COMMON_OPTIONS, "--broker")
_API_ENV: Final = _env(INGEST_OPTIONS, "--api")
_PRODUCTS_ENV: Final = _env(INGEST_OPTIONS, "--products")
_CHANNELS_ENV: Final = _env(INGEST_OPTIONS, "--channels")
_URL_ENV: Final = _env(INGEST_OPTIONS, "--url")
_DETECTOR_CONFIG_ENV: Final = _env(DETECT_OPTIONS, "--detector-config")
_STATE_DIR_ENV: Final = _env(DETECT_OPTIONS, "--state-dir")
_RETENTION_ENV: Final = _env(DETECT_OPTIONS, "--retention-days")
_HTTP_PORT_ENV: Final = _env(HTTP_OPTIONS, "--http-port")


def _probe(path: str, period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": WORKER_HTTP_PORT_NAME},
        "periodSeconds": period_s,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


# Ready within seconds of a dependency coming back; restarted only after a minute
# of a loop that stopped (the workers' own liveness checks allow for as long).
_READINESS_PROBE: Final = _probe(READINESS_PATH, 5, 2)
_LIVENESS_PROBE: Final = _probe(LIVENESS_PATH, 10, 6)


@dataclass(frozen=True)
class Owner:
    """The KrakenFeed that owns the children: its identity and its uid."""

    namespace: str
    name: str
    uid: str

    @property
    def feed(self) -> FeedId:
        return FeedId(self.namespace, self.name)


def owner_reference(owner: Owner) -> dict[str, Any]:
    """A controller reference: Kubernetes garbage collection removes the child
    with the feed, so the operator never deletes children itself."""
    return {
        "apiVersion": API_VERSION,
        "kind": CRD_KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(owner: Owner, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "krakenfeed",
        "app.kubernetes.io/instance": owner.name,
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: MANAGER,
        FEED_LABEL: owner.name,
    }


def selector(owner: Owner, component: str) -> dict[str, str]:
    return {FEED_LABEL: owner.name, COMPONENT_LABEL: component}


def detector_selector(owner: Owner) -> str:
    """The detector pods' label selector as a string (the scale subresource's)."""
    return ",".join(f"{k}={v}" for k, v in selector(owner, DETECTOR).items())


def _metadata(owner: Owner, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component),
        "ownerReferences": [owner_reference(owner)],
    }


def config_map_name(owner: Owner) -> str:
    return f"{owner.name}-config"


def ingest_component(source: SourceSpec) -> str:
    return f"ingest-{source.api}"


def ingest_name(owner: Owner, source: SourceSpec) -> str:
    return f"{owner.name}-{ingest_component(source)}"


def detector_name(owner: Owner) -> str:
    return f"{owner.name}-{DETECTOR}"


def topic_names(owner: Owner, spec: KrakenFeedSpec) -> dict[Stream, str]:
    """Each stream's Kafka topic: the spec's override, else the contract's name."""
    overrides = spec.kafka.topics
    return {
        stream: getattr(overrides, stream.value) or topic(owner.feed, stream) for stream in Stream
    }


def shared_env(owner: Owner, spec: KrakenFeedSpec) -> dict[str, str]:
    """The worker configuration every container reads, through the ConfigMap."""
    env = {
        _NAMESPACE_ENV: owner.namespace,
        _FEED_ENV: owner.name,
        _BROKER_ENV: spec.kafka.bootstrap,
    }
    defaults = {stream: topic(owner.feed, stream) for stream in Stream}
    for stream, name in topic_names(owner, spec).items():
        if name != defaults[stream]:
            env[_env(TOPIC_OPTIONS, f"--{stream.value}-topic")] = name
    telemetry = spec.telemetry
    if telemetry.otlp_endpoint:
        env[_OTEL_ENDPOINT] = telemetry.otlp_endpoint
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        env["OTEL_TRACES_SAMPLER_ARG"] = f"{telemetry.sampling_ratio:g}"
        env["OTEL_RESOURCE_ATTRIBUTES"] = f"krakenfeed.feed={owner.feed}"
    else:
        env["OTEL_SDK_DISABLED"] = "true"
    return env


def build_config_map(owner: Owner, spec: KrakenFeedSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, config_map_name(owner), "config"),
        "data": shared_env(owner, spec),
    }


def _value(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def postgres_env(owner: Owner, spec: KrakenFeedSpec) -> list[dict[str, Any]]:
    """libpq's PG* variables from the database secret, by reference: the
    operator names the secret and never reads it."""
    postgres = spec.postgres
    if postgres.secret_name:
        secret, host = postgres.secret_name, None
    else:
        cluster = postgres.cnpg_cluster or DEFAULT_CLUSTER
        secret, host = f"{cluster}-app", f"{cluster}-rw"
    env = []
    for variable, key in _SECRET_KEYS.items():
        if variable == "PGHOST" and host:
            env.append(_value(variable, host))
        else:
            ref = {"secretKeyRef": {"name": secret, "key": key}}
            env.append({"name": variable, "valueFrom": ref})
    return env


def _resources(resources: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("requests", "limits"):
        given = getattr(resources, kind)
        if given is not None:
            values = {k: v for k in ("cpu", "memory") if (v := getattr(given, k)) is not None}
            if values:
                out[kind] = values
    return out


POD_SECURITY: Final = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: Final = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def config_hash(*parts: object) -> str:
    """A short digest of everything a pod is started with."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _deployment(
    owner: Owner,
    spec: KrakenFeedSpec,
    *,
    name: str,
    component: str,
    replicas: int,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    strategy: dict[str, Any],
) -> Manifest:
    pod_spec = {
        "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY,
        "containers": [container],
        "volumes": volumes,
    }
    digest = config_hash(shared_env(owner, spec), pod_spec)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, name, component),
        "spec": {
            "replicas": 0 if spec.suspend else replicas,
            "strategy": strategy,
            "selector": {"matchLabels": selector(owner, component)},
            "template": {
                "metadata": {
                    "labels": labels(owner, component),
                    "annotations": {CONFIG_HASH: digest},
                },
                "spec": pod_spec,
            },
        },
    }


def _container(
    *,
    name: str,
    image: str,
    command: list[str],
    owner: Owner,
    env: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    resources: Resources,
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": command,
        "envFrom": [{"configMapRef": {"name": config_map_name(owner)}}],
        "env": [*env, _value(_HTTP_PORT_ENV, str(WORKER_HTTP_PORT))],
        "ports": [
            {"name": WORKER_HTTP_PORT_NAME, "containerPort": WORKER_HTTP_PORT, "protocol": "TCP"}
        ],
        "readinessProbe": _READINESS_PROBE,
        "livenessProbe": _LIVENESS_PROBE,
        "resources": _resources(resources),
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }


_TMP_VOLUME: Final = {"name": "tmp", "emptyDir": {}}
_TMP_MOUNT: Final = {"name": "tmp", "mountPath": "/tmp"}


def build_ingest(
    owner: Owner, spec: KrakenFeedSpec, source: SourceSpec, default_image: str
) -> Manifest:
    """One ingest Deployment per Kraken connection: one replica and the
    Recreate strategy, so two sockets never produce the same feed twice."""
    env = [
        _value(_API_ENV, source.api),
        _value(_PRODUCTS_ENV, ",".join(source.products)),
        _value(_CHANNELS_ENV, ",".join(source.channels)),
    ]
    if source.url:
        env.append(_value(_URL_ENV, source.url))
    env.append(_value("OTEL_SERVICE_NAME", "krakenfeed-ingest"))
    container = _container(
        name="ingest",
        image=spec.ingest.image or default_image,
        command=["krakenfeed", "ingest"],
        owner=owner,
        env=env,
        mounts=[_TMP_MOUNT],
        resources=spec.ingest.resources,
    )
    return _deployment(
        owner,
        spec,
        name=ingest_name(owner, source),
        component=ingest_component(source),
        replicas=1,
        container=container,
        volumes=[_TMP_VOLUME],
        strategy={"type": "Recreate"},
    )


def build_detector(owner: Owner, spec: KrakenFeedSpec, default_image: str) -> Manifest:
    """The detector: RocksDB state on an emptyDir (rebuilt from changelog
    topics), PostgreSQL credentials by secret reference."""
    env = [
        _value(_RETENTION_ENV, str(spec.retention_days)),
        _value(_STATE_DIR_ENV, STATE_DIR),
    ]
    if spec.detector.settings:
        settings = json.dumps(spec.detector.settings, sort_keys=True, separators=(",", ":"))
        env.append(_value(_DETECTOR_CONFIG_ENV, settings))
    env += postgres_env(owner, spec)
    env.append(_value("OTEL_SERVICE_NAME", "krakenfeed-detector"))
    container = _container(
        name=DETECTOR,
        image=spec.detector.image or default_image,
        command=["krakenfeed", "detect"],
        owner=owner,
        env=env,
        mounts=[_TMP_MOUNT, {"name": "state", "mountPath": STATE_DIR}],
        resources=spec.detector.resources,
    )
    return _deployment(
        owner,
        spec,
        name=detector_name(owner),
        component=DETECTOR,
        replicas=spec.detector.replicas,
        container=container,
        volumes=[_TMP_VOLUME, {"name": "state", "emptyDir": {}}],
        strategy={"type": "RollingUpdate"},
    )


def build_topics(owner: Owner, spec: KrakenFeedSpec) -> list[Manifest]:
    """Strimzi KafkaTopics of the feed's streams, for its Strimzi cluster."""
    cluster = spec.kafka.cluster
    if cluster is None:
        return []
    config = {
        **TOPIC_CONFIG,
        "retention.ms": str(spec.kafka.retention_hours * 3600 * 1000),
    }
    topics = []
    for stream, name in topic_names(owner, spec).items():
        metadata = _metadata(owner, f"{owner.name}-{stream.value}", "topic")
        metadata["labels"][STRIMZI_CLUSTER_LABEL] = cluster
        topics.append(
            {
                "apiVersion": KAFKA_TOPIC_API,
                "kind": "KafkaTopic",
                "metadata": metadata,
                "spec": {
                    "topicName": name,
                    "partitions": spec.kafka.partitions,
                    "replicas": spec.kafka.replication,
                    "config": config,
                },
            }
        )
    return topics


def build_children(
    owner: Owner, spec: KrakenFeedSpec, *, default_image: str, kafka_topics: bool
) -> list[Manifest]:
    """Every child of a feed, in the order they are applied. KafkaTopics only
    when the cluster serves that CRD; otherwise the workers create their topics."""
    children = [build_config_map(owner, spec)]
    children += [build_ingest(owner, spec, source, default_image) for source in spec.sources]
    children.append(build_detector(owner, spec, default_image))
    if kafka_topics:
        children += build_topics(owner, spec)
    return children
