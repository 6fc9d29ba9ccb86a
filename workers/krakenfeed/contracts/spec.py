"""The ``KrakenFeed`` custom resource: its identity and its spec model.

``KrakenFeedSpec`` is the single source of the CRD's OpenAPI schema (the chart's
CRD is generated from it) and of manifest validation in the local runtime.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

CRD_GROUP: Final = "krakenfeed.io"
CRD_VERSION: Final = "v1alpha1"
CRD_KIND: Final = "KrakenFeed"
CRD_PLURAL: Final = "krakenfeeds"
CRD_SINGULAR: Final = "krakenfeed"
CRD_SHORT_NAMES: Final = ("kf",)
API_VERSION: Final = f"{CRD_GROUP}/{CRD_VERSION}"

Api = Literal["futures", "spot"]
Channel = Literal["ticker", "trade"]

_PRODUCT_PATTERNS: Final[dict[str, re.Pattern[str]]] = {
    "futures": re.compile(r"^[A-Z0-9]+(_[A-Z0-9]+)+$"),
    "spot": re.compile(r"^[A-Z0-9]+/[A-Z0-9]+$"),
}
_PRODUCT_EXAMPLES: Final = {"futures": "PF_XBTUSD", "spot": "BTC/USD"}


def product_id_problem(api: str, product: str) -> str | None:
    """Why ``product`` cannot be a product id of ``api``, or None when it can."""
    if not _PRODUCT_PATTERNS[api].match(product):
        return f"{product!r} is not a {api} product id (expected the form {_PRODUCT_EXAMPLES[api]})"
    return None


ProductId = Annotated[
    str,
    Meta(
        pattern=r"^[A-Z0-9]+([_/][A-Z0-9]+)+$",
        description="Product id exactly as Kraken spells it: PF_XBTUSD (futures), BTC/USD (spot)",
    ),
]


class SourceSpec(
    msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="camel"
):
    """One Kraken WebSocket connection; each source runs as one ingest worker."""

    api: Annotated[Api, Meta(description="Kraken API: futures (v1) or spot (v2)")]
    products: Annotated[
        list[ProductId],
        Meta(min_length=1, max_length=100, description="Products to subscribe to"),
    ]
    channels: Annotated[
        list[Channel],
        Meta(min_length=1, description="Channels to subscribe to for every product"),
    ] = msgspec.field(default_factory=lambda: ["ticker", "trade"])
    url: (
        Annotated[
            str,
            Meta(
                pattern=r"^wss?://",
                description="WebSocket URL; defaults to Kraken's public endpoint for the api",
            ),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        for index, product in enumerate(self.products):
            problem = product_id_problem(self.api, product)
            if problem:
                raise ValueError(f"products[{index}] {problem}")
        for name, values in (("products", self.products), ("channels", self.channels)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a value twice: {values}")


_STRUCT = {"kw_only": True, "frozen": True, "forbid_unknown_fields": True, "rename": "camel"}

DnsLabel = Annotated[str, Meta(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", max_length=63)]
Quantity = Annotated[
    str,
    Meta(
        pattern=r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$",
        description="A Kubernetes quantity such as 250m, 1, 512Mi or 2Gi",
    ),
]
KafkaTopicName = Annotated[
    str,
    Meta(
        pattern=r"^[a-zA-Z0-9._-]{1,249}$",
        description="Kafka topic name (letters, digits, '.', '_' and '-')",
    ),
]
Image = Annotated[
    str,
    Meta(
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._/:@-]*$",
        description="Container image of the worker; defaults to the operator's --worker-image",
    ),
]


class ResourceList(msgspec.Struct, **_STRUCT):
    """CPU and memory quantities."""

    cpu: Annotated[Quantity, Meta(description="CPU, e.g. 250m or 1")] | None = None
    memory: Annotated[Quantity, Meta(description="Memory, e.g. 256Mi or 1Gi")] | None = None


class Resources(msgspec.Struct, **_STRUCT):
    """Compute resources of a worker container."""

    requests: (
        Annotated[ResourceList, Meta(description="Resources the scheduler reserves")] | None
    ) = None
    limits: (
        Annotated[ResourceList, Meta(description="Resources the container may not exceed")] | None
    ) = None


class WorkerSpec(msgspec.Struct, **_STRUCT):
    """How one kind of worker runs: its image and its resources."""

    image: Image | None = None
    resources: Annotated[Resources, Meta(description="CPU and memory of the worker container")] = (
        msgspec.field(default_factory=Resources)
    )


class DetectorSpec(msgspec.Struct, **_STRUCT):
    """The detector Deployment: how many replicas, which settings, which image."""

    replicas: Annotated[
        int,
        Meta(
            ge=0,
            le=64,
            description=(
                "Detector replicas; they share the feed's partitions as one consumer group"
            ),
        ),
    ] = 1
    settings: Annotated[
        dict[str, Any],
        Meta(
            description=(
                "Detector settings by detector, as the detector spells them, e.g."
                " {price_jump: {threshold: 8}}; omitted fields keep their documented"
                " defaults, and the detector refuses unknown ones at start"
            ),
            extra_json_schema={"x-kubernetes-preserve-unknown-fields": True},
        ),
    ] = msgspec.field(default_factory=dict)
    image: Image | None = None
    resources: Annotated[
        Resources, Meta(description="CPU and memory of the detector container")
    ] = msgspec.field(default_factory=Resources)


class TopicNames(msgspec.Struct, **_STRUCT):
    """Topic-name overrides; an omitted stream keeps krakenfeed.<namespace>.<feed>.<stream>."""

    ticker: Annotated[KafkaTopicName, Meta(description="Ticker records")] | None = None
    trade: Annotated[KafkaTopicName, Meta(description="Trade records")] | None = None
    dlq: Annotated[KafkaTopicName, Meta(description="Invalid input, with reasons")] | None = None
    quality: Annotated[KafkaTopicName, Meta(description="Data-quality events")] | None = None
    anomalies: Annotated[KafkaTopicName, Meta(description="Detected anomalies")] | None = None


class KafkaSpec(msgspec.Struct, **_STRUCT):
    """Where the feed's topics live and how they are created."""

    strimzi_cluster: (
        Annotated[
            DnsLabel,
            Meta(
                description=(
                    "Strimzi Kafka cluster in the feed's namespace; the workers use its"
                    " <cluster>-kafka-bootstrap:9092 service and the operator creates"
                    " KafkaTopics for it. Default krakenfeed unless bootstrapServers is set"
                )
            ),
        ]
        | None
    ) = None
    bootstrap_servers: (
        Annotated[
            str,
            Meta(
                pattern=r"^[A-Za-z0-9.-]+:[0-9]+(,[A-Za-z0-9.-]+:[0-9]+)*$",
                description=(
                    "Explicit bootstrap servers (host:port,...) instead of a Strimzi cluster;"
                    " the workers then create their topics themselves"
                ),
            ),
        ]
        | None
    ) = None
    partitions: Annotated[int, Meta(ge=1, le=1000, description="Partitions of each topic")] = 1
    replication: Annotated[
        int, Meta(ge=1, le=10, description="Replication factor of each topic")
    ] = 1
    retention_hours: Annotated[
        int, Meta(ge=1, le=87600, description="Hours Kafka keeps a topic's records")
    ] = 168
    topics: Annotated[TopicNames, Meta(description="Topic-name overrides per stream")] = (
        msgspec.field(default_factory=TopicNames)
    )

    def __post_init__(self) -> None:
        if self.strimzi_cluster and self.bootstrap_servers:
            raise ValueError("kafka sets both strimziCluster and bootstrapServers; choose one")

    @property
    def cluster(self) -> str | None:
        """The Strimzi cluster the feed's KafkaTopics belong to, or None."""
        if self.bootstrap_servers:
            return None
        return self.strimzi_cluster or DEFAULT_CLUSTER

    @property
    def bootstrap(self) -> str:
        if self.bootstrap_servers:
            return self.bootstrap_servers
        return f"{self.cluster}-kafka-bootstrap:9092"


