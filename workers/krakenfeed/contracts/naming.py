"""Feed identity, Kafka topic names and consumer groups."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

import msgspec

LOCAL_NAMESPACE: Final = "local"
"""Namespace of every feed run by ``krakenfeed up`` outside Kubernetes."""

# Kubernetes object names are DNS-1123 subdomains; namespaces are DNS-1123 labels.
# Both are also legal inside a Kafka topic name, which allows [a-zA-Z0-9._-].
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_KAFKA_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


class Stream(StrEnum):
    """The per-feed Kafka streams; the value is the topic's last segment."""

    TICKER = "ticker"
    TRADE = "trade"
    DLQ = "dlq"
    """Invalid input: the raw payload with a reason code."""
    QUALITY = "quality"
    """Data-quality events: sequence gaps, reconnects, stale products, rejections."""
    ANOMALIES = "anomalies"


class FeedId(msgspec.Struct, frozen=True):
    """A feed is the ``<namespace>/<name>`` of its KrakenFeed resource."""

    namespace: str
    name: str
    topic_overrides: tuple[tuple[str, str], ...] = ()
    """``(stream, topic)`` pairs from the KrakenFeed's ``spec.kafka.topics``: these
    streams use the given topic instead of the contract's name."""

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.namespace):
            raise ValueError(
                f"feed namespace {self.namespace!r} is not a DNS-1123 label "
                "(lower-case letters, digits and '-', at most 63 characters)"
            )
        if not _DNS_SUBDOMAIN.match(self.name):
            raise ValueError(
                f"feed name {self.name!r} is not a DNS-1123 subdomain "
                "(lower-case letters, digits, '-' and '.', at most 253 characters)"
            )
        streams = {stream.value for stream in Stream}
        for stream, name in self.topic_overrides:
            if stream not in streams:
                raise ValueError(f"topic override for {stream!r}, which is not a stream")
            if not _KAFKA_TOPIC.match(name) or name in {".", ".."}:
                raise ValueError(
                    f"{stream} topic {name!r} is not a Kafka topic name"
                    " (letters, digits, '.', '_' and '-', at most 249 characters)"
                )

    def with_topics(self, overrides: dict[Stream, str]) -> FeedId:
        """The same feed with these streams' topics overridden."""
        pairs = tuple(sorted((stream.value, name) for stream, name in overrides.items()))
        return FeedId(self.namespace, self.name, pairs)

    @classmethod
    def parse(cls, text: str) -> FeedId:
        """Parse ``namespace/name``; a bare ``name`` belongs to the local namespace."""
        namespace, sep, name = text.partition("/")
        return cls(namespace, name) if sep else cls(LOCAL_NAMESPACE, namespace)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def topic(feed: FeedId, stream: Stream) -> str:
    """``krakenfeed.<namespace>.<name>.<stream>``, unless the feed overrides it."""
    for overridden, name in feed.topic_overrides:
        if overridden == stream.value:
            return name
    return f"krakenfeed.{feed.namespace}.{feed.name}.{stream.value}"


def consumer_group(feed: FeedId) -> str:
    """The detector's consumer group: ``krakenfeed.<namespace>.<name>.detector``."""
    return f"krakenfeed.{feed.namespace}.{feed.name}.detector"


TOPIC_CONFIG: Final[dict[str, str]] = {
    # Explicit on purpose: brokers that return only explicitly-set configs from
    # DescribeConfigs (Tansu) would otherwise break quixstreams' changelog checks.
    "retention.ms": str(7 * 24 * 3600 * 1000),
    "retention.bytes": str(-1),
}
"""Kafka configuration every krakenfeed topic is created with."""
