"""Desired state: a KrakenFeed spec in, exactly these manifests out."""

from __future__ import annotations

from typing import Any

from krakenfeed.contracts import parse_spec
from krakenfeed_operator.builders import (
    CONFIG_HASH,
    Owner,
    build_children,
    build_config_map,
    build_detector,
    build_ingest,
    build_topics,
)

OWNER = Owner("markets", "btc", "uid-1")
HTTP_ENDPOINT: dict[str, Any] = {
    "ports": [{"name": "http", "containerPort": 9464, "protocol": "TCP"}],
    "readinessProbe": {
        "httpGet": {"path": "/readyz", "port": "http"},
        "periodSeconds": 5,
        "timeoutSeconds": 2,
        "failureThreshold": 2,
    },
    "livenessProbe": {
        "httpGet": {"path": "/livez", "port": "http"},
        "periodSeconds": 10,
        "timeoutSeconds": 2,
        "failureThreshold": 6,
    },
}
"""What every worker container serves: metrics and its probes (contracts.monitoring)."""
SPEC = parse_spec(
    {
        "sources": [
            {"api": "futures", "products": ["PF_XBTUSD", "PI_XBTUSD"]},
            {"api": "spot", "products": ["BTC/USD"], "channels": ["trade"], "url": "ws://r:8765"},
        ],
        "postgres": {"cnpgCluster": "pg"},
        "detector": {
            "replicas": 2,
            "settings": {"price_jump": {"threshold": 8}},
            "resources": {
                "requests": {"cpu": "250m", "memory": "512Mi"},
                "limits": {"memory": "1Gi"},
            },
        },
        "retentionDays": 7,
        "telemetry": {"otlpEndpoint": "http://otel:4317", "samplingRatio": 0.25},
    }
)


def labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "krakenfeed",
        "app.kubernetes.io/instance": "btc",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "krakenfeed-operator",
        "krakenfeed.io/feed": "btc",
    }