class PostgresSpec(msgspec.Struct, **_STRUCT):
    """The PostgreSQL database of the feed; the operator never reads its secret."""

    cnpg_cluster: (
        Annotated[
            DnsLabel,
            Meta(
                description=(
                    "CloudNativePG cluster in the feed's namespace: the detector connects to"
                    " its <cluster>-rw service with the <cluster>-app secret. Default"
                    " krakenfeed unless secretName is set"
                )
            ),
        ]
        | None
    ) = None
    secret_name: (
        Annotated[
            DnsLabel,
            Meta(
                description=(
                    "A secret with the keys host, port, dbname, user and password (the"
                    " layout of a CloudNativePG app secret), instead of a CNPG cluster"
                )
            ),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        if self.cnpg_cluster and self.secret_name:
            raise ValueError("postgres sets both cnpgCluster and secretName; choose one")


class TelemetrySpec(msgspec.Struct, **_STRUCT):
    """OpenTelemetry export of the workers' traces and metrics."""

    otlp_endpoint: (
        Annotated[
            str,
            Meta(
                pattern=r"^https?://",
                description="OTLP endpoint, e.g. http://otel-collector:4317; none exports nothing",
            ),
        ]
        | None
    ) = None
    sampling_ratio: Annotated[
        float, Meta(ge=0, le=1, description="Share of traces sampled, from 0 to 1")
    ] = 0.1


DEFAULT_CLUSTER: Final = "krakenfeed"
"""The Strimzi and CloudNativePG cluster a feed uses when its spec names none."""


class KrakenFeedSpec(msgspec.Struct, **_STRUCT):
    """Desired state of a KrakenFeed: what to read from Kraken and where it goes."""

    sources: Annotated[
        list[SourceSpec],
        Meta(min_length=1, max_length=8, description="Kraken connections feeding this feed"),
    ]
    kafka: Annotated[KafkaSpec, Meta(description="Kafka cluster and topics of the feed")] = (
        msgspec.field(default_factory=KafkaSpec)
    )
    postgres: Annotated[
        PostgresSpec, Meta(description="PostgreSQL database the detector writes to")
    ] = msgspec.field(default_factory=PostgresSpec)
    ingest: Annotated[WorkerSpec, Meta(description="Image and resources of the ingest workers")] = (
        msgspec.field(default_factory=WorkerSpec)
    )
    detector: Annotated[
        DetectorSpec, Meta(description="Replicas, settings, image and resources of the detector")
    ] = msgspec.field(default_factory=DetectorSpec)
    retention_days: Annotated[
        int,
        Meta(
            ge=1,
            le=3650,
            description="Days of market data kept in PostgreSQL; older day partitions are dropped",
        ),
    ] = 30
    suspend: Annotated[
        bool,
        Meta(description="Scale every worker to zero; topics and data are kept"),
    ] = False
    telemetry: Annotated[TelemetrySpec, Meta(description="OpenTelemetry export of the workers")] = (
        msgspec.field(default_factory=TelemetrySpec)
    )

    def __post_init__(self) -> None:
        apis = [source.api for source in self.sources]
        for api in set(apis):
            if apis.count(api) > 1:
                raise ValueError(
                    f"sources lists api {api!r} {apis.count(api)} times; "
                    "merge its products into one source"
                )


class SpecError(ValueError):
    """A manifest failed validation; the message names the offending field."""


def parse_spec(obj: Any) -> KrakenFeedSpec:
    """Validate a decoded ``spec`` mapping; errors name the field as ``spec.<path>``."""
    try:
        return msgspec.convert(obj, KrakenFeedSpec)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if " - at `$" not in message:
            message += " - at `$`"
        raise SpecError(message.replace("`$", "`spec")) from None