OWNER_REFERENCES = [
    {
        "apiVersion": "krakenfeed.io/v1alpha1",
        "kind": "KrakenFeed",
        "name": "btc",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
]
RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def secret(key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": "pg-app", "key": key}}


def test_the_detector_deployment_is_exactly_this() -> None:
    detector = build_detector(OWNER, SPEC, "img:1")
    digest = detector["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH]
    assert len(digest) == 16
    assert detector == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "btc-detector",
            "namespace": "markets",
            "labels": labels("detector"),
            "ownerReferences": OWNER_REFERENCES,
        },
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate"},
            "selector": {
                "matchLabels": {
                    "krakenfeed.io/feed": "btc",
                    "app.kubernetes.io/component": "detector",
                }
            },
            "template": {
                "metadata": {"labels": labels("detector"), "annotations": {CONFIG_HASH: digest}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": RESTRICTED_POD,
                    "containers": [
                        {
                            "name": "detector",
                            "image": "img:1",
                            "command": ["krakenfeed", "detect"],
                            "envFrom": [{"configMapRef": {"name": "btc-config"}}],
                            "env": [
                                {"name": "KRAKENFEED_RETENTION_DAYS", "value": "7"},
                                {
                                    "name": "KRAKENFEED_STATE_DIR",
                                    "value": "/var/lib/krakenfeed/state",
                                },
                                {
                                    "name": "KRAKENFEED_DETECTOR_CONFIG",
                                    "value": '{"price_jump":{"threshold":8}}',
                                },
                                {"name": "PGHOST", "value": "pg-rw"},
                                {"name": "PGPORT", "valueFrom": secret("port")},
                                {"name": "PGDATABASE", "valueFrom": secret("dbname")},
                                {"name": "PGUSER", "valueFrom": secret("user")},
                                {"name": "PGPASSWORD", "valueFrom": secret("password")},
                                {"name": "OTEL_SERVICE_NAME", "value": "krakenfeed-detector"},
                                {"name": "KRAKENFEED_HTTP_PORT", "value": "9464"},
                            ],
                            **HTTP_ENDPOINT,
                            "resources": {
                                "requests": {"cpu": "250m", "memory": "512Mi"},
                                "limits": {"memory": "1Gi"},
                            },
                            "securityContext": RESTRICTED_CONTAINER,
                            "volumeMounts": [
                                {"name": "tmp", "mountPath": "/tmp"},
                                {"name": "state", "mountPath": "/var/lib/krakenfeed/state"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "state", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def test_an_ingest_deployment_has_one_replica_recreated_never_rolled() -> None:
    ingest = build_ingest(OWNER, SPEC, SPEC.sources[1], "img:1")
    digest = ingest["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH]
    assert ingest["metadata"]["name"] == "btc-ingest-spot"
    assert ingest["spec"] == {
        "replicas": 1,
        "strategy": {"type": "Recreate"},
        "selector": {
            "matchLabels": {
                "krakenfeed.io/feed": "btc",
                "app.kubernetes.io/component": "ingest-spot",
            }
        },
        "template": {
            "metadata": {"labels": labels("ingest-spot"), "annotations": {CONFIG_HASH: digest}},
            "spec": {
                "automountServiceAccountToken": False,
                "securityContext": RESTRICTED_POD,
                "containers": [
                    {
                        "name": "ingest",
                        "image": "img:1",
                        "command": ["krakenfeed", "ingest"],
                        "envFrom": [{"configMapRef": {"name": "btc-config"}}],
                        "env": [
                            {"name": "KRAKENFEED_API", "value": "spot"},
                            {"name": "KRAKENFEED_PRODUCTS", "value": "BTC/USD"},
                            {"name": "KRAKENFEED_CHANNELS", "value": "trade"},
                            {"name": "KRAKENFEED_URL", "value": "ws://r:8765"},
                            {"name": "OTEL_SERVICE_NAME", "value": "krakenfeed-ingest"},
                            {"name": "KRAKENFEED_HTTP_PORT", "value": "9464"},
                        ],
                        **HTTP_ENDPOINT,
                        "resources": {},
                        "securityContext": RESTRICTED_CONTAINER,
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }
                ],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        },
    }


def test_the_config_map_carries_the_shared_worker_env() -> None:
    assert build_config_map(OWNER, SPEC) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "btc-config",
            "namespace": "markets",
            "labels": labels("config"),
            "ownerReferences": OWNER_REFERENCES,
        },
        "data": {
            "KRAKENFEED_NAMESPACE": "markets",
            "KRAKENFEED_FEED": "btc",
            "KRAKENFEED_BROKER": "krakenfeed-kafka-bootstrap:9092",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_RESOURCE_ATTRIBUTES": "krakenfeed.feed=markets/btc",
        },
    }


def test_kafka_topics_follow_the_naming_contract_with_retention() -> None:
    spec = parse_spec(
        {
            "sources": [{"api": "futures", "products": ["PF_XBTUSD"]}],
            "kafka": {
                "strimziCluster": "events",
                "partitions": 3,
                "replication": 2,
                "retentionHours": 24,
                "topics": {"anomalies": "alerts"},
            },
        }
    )
    topics = build_topics(OWNER, spec)
    assert [t["metadata"]["name"] for t in topics] == [
        "btc-ticker", "btc-trade", "btc-dlq", "btc-quality", "btc-anomalies",
    ]  # fmt: skip
    assert topics[0] == {
        "apiVersion": "kafka.strimzi.io/v1beta2",
        "kind": "KafkaTopic",
        "metadata": {
            "name": "btc-ticker",
            "namespace": "markets",
            "labels": {**labels("topic"), "strimzi.io/cluster": "events"},
            "ownerReferences": OWNER_REFERENCES,
        },
        "spec": {
            "topicName": "krakenfeed.markets.btc.ticker",
            "partitions": 3,
            "replicas": 2,
            "config": {"retention.ms": "86400000", "retention.bytes": "-1"},
        },
    }
    assert topics[-1]["spec"]["topicName"] == "alerts"
    assert build_config_map(OWNER, spec)["data"]["KRAKENFEED_ANOMALIES_TOPIC"] == "alerts"
    assert (
        build_config_map(OWNER, spec)["data"]["KRAKENFEED_BROKER"] == "events-kafka-bootstrap:9092"
    )


def test_explicit_bootstrap_servers_leave_topics_to_the_workers() -> None:
    spec = parse_spec(
        {
            "sources": [{"api": "futures", "products": ["PF_XBTUSD"]}],
            "kafka": {"bootstrapServers": "kafka-0:9092,kafka-1:9092"},
        }
    )
    children = build_children(OWNER, spec, default_image="img:1", kafka_topics=True)
    assert [c["kind"] for c in children] == ["ConfigMap", "Deployment", "Deployment"]
    assert children[0]["data"]["KRAKENFEED_BROKER"] == "kafka-0:9092,kafka-1:9092"


def test_a_postgres_secret_maps_every_key_by_reference() -> None:
    spec = parse_spec(
        {
            "sources": [{"api": "futures", "products": ["PF_XBTUSD"]}],
            "postgres": {"secretName": "db"},
        }
    )
    env = build_detector(OWNER, spec, "img:1")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"].startswith("PG")] == [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": "db", "key": key}}}
        for name, key in (
            ("PGHOST", "host"),
            ("PGPORT", "port"),
            ("PGDATABASE", "dbname"),
            ("PGUSER", "user"),
            ("PGPASSWORD", "password"),
        )
    ]


def _hashes(spec_patch: dict[str, Any]) -> dict[str, str]:
    spec = parse_spec({"sources": [{"api": "futures", "products": ["PF_XBTUSD"]}], **spec_patch})
    return {
        c["metadata"]["name"]: c["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH]
        for c in build_children(OWNER, spec, default_image="img:1", kafka_topics=False)
        if c["kind"] == "Deployment"
    }


def test_the_config_hash_changes_with_what_a_worker_starts_with_only() -> None:
    base = _hashes({})
    assert base == _hashes({})
    detector_only = _hashes({"detector": {"settings": {"price_jump": {"threshold": 9}}}})
    assert detector_only["btc-detector"] != base["btc-detector"]
    assert detector_only["btc-ingest-futures"] == base["btc-ingest-futures"]
    shared = _hashes({"kafka": {"bootstrapServers": "k:9092"}})
    assert all(shared[name] != base[name] for name in base)
    assert _hashes({"suspend": True}) == base, "scaling is not a reason to restart"


def test_suspend_scales_every_worker_to_zero() -> None:
    spec = parse_spec({"sources": [{"api": "futures", "products": ["PF_XBTUSD"]}], "suspend": True})
    children = build_children(OWNER, spec, default_image="img:1", kafka_topics=True)
    replicas = {
        c["metadata"]["name"]: c["spec"]["replicas"] for c in children if c["kind"] == "Deployment"
    }
    assert replicas == {"btc-ingest-futures": 0, "btc-detector": 0}
    assert sum(c["kind"] == "KafkaTopic" for c in children) == 5, "topics and data are kept"
